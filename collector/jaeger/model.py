"""Stored spans in the JSON shape of the Jaeger query API (what Grafana's Jaeger data source reads).

Takes span rows from the `spans` table (dicts with the table's column names); gives Jaeger
traces: `{"traceID", "spans": [...], "processes": {...}, "warnings": null}` with microsecond
times, `CHILD_OF` references for parents and `FOLLOWS_FROM` for links, attributes as typed tags,
events as logs, and one process per distinct service and resource. Also parses Jaeger's
duration strings. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from collector.analytics.params import BadParameterError

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration_s(text: str, name: str) -> float:
    """Seconds in a Go duration string such as '1.2s', '100ms', '1m30s' (plain numbers: µs)."""
    raw = text.strip()
    if not raw:
        raise BadParameterError(f"{name}: empty duration")
    try:
        return float(raw) * 1e-6
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for match in _GO_DURATION.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(raw):
        raise BadParameterError(f"{name}: {text!r} is not a duration such as 100ms, 1.5s or 2m")
    return total


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def tag(key: str, value: Any) -> dict[str, Any]:
    """One Jaeger key/value with its type."""
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    return {"key": key, "type": "string", "value": orjson.dumps(value).decode()}


def tags_of(mapping: Any) -> list[dict[str, Any]]:
    """Typed tags of a JSON object (attributes or resource), keys sorted."""
    data = _json(mapping)
    if not isinstance(data, Mapping):
        return []
    return [tag(str(k), v) for k, v in sorted(data.items()) if v is not None]


def _event_time_us(event: Mapping[str, Any], fallback_us: int) -> int:
    for key, factor in (
        ("time_unix_ns", 1e-3),
        ("time_unix_nano", 1e-3),
        ("timeUnixNano", 1e-3),
        ("time_unix_us", 1.0),
    ):
        value = event.get(key)
        if isinstance(value, int | float):
            return int(value * factor)
        if isinstance(value, str) and value.isdigit():
            return int(int(value) * factor)
    return fallback_us


def logs_of(events: Any, fallback_us: int) -> list[dict[str, Any]]:
    """Span events as Jaeger logs (an `event` field holds the event name)."""
    data = _json(events)
    if not isinstance(data, list):
        return []
    logs = []
    for event in data:
        if not isinstance(event, Mapping):
            continue
        fields = []
        name = event.get("name")
        if isinstance(name, str):
            fields.append(tag("event", name))
        fields.extend(tags_of(event.get("attributes")))
        logs.append({"timestamp": _event_time_us(event, fallback_us), "fields": fields})
    return logs


def _references(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    refs = []
    parent = row.get("parent_span_id")
    if parent:
        refs.append({"refType": "CHILD_OF", "traceID": row["trace_id"], "spanID": parent})
    links = _json(row.get("links"))
    if isinstance(links, list):
        for link in links:
            if not isinstance(link, Mapping):
                continue
            trace_id = link.get("trace_id") or link.get("traceId")
            span_id = link.get("span_id") or link.get("spanId")
            if isinstance(trace_id, str) and isinstance(span_id, str):
                refs.append({"refType": "FOLLOWS_FROM", "traceID": trace_id, "spanID": span_id})
    return refs


def _times_us(row: Mapping[str, Any]) -> tuple[int, int]:
    start_ns = row.get("start_unix_ns")
    end_ns = row.get("end_unix_ns")
    if isinstance(start_ns, int):
        start_us = start_ns // 1000
    else:
        start_time = row.get("start_time")
        start_us = int(start_time.timestamp() * 1e6) if start_time is not None else 0
    if isinstance(start_ns, int) and isinstance(end_ns, int):
        return start_us, max(0, (end_ns - start_ns) // 1000)
    duration_s = row.get("duration_s")
    return start_us, max(0, round(float(duration_s) * 1e6)) if duration_s is not None else 0


#: `genai_content` column -> the attribute it came from, for content stored only there
_CONTENT_ATTRIBUTES = {
    "input_messages": "gen_ai.input.messages",
    "output_messages": "gen_ai.output.messages",
    "system_instructions": "gen_ai.system_instructions",
    "tool_definitions": "gen_ai.tool.definitions",
}


def _content_tags(row: Mapping[str, Any], attributes: Any) -> list[dict[str, Any]]:
    """Captured content as tags, as the span sent it: the collector keeps content that arrived
    as attributes in `genai_content` only (`_content`), not twice."""
    content = row.get("_content")
    if not isinstance(content, Mapping):
        return []
    present = attributes if isinstance(attributes, Mapping) else {}
    out = []
    for column, key in _CONTENT_ATTRIBUTES.items():
        value = content.get(column)
        if value is not None and key not in present:
            out.append(tag(key, value if isinstance(value, str) else orjson.dumps(value).decode()))
    return out


def _span_tags(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    tags = tags_of(row.get("attributes"))
    tags.extend(_content_tags(row, _json(row.get("attributes"))))
    tags.sort(key=lambda t: str(t["key"]))
    kind = row.get("kind")
    if kind:
        tags.append(tag("span.kind", kind))
    status = row.get("status_code")
    if status and status != "unset":
        tags.append(tag("otel.status_code", str(status).upper()))
    if status == "error":
        tags.append(tag("error", True))
    if row.get("status_message"):
        tags.append(tag("otel.status_description", row["status_message"]))
    if row.get("scope_name"):
        tags.append(tag("otel.scope.name", row["scope_name"]))
    if row.get("scope_version"):
        tags.append(tag("otel.scope.version", row["scope_version"]))
    if row.get("source"):
        tags.append(tag("infersight.source", row["source"]))
    return tags


def build_traces(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Jaeger traces from span rows (any order, several traces); trace order is kept as first
    seen, spans sorted by start time within a trace."""
    traces: dict[str, dict[str, Any]] = {}
    process_ids: dict[str, dict[tuple[str, str], str]] = {}
    for row in rows:
        trace_id = row["trace_id"]
        trace = traces.setdefault(
            trace_id, {"traceID": trace_id, "spans": [], "processes": {}, "warnings": None}
        )
        service = row.get("service_name") or "unknown"
        resource = row.get("resource") or ""
        key = (service, resource if isinstance(resource, str) else orjson.dumps(resource).decode())
        ids = process_ids.setdefault(trace_id, {})
        pid = ids.get(key)
        if pid is None:
            pid = f"p{len(ids) + 1}"
            ids[key] = pid
            trace["processes"][pid] = {
                "serviceName": service,
                "tags": [t for t in tags_of(resource) if t["key"] != "service.name"],
            }
        start_us, duration_us = _times_us(row)
        trace["spans"].append(
            {
                "traceID": trace_id,
                "spanID": row["span_id"],
                "operationName": row.get("name") or "",
                "references": _references(row),
                "startTime": start_us,
                "duration": duration_us,
                "tags": _span_tags(row),
                "logs": logs_of(row.get("events"), start_us),
                "processID": pid,
                "warnings": None,
                "flags": 1,
            }
        )
    for trace in traces.values():
        trace["spans"].sort(key=lambda s: (s["startTime"], s["spanID"]))
    return list(traces.values())
