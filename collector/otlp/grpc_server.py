"""The OTLP/gRPC receiver: TraceService, MetricsService and LogsService on a `grpc.aio` server.

Takes the store writer, the receiver limits, a host and port, a Prometheus registry and
optionally a `DecodePool` whose workers decode the exports; gives a `GrpcReceiver` holding the
bound (not yet started) `grpc.aio.Server` and its port.
gRPC handles gzip itself and refuses messages larger than `max_body_bytes` (measured after
decompression) with RESOURCE_EXHAUSTED. Requests arrive as raw bytes and are parsed here, so
a malformed message is answered INVALID_ARGUMENT rather than a generic failure. A full write
queue is answered UNAVAILABLE with a `google.rpc.RetryInfo` detail (clients retry), a missing
or wrong bearer token (when one is configured) UNAUTHENTICATED.
Must not: store anything from a request it answers with an error.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from collector.otlp.counters import ReceiverCounters, counters_for
from collector.otlp.ingest import LOGS, METRICS, TRACES, ExportError, Signal, export, parse_protobuf
from collector.otlp.limits import ReceiverLimits
from collector.otlp.pool import DecodePool, export_pooled
from store.writer import StoreWriter

log = logging.getLogger(__name__)

_SERVICES = {
    TRACES.name: "opentelemetry.proto.collector.trace.v1.TraceService",
    METRICS.name: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    LOGS.name: "opentelemetry.proto.collector.logs.v1.LogsService",
}
_STATUS = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "internal": grpc.StatusCode.INTERNAL,
}


@dataclass(slots=True)
class GrpcReceiver:
    """A bound OTLP/gRPC server; `await server.start()` to serve, `server.stop()` to stop."""

    server: grpc.aio.Server
    bound_port: int


def _retry_info_metadata(retry_after_s: int, message: str) -> tuple[tuple[str, bytes], ...]:
    """The `grpc-status-details-bin` trailer carrying a RetryInfo, as gRPC's rich status
    model defines it."""
    info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after_s))
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    status.details.add().Pack(info)
    return (("grpc-status-details-bin", status.SerializeToString()),)


class _Handlers:
    def __init__(
        self,
        writer: StoreWriter,
        limits: ReceiverLimits,
        counters: ReceiverCounters,
        pool: DecodePool | None,
    ) -> None:
        self.writer = writer
        self.limits = limits
        self.counters = counters
        self.pool = pool
        token = limits.bearer_token
        self._expected_auth = None if token is None else f"Bearer {token}".encode()

    def _authorized(self, context: grpc.aio.ServicerContext[bytes, Message]) -> bool:
        if self._expected_auth is None:
            return True
        given = b""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                given = (value if isinstance(value, bytes) else value.encode()).strip()
                break
        if given[:7].lower() == b"bearer ":
            given = b"Bearer " + given[7:].lstrip()
        return hmac.compare_digest(given, self._expected_auth)

    def method(
        self, signal: Signal
    ) -> Callable[[bytes, grpc.aio.ServicerContext[bytes, Message]], Awaitable[Message]]:
        async def handle(body: bytes, context: grpc.aio.ServicerContext[bytes, Message]) -> Message:
            requests = self.counters.requests
            if not self._authorized(context):
                # Counted before abort(): the client may see the status before this returns.
                requests.labels(signal.name, "grpc", "UNAUTHENTICATED").inc()
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token"
                )
            try:
                if len(body) > self.limits.max_body_bytes:
                    # gRPC enforces this already; kept in case its options are changed.
                    raise ExportError("too_large", "the export is larger than the limit")
                if self.pool is not None:
                    response = await export_pooled(
                        signal,
                        body,
                        pool=self.pool,
                        writer=self.writer,
                        counters=self.counters,
                        transport="grpc",
                    )
                else:
                    request = parse_protobuf(signal, body)
                    response = await export(
                        signal,
                        request,
                        writer=self.writer,
                        limits=self.limits,
                        counters=self.counters,
                        transport="grpc",
                        offload=len(body) >= self.limits.offload_decode_bytes,
                    )
            except ExportError as exc:
                code = _STATUS[exc.kind]
                trailers: tuple[tuple[str, bytes], ...] = ()
                if exc.kind == "unavailable":
                    trailers = _retry_info_metadata(self.limits.retry_after_s, exc.message)
                requests.labels(signal.name, "grpc", code.name).inc()
                await context.abort(code, exc.message, trailers)
                raise  # abort() always raises; this keeps type checkers informed
            except asyncio.CancelledError:
                requests.labels(signal.name, "grpc", grpc.StatusCode.CANCELLED.name).inc()
                raise
            except Exception:
                requests.labels(signal.name, "grpc", grpc.StatusCode.UNKNOWN.name).inc()
                raise
            requests.labels(signal.name, "grpc", grpc.StatusCode.OK.name).inc()
            return response

        return handle


def build_grpc_server(
    writer: StoreWriter,
    limits: ReceiverLimits | None,
    host: str,
    port: int,
    *,
    registry: CollectorRegistry | None = None,
    pool: DecodePool | None = None,
) -> GrpcReceiver:
    """Build and bind (not start) the OTLP/gRPC server; port 0 picks a free port.

    With `pool`, exports are decoded in its worker processes; without, on the event loop."""
    limits = limits or ReceiverLimits()
    handlers = _Handlers(writer, limits, counters_for(registry), pool)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limits.max_body_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    for signal in (TRACES, METRICS, LOGS):
        handler = grpc.unary_unary_rpc_method_handler(
            handlers.method(signal),
            request_deserializer=None,
            response_serializer=lambda message: message.SerializeToString(),
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_SERVICES[signal.name], {"Export": handler}),)
        )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    return GrpcReceiver(server, bound)
