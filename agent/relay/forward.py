"""One delivery attempt of one OTLP request to the collector, over HTTP or gRPC.

Takes in: a `ForwardTarget` and, per attempt, a signal name and the serialized protobuf
`Export*ServiceRequest`. Gives out: an `Attempt`: delivered (with the number of items the
collector rejected in `partial_success`), retry (with the delay the collector asked for, if it
did) or failed for good. Which answers are worth retrying follows the OTLP exporter
specification, as the OpenTelemetry SDK exporters implement it: HTTP 429, 502, 503 and 504 and
connection errors; gRPC CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE,
UNAVAILABLE and DATA_LOSS. The delay comes from `Retry-After` (HTTP) or a `RetryInfo` (gRPC, in
`grpc-status-details-bin` or `google.rpc.retryinfo-bin`).
HTTP goes through `httpx` (gzip-compressed bodies), gRPC through a `grpcio` channel with the
raw bytes as the message. Both clients are thread-safe and kept for the forwarder's lifetime.
Never raises from `send`.
"""

from __future__ import annotations

import gzip
import logging
import math
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol

import grpc
import httpx
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from agent.otel.export import GRPC
from agent.relay.endpoint import ForwardTarget

log = logging.getLogger(__name__)

RETRYABLE_HTTP: Final = frozenset({429, 502, 503, 504})
RETRYABLE_GRPC: Final = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
SERVICES: Final = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}
_RESPONSES: Final[dict[str, tuple[type[Message], str]]] = {
    "traces": (trace_service_pb2.ExportTraceServiceResponse, "rejected_spans"),
    "metrics": (metrics_service_pb2.ExportMetricsServiceResponse, "rejected_data_points"),
    "logs": (logs_service_pb2.ExportLogsServiceResponse, "rejected_log_records"),
}


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt came to."""

    outcome: str  # delivered | retry | failed
    detail: str = ""
    retry_after_s: float | None = None
    rejected: int = 0


class Forwarder(Protocol):
    """Sends one request to the collector."""

    def send(self, signal: str, payload: bytes) -> Attempt: ...

    def close(self) -> None: ...


def _rejected(signal: str, body: bytes) -> int:
    """Items the collector rejected, from its `partial_success` (0 when it has none)."""
    response_type, field = _RESPONSES[signal]
    response = response_type()
    try:
        response.ParseFromString(body)
    except DecodeError:
        return 0
    return int(getattr(response.partial_success, field))  # type: ignore[attr-defined]


def _retry_after_s(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class HttpForwarder:
    """OTLP/HTTP (protobuf, gzip) to `{url}/v1/{signal}`."""

    def __init__(self, target: ForwardTarget, timeout_s: float) -> None:
        self.target = target
        self._client = httpx.Client(timeout=timeout_s)
        self._headers = {
            **target.headers,
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
        }

    def send(self, signal: str, payload: bytes) -> Attempt:
        try:
            resp = self._client.post(
                f"{self.target.url}/v1/{signal}",
                content=gzip.compress(payload, compresslevel=5),
                headers=self._headers,
            )
        except httpx.HTTPError as exc:
            return Attempt("retry", f"{type(exc).__name__}: {exc}")
        if 200 <= resp.status_code < 300:
            return Attempt("delivered", rejected=_rejected(signal, resp.content))
        detail = f"HTTP {resp.status_code}"
        if resp.status_code in RETRYABLE_HTTP:
            return Attempt("retry", detail, _retry_after_s(resp.headers.get("retry-after")))
        return Attempt("failed", detail)

    def close(self) -> None:
        self._client.close()


def _grpc_retry_delay_s(error: grpc.RpcError) -> float | None:
    """The RetryInfo delay a gRPC error carries, if any."""
    call: Any = error  # the raised error is also the call, which carries the trailers
    try:
        trailers: list[tuple[str, Any]] = list(call.trailing_metadata() or ())
    except Exception:
        return None
    for key, value in trailers:
        if not isinstance(value, bytes):
            continue
        info = error_details_pb2.RetryInfo()
        try:
            if key == "google.rpc.retryinfo-bin":
                info.ParseFromString(value)
            elif key == "grpc-status-details-bin":
                status = status_pb2.Status()
                status.ParseFromString(value)
                if not any(d.Unpack(info) for d in status.details if d.Is(info.DESCRIPTOR)):
                    continue
            else:
                continue
        except DecodeError:
            continue
        return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


class GrpcForwarder:
    """OTLP/gRPC (gzip) to the `Export` method of each signal's service."""

    def __init__(self, target: ForwardTarget, timeout_s: float) -> None:
        self.target = target
        self._timeout_s = timeout_s
        host, port = target.host_port
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if target.secure:
            credentials = grpc.ssl_channel_credentials()
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._metadata = tuple((k.lower(), v) for k, v in target.headers.items())
        self._methods = {
            signal: self._channel.unary_unary(
                f"/{service}/Export", request_serializer=None, response_deserializer=None
            )
            for signal, service in SERVICES.items()
        }

    def send(self, signal: str, payload: bytes) -> Attempt:
        try:
            body = self._methods[signal](
                payload,
                timeout=self._timeout_s,
                metadata=self._metadata or None,
                compression=grpc.Compression.Gzip,
            )
        except grpc.RpcError as error:
            code = error.code()
            detail = f"gRPC {code.name}: {error.details()}"
            if code in RETRYABLE_GRPC:
                return Attempt("retry", detail, _grpc_retry_delay_s(error))
            return Attempt("failed", detail)
        except Exception as exc:  # the channel itself failed: try again later
            return Attempt("retry", f"{type(exc).__name__}: {exc}")
        return Attempt("delivered", rejected=_rejected(signal, bytes(body)))

    def close(self) -> None:
        self._channel.close()


def make_forwarder(target: ForwardTarget, timeout_s: float) -> Forwarder:
    """The forwarder for the target's protocol."""
    if target.protocol == GRPC:
        return GrpcForwarder(target, timeout_s)
    return HttpForwarder(target, timeout_s)
