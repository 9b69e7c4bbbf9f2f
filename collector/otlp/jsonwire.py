"""OTLP/JSON request bodies to protobuf messages, and protobuf messages to OTLP/JSON.

Takes the raw bytes of an OTLP/JSON export and the message class to fill; gives the parsed
protobuf message. Handles the OTLP deviations from the proto3 JSON mapping: trace and span ids
(in spans, links, log records and exemplars) are hex strings, not base64, in either letter
case; 64-bit integers come as strings or numbers; enums as numbers (names are tolerated);
lowerCamelCase and snake_case keys are both accepted; unknown fields are ignored.
Raises `JsonWireError` for anything malformed. Also serializes responses and `google.rpc.Status`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

_HEX = re.compile(r"[0-9a-fA-F]*")
_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_METRIC_KINDS = (
    "gauge",
    "sum",
    "histogram",
    "exponentialHistogram",
    "exponential_histogram",
    "summary",
)


class JsonWireError(ValueError):
    """The body is not a valid OTLP/JSON export; the message says where."""


def _items(obj: Any, *keys: str) -> Iterator[dict[str, Any]]:
    """The dict elements of the first list found under `keys` (other shapes are left to the
    protobuf parser, which reports them)."""
    if not isinstance(obj, dict):
        return
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield item
            return


def _fix_ids(obj: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise JsonWireError(f"{key} must be a hex string, not {type(value).__name__}")
        if len(value) % 2 or not _HEX.fullmatch(value):
            raise JsonWireError(f"{key} is not a hex string: {value[:80]!r}")
        # The protobuf JSON parser reads bytes fields as base64.
        obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _fix_traces(doc: dict[str, Any]) -> None:
    for rs in _items(doc, "resourceSpans", "resource_spans"):
        for ss in _items(rs, "scopeSpans", "scope_spans"):
            for span in _items(ss, "spans"):
                _fix_ids(span)
                for link in _items(span, "links"):
                    _fix_ids(link)


def _fix_logs(doc: dict[str, Any]) -> None:
    for rl in _items(doc, "resourceLogs", "resource_logs"):
        for sl in _items(rl, "scopeLogs", "scope_logs"):
            for rec in _items(sl, "logRecords", "log_records"):
                _fix_ids(rec)


def _fix_metrics(doc: dict[str, Any]) -> None:
    for rm in _items(doc, "resourceMetrics", "resource_metrics"):
        for sm in _items(rm, "scopeMetrics", "scope_metrics"):
            for metric in _items(sm, "metrics"):
                for kind in _METRIC_KINDS:
                    data = metric.get(kind)
                    for point in _items(data, "dataPoints", "data_points"):
                        for ex in _items(point, "exemplars"):
                            _fix_ids(ex)


_FIXERS = {
    "ExportTraceServiceRequest": _fix_traces,
    "ExportLogsServiceRequest": _fix_logs,
    "ExportMetricsServiceRequest": _fix_metrics,
}


def parse_json(body: bytes, message_type: type[M]) -> M:
    """Parse an OTLP/JSON export body into a new `message_type`."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JsonWireError(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise JsonWireError(f"the body must be a JSON object, not {type(doc).__name__}")
    fixer = _FIXERS.get(message_type.DESCRIPTOR.name)
    if fixer is not None:
        fixer(doc)
    message = message_type()
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise JsonWireError(str(exc)[:500]) from None
    except (RecursionError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        # The protobuf JSON parser lets a few odd shapes escape as plain Python errors.
        raise JsonWireError(f"invalid OTLP/JSON: {type(exc).__name__}: {exc}"[:500]) from None
    return message


def to_json(message: Message) -> bytes:
    """Serialize a response message as OTLP/JSON (lowerCamelCase keys, compact)."""
    doc = json_format.MessageToDict(message)
    return orjson.dumps(doc)
