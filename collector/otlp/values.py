"""OTLP `AnyValue`s and attribute lists to plain Python values, and the rejection bookkeeping.

Takes decoded protobuf `KeyValue` lists and `AnyValue`s; gives JSON-able Python values:
strings, exact ints, bools, floats (non-finite doubles as the proto3 JSON strings "NaN",
"Infinity", "-Infinity", since JSON has no such numbers), bytes as base64 strings, arrays as
lists, kvlists as dicts with their original keys, an empty value as None. Raises `RejectedItemError`
when an item breaks a `ReceiverLimits` bound; the decoders count it and skip the item.
Must not: truncate silently, or recurse past the configured depth.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

#: Human-readable explanation of every rejection reason, for `partial_success.error_message`.
REASONS: dict[str, str] = {
    "invalid_trace_id": "trace_id is not 16 bytes or is all zero",
    "invalid_span_id": "span_id is not 8 bytes or is all zero",
    "invalid_parent_span_id": "parent_span_id is not 8 bytes",
    "invalid_link": "a link's trace_id or span_id has the wrong length",
    "invalid_timestamp": "a timestamp is past the year 2262 (over int64 nanoseconds)",
    "too_many_attributes": "more attributes than the receiver's limit",
    "too_many_events": "more span events than the receiver's limit",
    "too_many_links": "more span links than the receiver's limit",
    "too_deep": "an attribute or body nests deeper than the receiver's limit",
    "invalid_histogram": "histogram bucket_counts do not match explicit_bounds",
}

INT64_MAX = (1 << 63) - 1


class RejectedItemError(Exception):
    """One span, data point or log record breaks a rule; `reason` is a key of `REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Decoded:
    """What one export request decodes to."""

    tables: dict[str, Any] = field(default_factory=dict)
    """Arrow tables by store table name (only tables with rows)."""
    accepted: int = 0
    """Spans / data points / log records that will be stored."""
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, count: int = 1) -> None:
        """Count `count` items refused for `reason`."""
        self.rejected += count
        self.reasons[reason] = self.reasons.get(reason, 0) + count

    def error_message(self, noun: str) -> str:
        """An English explanation for `partial_success.error_message` ('' when none)."""
        if not self.rejected:
            return ""
        parts = [
            f"{REASONS.get(reason, reason)} ({count})"
            for reason, count in sorted(self.reasons.items(), key=lambda kv: -kv[1])
        ]
        return f"rejected {self.rejected} of {self.rejected + self.accepted} {noun}: " + "; ".join(
            parts
        )


class DecodeStats:
    """Counts a decoder keeps beyond rejections (read by the receivers' self-metrics)."""

    __slots__ = ("normalize_errors",)

    def __init__(self) -> None:
        self.normalize_errors = 0


def _double(x: float) -> float | str:
    # x - x is 0.0 for every finite double and NaN for NaN and both infinities.
    if x - x == 0.0:
        return x
    if x != x:
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def any_value(v: Any, depth: int, max_depth: int) -> Any:
    """Convert one `AnyValue`; `depth` is the nesting level a container here would have."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return _double(v.double_value)
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        if depth > max_depth:
            raise RejectedItemError("too_deep")
        return [any_value(x, depth + 1, max_depth) for x in v.array_value.values]
    if kind == "kvlist_value":
        if depth > max_depth:
            raise RejectedItemError("too_deep")
        return {kv.key: any_value(kv.value, depth + 1, max_depth) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return None


def attributes(kvs: Sequence[Any], max_attributes: int, max_depth: int) -> dict[str, Any]:
    """Convert a `KeyValue` list to a dict (last duplicate key wins)."""
    if len(kvs) > max_attributes:
        raise RejectedItemError("too_many_attributes")
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        # Scalars dominate real attribute lists; handle them without another call.
        if kind == "string_value":
            out[kv.key] = v.string_value
        elif kind == "int_value":
            out[kv.key] = v.int_value
        elif kind == "bool_value":
            out[kv.key] = v.bool_value
        else:
            out[kv.key] = any_value(v, 1, max_depth)
    return out


def json_text(value: Any) -> bytes:
    """Serialize a converted value as JSON (UTF-8 bytes, which Arrow takes as a string)."""
    return orjson.dumps(value)


def _fallback(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)


def json_text_lenient(value: Any) -> bytes:
    """Serialize a value produced by code outside the receiver (odd types become strings)."""
    return orjson.dumps(value, default=_fallback)


def scalar_text(value: Any) -> str | None:
    """A resource attribute as a column string: strings as is, other scalars printed."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return None
