"""The transport-neutral half of an OTLP export: parse, decode, store, answer.

Takes an export's bytes (protobuf or already-parsed message), the signal it belongs to, the
store writer and the receiver limits; gives the `Export*ServiceResponse` to send once the rows
are committed, with `partial_success` set when items were rejected. `store()` is the second
half alone, for exports decoded elsewhere (`pool.export_pooled`). Failures are raised as
`ExportError` with a transport-neutral `kind` that each receiver maps to its own status
(HTTP 400/503/500, gRPC INVALID_ARGUMENT/UNAVAILABLE/INTERNAL).
Must not: submit anything for a request it refuses, or answer before the commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.otlp.counters import ReceiverCounters
from collector.otlp.limits import ReceiverLimits
from collector.otlp.values import Decoded, DecodeStats

if TYPE_CHECKING:
    from store.writer import StoreWriter

# The decoders (pyarrow) and the store writer (duckdb) are imported where they are used: the
# node agent's relay parses exports with this module and needs neither in its memory.

log = logging.getLogger(__name__)

ErrorKind = Literal["invalid", "too_large", "unavailable", "internal"]


class ExportError(Exception):
    """An export is refused as a whole; nothing of it was stored."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message


Decoder = Callable[[Any, ReceiverLimits, int, DecodeStats], Decoded]


def _traces(req: Any, limits: ReceiverLimits, now_ns: int, stats: DecodeStats) -> Decoded:
    from collector.otlp.decode_traces import decode_traces

    return decode_traces(req, limits, now_ns, stats)


def _metrics(req: Any, limits: ReceiverLimits, now_ns: int, stats: DecodeStats) -> Decoded:
    from collector.otlp.decode_metrics import decode_metrics

    return decode_metrics(req, limits, now_ns)


def _logs(req: Any, limits: ReceiverLimits, now_ns: int, stats: DecodeStats) -> Decoded:
    from collector.otlp.decode_logs import decode_logs

    return decode_logs(req, limits, now_ns, stats)


@dataclass(frozen=True, slots=True)
class Signal:
    """One OTLP signal: its messages, decoder and the words used in answers."""

    name: str
    """traces | metrics | logs (also the HTTP path suffix and the metrics label)."""
    noun: str
    request_type: type[Message]
    response_type: type[Message]
    partial_type: type[Message]
    rejected_field: str
    decode: Decoder
    # Repeated fields whose elements get the wrong-wire-type check, per envelope level.
    envelope_fields: tuple[str, str]


TRACES = Signal(
    "traces",
    "spans",
    trace_service_pb2.ExportTraceServiceRequest,
    trace_service_pb2.ExportTraceServiceResponse,
    trace_service_pb2.ExportTracePartialSuccess,
    "rejected_spans",
    _traces,
    ("resource_spans", "scope_spans"),
)
METRICS = Signal(
    "metrics",
    "data points",
    metrics_service_pb2.ExportMetricsServiceRequest,
    metrics_service_pb2.ExportMetricsServiceResponse,
    metrics_service_pb2.ExportMetricsPartialSuccess,
    "rejected_data_points",
    _metrics,
    ("resource_metrics", "scope_metrics"),
)
LOGS = Signal(
    "logs",
    "log records",
    logs_service_pb2.ExportLogsServiceRequest,
    logs_service_pb2.ExportLogsServiceResponse,
    logs_service_pb2.ExportLogsPartialSuccess,
    "rejected_log_records",
    _logs,
    ("resource_logs", "scope_logs"),
)
SIGNALS: dict[str, Signal] = {s.name: s for s in (TRACES, METRICS, LOGS)}


def _wrong_wire_type(message: Message) -> str | None:
    """Name a known field that arrived with the wrong wire type, if any.

    The protobuf runtime keeps such a field as an unknown field instead of failing, which would
    make a mangled export look empty. Only the envelope levels are checked (a handful of
    messages per export), so the cost does not grow with the number of items.
    """
    by_number = message.DESCRIPTOR.fields_by_number
    unknown = UnknownFieldSet(message)
    for i in range(len(unknown)):
        known = by_number.get(unknown[i].field_number)
        if known is not None:
            return f"{message.DESCRIPTOR.name}.{known.name}"
    return None


