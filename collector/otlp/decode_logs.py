"""`ExportLogsServiceRequest` to `log_records` and `genai_content` Arrow tables.

Takes a parsed logs export, the receiver limits and the receive time; gives a `Decoded` with
one `log_records` row per valid record (body, attributes and resource as JSON, ids as hex) and
one `genai_content` row (origin `log_events`) per record whose event name makes
`collector.genai.normalize.content_from_log_event` return content. The event name is the
record's `event_name` field, else its `event.name` attribute. `time` falls back to the observed
time when the producer left it unset, as the logs data model prescribes.
A record with a bad id, an out-of-range timestamp or over a limit is rejected.
Pure and single-pass: no I/O, no per-record Arrow calls.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from collector.genai.normalize import content_from_log_event
from collector.otlp.limits import ReceiverLimits
from collector.otlp.resource import resource_info
from collector.otlp.values import (
    INT64_MAX,
    Decoded,
    DecodeStats,
    RejectedItemError,
    any_value,
    attributes,
    json_text,
    json_text_lenient,
)
from store.schema import GENAI_CONTENT, LOG_RECORDS

log = logging.getLogger(__name__)

_ZERO16 = bytes(16)
_ZERO8 = bytes(8)
_COLUMNS = tuple(n for n in LOG_RECORDS.names if n != "received_time")
_CONTENT_FIELDS = ("input_messages", "output_messages", "system_instructions", "tool_definitions")


def _hex_or_none(raw: bytes, size: int, zero: bytes, reason: str) -> str | None:
    if not raw or raw == zero:
        return None
    if len(raw) != size:
        raise RejectedItemError(reason)
    return raw.hex()


def _content(
    event_name: str,
    attrs: dict[str, Any],
    body: Any,
    trace_id: str | None,
    span_id: str | None,
    time_ns: int | None,
    stats: DecodeStats,
) -> tuple[Any, ...] | None:
    try:
        content = content_from_log_event(event_name, attrs, body)
    except Exception:  # one odd record must not fail the whole export
        stats.normalize_errors += 1
        if stats.normalize_errors == 1:
            log.exception("GenAI log-event parsing raised; storing the record without content")
        return None
    if content is None:
        return None
    values = [getattr(content, f, None) for f in _CONTENT_FIELDS]
    if all(v is None for v in values):
        return None
    try:
        texts = [None if v is None else json_text_lenient(v) for v in values]
    except (TypeError, ValueError):
        stats.normalize_errors += 1
        return None
    return (trace_id, span_id, time_ns, "log_events", *texts)


def decode_logs(
    request: Any,
    limits: ReceiverLimits,
    received_unix_ns: int,
    stats: DecodeStats | None = None,
) -> Decoded:
    """Decode an `ExportLogsServiceRequest` (see the module docstring)."""
    stats = stats or DecodeStats()
    out = Decoded()
    rows: list[tuple[Any, ...]] = []
    content_rows: list[tuple[Any, ...]] = []
    max_attrs = limits.max_attributes
    max_depth = limits.max_value_depth
    for rl in request.resource_logs:
        try:
            res = resource_info(rl.resource, limits)
        except RejectedItemError as exc:
            out.reject(exc.reason, sum(len(sl.log_records) for sl in rl.scope_logs))
            continue
        for sl in rl.scope_logs:
            scope_name = sl.scope.name or None
            for rec in sl.log_records:
                try:
                    time_ns = rec.time_unix_nano
                    observed_ns = rec.observed_time_unix_nano
                    if time_ns > INT64_MAX or observed_ns > INT64_MAX:
                        raise RejectedItemError("invalid_timestamp")
                    trace_id = _hex_or_none(rec.trace_id, 16, _ZERO16, "invalid_trace_id")
                    span_id = _hex_or_none(rec.span_id, 8, _ZERO8, "invalid_span_id")
                    attrs = attributes(rec.attributes, max_attrs, max_depth)
                    has_body = rec.HasField("body")
                    body = any_value(rec.body, 1, max_depth) if has_body else None
                except RejectedItemError as exc:
                    out.reject(exc.reason)
                    continue
                event_name = rec.event_name
                if not event_name:
                    attr_name = attrs.get("event.name")
                    event_name = attr_name if isinstance(attr_name, str) else ""
                when_ns = time_ns or observed_ns or None
                rows.append(
                    (
                        when_ns,
                        observed_ns or None,
                        when_ns,
                        res.service_name,
                        scope_name,
                        rec.severity_number,
                        rec.severity_text or None,
                        event_name or None,
                        json_text(body) if has_body else None,
                        json_text(attrs),
                        res.json,
                        trace_id,
                        span_id,
                        rec.flags,
                        res.k8s_namespace,
                        res.k8s_pod,
                        res.k8s_node,
                    )
                )
                if event_name:
                    crow = _content(event_name, attrs, body, trace_id, span_id, when_ns, stats)
                    if crow is not None:
                        content_rows.append(crow)
    out.accepted = len(rows)
    if rows:
        cols: dict[str, Any] = dict(zip(_COLUMNS, zip(*rows, strict=True), strict=True))
        cols["received_time"] = [received_unix_ns] * len(rows)
        out.tables["log_records"] = pa.Table.from_pydict(
            {name: cols[name] for name in LOG_RECORDS.names}, schema=LOG_RECORDS
        )
    if content_rows:
        out.tables["genai_content"] = pa.Table.from_pydict(
            dict(zip(GENAI_CONTENT.names, zip(*content_rows, strict=True), strict=True)),
            schema=GENAI_CONTENT,
        )
    return out
