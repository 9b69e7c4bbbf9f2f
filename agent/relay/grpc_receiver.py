"""The relay's OTLP/gRPC receiver: TraceService, MetricsService and LogsService `Export`.

Takes in: an `Intake`, the receiver limits, the relay's counters, an executor for the blocking
intake work, and where to listen. Gives out: a bound (not started) `grpc.aio.Server` and its
port. Messages arrive as raw bytes and are parsed with the collector's own parser, so garbage
is answered INVALID_ARGUMENT; gRPC itself refuses messages over `max_body_bytes` with
RESOURCE_EXHAUSTED and inflates gzip. A full buffer is answered UNAVAILABLE with a `RetryInfo`
(both where the gRPC rich status model puts it, `grpc-status-details-bin`, and where the
OpenTelemetry SDK exporters read it, `google.rpc.retryinfo-bin`), so the sender retries.
Must be built and started on the event loop that serves it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]

from agent.relay.buffer import RelayStats
from agent.relay.enrich import Peer
from agent.relay.forward import SERVICES
from agent.relay.intake import BufferFullError, Intake
from agent.relay.peers import normalize_ip
from collector.otlp.ingest import SIGNALS, ExportError, Signal, parse_protobuf
from collector.otlp.limits import ReceiverLimits

log = logging.getLogger(__name__)

_PEER = re.compile(r"^ipv[46]:\[?([^\]]*?)\]?:(\d+)$")

Context = grpc.aio.ServicerContext[bytes, Message]


def parse_peer(peer: str, local_port: int) -> Peer | None:
    """`ipv4:127.0.0.1:5000` / `ipv6:[::1]:5000` (gRPC's peer string) as a `Peer`."""
    match = _PEER.match(peer or "")
    if match is None:
        return None
    return Peer(normalize_ip(match.group(1)), int(match.group(2)), local_port)


def _unavailable_trailers(retry_after_s: int, text: str) -> tuple[tuple[str, bytes], ...]:
    info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after_s))
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=text)
    status.details.add().Pack(info)
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


class _Handlers:
    def __init__(
        self, intake: Intake, limits: ReceiverLimits, stats: RelayStats, executor: Executor
    ) -> None:
        self.intake = intake
        self.limits = limits
        self.stats = stats
        self.executor = executor
        self.local_port = 0

    def method(self, signal: Signal) -> Callable[[bytes, Context], Awaitable[Message]]:
        async def export(body: bytes, context: Context) -> Message:
            try:
                message = parse_protobuf(signal, body)
            except ExportError as exc:
                self.stats.request("invalid")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
                raise  # abort() always raises
            peer = parse_peer(context.peer(), self.local_port)
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(
                    self.executor, self.intake.accept, signal.name, message, peer
                )
            except BufferFullError as exc:
                text = f"{exc}; retry later"
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    text,
                    _unavailable_trailers(self.limits.retry_after_s, text),
                )
                raise
            return signal.response_type()

        return export


def build_grpc_server(
    intake: Intake,
    limits: ReceiverLimits,
    stats: RelayStats,
    executor: Executor,
    host: str,
    port: int,
) -> tuple[grpc.aio.Server, int]:
    """Build and bind the relay's OTLP/gRPC server; raises OSError when it cannot listen."""
    handlers = _Handlers(intake, limits, stats, executor)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limits.max_body_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    for name, signal in SIGNALS.items():
        handler = grpc.unary_unary_rpc_method_handler(
            handlers.method(signal),
            request_deserializer=None,
            response_serializer=lambda message: message.SerializeToString(),
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICES[name], {"Export": handler}),)
        )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises where older releases returned 0
        raise OSError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    handlers.local_port = bound
    return server, bound