def parse_protobuf(signal: Signal, body: bytes) -> Message:
    """Parse a binary OTLP export; `ExportError('invalid')` when it is not one."""
    request = signal.request_type()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise ExportError(
            "invalid", f"malformed protobuf {signal.request_type.__name__}: {exc}"
        ) from None
    check_envelopes(signal, request)
    return request


def check_envelopes(signal: Signal, request: Message) -> None:
    """Refuse an export whose envelope fields carry the wrong wire type."""
    outer, inner = signal.envelope_fields
    bad = _wrong_wire_type(request)
    if bad is None:
        for envelope in getattr(request, outer):
            bad = _wrong_wire_type(envelope)
            if bad is None:
                for scoped in getattr(envelope, inner):
                    bad = _wrong_wire_type(scoped)
                    if bad is not None:
                        break
            if bad is not None:
                break
    if bad is not None:
        raise ExportError("invalid", f"field {bad} has the wrong wire type")


async def export(
    signal: Signal,
    request: Message,
    *,
    writer: StoreWriter,
    limits: ReceiverLimits,
    counters: ReceiverCounters,
    transport: str,
    offload: bool = False,
) -> Message:
    """Decode `request`, store its rows, and return the response to send after the commit."""
    stats = DecodeStats()
    now_ns = time.time_ns()
    try:
        if offload:
            decoded = await asyncio.to_thread(signal.decode, request, limits, now_ns, stats)
        else:
            decoded = signal.decode(request, limits, now_ns, stats)
    except Exception as exc:
        log.exception("decoding an OTLP %s export failed", signal.name)
        raise ExportError("internal", f"could not decode the export: {exc}") from None
    finally:
        if stats.normalize_errors:
            counters.normalize_errors.inc(stats.normalize_errors)
    return await store(signal, decoded, writer=writer, counters=counters, transport=transport)


async def store(
    signal: Signal,
    decoded: Decoded,
    *,
    writer: StoreWriter,
    counters: ReceiverCounters,
    transport: str,
) -> Message:
    """Count a decoded export, hand its tables to the writer, and return the response to send
    once they are committed."""
    counters.received.labels(signal.name, transport).inc(decoded.accepted + decoded.rejected)
    for reason, count in decoded.reasons.items():
        counters.rejected.labels(signal.name, reason).inc(count)
    if decoded.tables:
        from store.writer import QueueFullError, WriterClosedError

        refused = counters.rejected.labels(signal.name, "queue_full")
        try:
            future = writer.submit(decoded.tables)
        except QueueFullError:
            refused.inc(decoded.accepted)
            raise ExportError(
                "unavailable", "the store's write queue is full; retry later"
            ) from None
        except WriterClosedError:
            counters.rejected.labels(signal.name, "shutting_down").inc(decoded.accepted)
            raise ExportError(
                "unavailable", "the collector is shutting down; retry later"
            ) from None
        try:
            await asyncio.wrap_future(future)
        except Exception as exc:  # any store failure means 'not stored'
            log.warning("storing an OTLP %s export failed: %s", signal.name, exc)
            counters.rejected.labels(signal.name, "store_error").inc(decoded.accepted)
            raise ExportError(
                "unavailable", "the store could not commit the export; retry later"
            ) from None
        counters.accepted.labels(signal.name, transport).inc(decoded.accepted)
    return build_response(signal, decoded)


def build_response(signal: Signal, decoded: Decoded) -> Message:
    """The `Export*ServiceResponse` for a decoded export (partial success when rejected)."""
    response = signal.response_type()
    if decoded.rejected:
        partial = signal.partial_type()
        setattr(partial, signal.rejected_field, decoded.rejected)
        partial.error_message = decoded.error_message(signal.noun)[:4000]  # type: ignore[attr-defined]
        response.partial_success.CopyFrom(partial)  # type: ignore[attr-defined]
    return response
