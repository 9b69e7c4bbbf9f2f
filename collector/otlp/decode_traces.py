"""`ExportTraceServiceRequest` to `spans` and `genai_content` Arrow tables.

Takes a parsed trace export, the receiver limits and the receive time; gives a `Decoded` with
one `spans` row per valid span (ids as lowercase hex, kind and status as words, attributes,
resource, events and links as JSON with their original keys, the GenAI columns filled by
`collector.genai.normalize.normalize_span`) and one `genai_content` row per span whose
normalization found prompt or response content. Spans with bad ids, out-of-range timestamps or
over a limit are counted as rejected with a reason, never stored in part.
Content is stored once: a content attribute (`gen_ai.input.messages`, `gen_ai.output.messages`,
`gen_ai.system_instructions`, `gen_ai.tool.definitions`) whose value the span's `genai_content`
row holds exactly as sent is left out of `attributes`, and that row keeps the producer's JSON
text, unless `ReceiverLimits.content_in_attributes` asks for both copies. A value normalization
had to rewrite stays in `attributes` as sent.
Pure and single-pass: no I/O, no per-span Arrow calls (columns are Python lists until the end).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from collector.analytics.fingerprint import prompt_fingerprint
from collector.genai.normalize import NormalizedGenAI, normalize_span
from collector.otlp.limits import ReceiverLimits
from collector.otlp.resource import SOURCES, ResourceInfo, resource_info
from collector.otlp.values import (
    INT64_MAX,
    Decoded,
    DecodeStats,
    RejectedItemError,
    attributes,
    json_text,
    json_text_lenient,
)
from store.schema import DERIVED_COLUMNS, GENAI_COLUMNS, GENAI_CONTENT, SPANS

log = logging.getLogger(__name__)

# SPAN_KIND_UNSPECIFIED is read as internal, as the OTLP spec allows; unknown values too.
_KINDS = ("internal", "internal", "server", "client", "producer", "consumer")
_STATUS = ("unset", "ok", "error")
_ZERO16 = bytes(16)
_ZERO8 = bytes(8)

#: Span columns built per row, in this order, before the GenAI columns and received_time.
_BASE_COLUMNS: tuple[str, ...] = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "trace_state",
    "service_name",
    "name",
    "kind",
    "start_time",
    "end_time",
    "start_unix_ns",
    "end_unix_ns",
    "duration_s",
    "status_code",
    "status_message",
    "scope_name",
    "scope_version",
    "attributes",
    "resource",
    "events",
    "links",
    "k8s_namespace",
    "k8s_pod",
    "k8s_node",
    "source",
)
_GENAI_SET = frozenset(GENAI_COLUMNS)
_ATTRIBUTES_AT = _BASE_COLUMNS.index("attributes")
#: genai_content fields and the span attributes they come from in the conventions.
_CONTENT_FIELDS = ("input_messages", "output_messages", "system_instructions", "tool_definitions")
_CONTENT_ATTRIBUTES = dict(
    zip(
        _CONTENT_FIELDS,
        (
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.system_instructions",
            "gen_ai.tool.definitions",
        ),
        strict=True,
    )
)
_EMPTY_LIST_JSON = b"[]"

if set(_BASE_COLUMNS) | _GENAI_SET | {"received_time", *DERIVED_COLUMNS} != set(SPANS.names):
    raise RuntimeError("decode_traces is out of step with store.schema.SPANS")


def _span_row(
    span: Any,
    res: ResourceInfo,
    scope_name: str | None,
    scope_version: str | None,
    limits: ReceiverLimits,
) -> tuple[list[Any], dict[str, Any], list[tuple[str, dict[str, Any], int]]]:
    """Validate and convert one span; returns (base row, attributes, events for normalize).

    The row's `attributes` entry is left None: which keys it keeps depends on normalization."""
    tid = span.trace_id
    if len(tid) != 16 or tid == _ZERO16:
        raise RejectedItemError("invalid_trace_id")
    sid = span.span_id
    if len(sid) != 8 or sid == _ZERO8:
        raise RejectedItemError("invalid_span_id")
    pid = span.parent_span_id
    if pid:
        if len(pid) != 8:
            raise RejectedItemError("invalid_parent_span_id")
        parent: str | None = None if pid == _ZERO8 else pid.hex()
    else:
        parent = None
    start_ns = span.start_time_unix_nano
    end_ns = span.end_time_unix_nano
    if start_ns > INT64_MAX or end_ns > INT64_MAX:
        raise RejectedItemError("invalid_timestamp")
    max_attrs = limits.max_attributes
    max_depth = limits.max_value_depth
    attrs = attributes(span.attributes, max_attrs, max_depth)

    norm_events: list[tuple[str, dict[str, Any], int]] = []
    events_text = _EMPTY_LIST_JSON
    if span.events:
        events_json: list[dict[str, Any]] = []
        if len(span.events) > limits.max_events_per_span:
            raise RejectedItemError("too_many_events")
        for ev in span.events:
            ev_attrs = attributes(ev.attributes, max_attrs, max_depth)
            norm_events.append((ev.name, ev_attrs, ev.time_unix_nano))
            entry: dict[str, Any] = {
                "name": ev.name,
                "time_unix_nano": ev.time_unix_nano,
                "attributes": ev_attrs,
            }
            if ev.dropped_attributes_count:
                entry["dropped_attributes_count"] = ev.dropped_attributes_count
            events_json.append(entry)
        events_text = json_text(events_json)
    links_text = _EMPTY_LIST_JSON
    if span.links:
        links_json: list[dict[str, Any]] = []
        if len(span.links) > limits.max_links_per_span:
            raise RejectedItemError("too_many_links")
        for ln in span.links:
            if len(ln.trace_id) != 16 or len(ln.span_id) != 8:
                raise RejectedItemError("invalid_link")
            link: dict[str, Any] = {
                "trace_id": ln.trace_id.hex(),
                "span_id": ln.span_id.hex(),
                "attributes": attributes(ln.attributes, max_attrs, max_depth),
            }
            if ln.trace_state:
                link["trace_state"] = ln.trace_state
            if ln.flags:
                link["flags"] = ln.flags
            links_json.append(link)
        links_text = json_text(links_json)

    source = attrs.get("infersight.source")
    if not (isinstance(source, str) and source in SOURCES):
        source = res.source or "sdk"
    status = span.status
    code = status.code
    start_opt = start_ns or None
    end_opt = end_ns or None
    row = [
        tid.hex(),
        sid.hex(),
        parent,
        span.trace_state or None,
        res.service_name,
        span.name,
        _KINDS[span.kind] if 0 <= span.kind < 6 else "internal",
        start_opt,
        end_opt,
        start_opt,
        end_opt,
        (end_ns - start_ns) / 1e9 if start_ns and end_ns else None,
        _STATUS[code] if 0 <= code < 3 else "unset",
        status.message or None,
        scope_name,
        scope_version,
        None,
        res.json,
        events_text,
        links_text,
        res.k8s_namespace or _text(attrs.get("k8s.namespace.name")),
        res.k8s_pod or _text(attrs.get("k8s.pod.name")),
        res.k8s_node or _text(attrs.get("k8s.node.name")),
        source,
    ]
    return row, attrs, norm_events


def _normalize(
    attrs: dict[str, Any],
    name: str,
    events: list[tuple[str, dict[str, Any], int]],
    start_unix_ns: int | None,
    stats: DecodeStats,
) -> NormalizedGenAI | None:
    try:
        return normalize_span(attrs, name, events, start_unix_ns)
    except Exception:  # one odd span must not fail the whole export
        stats.normalize_errors += 1
        if stats.normalize_errors == 1:
            log.exception("GenAI normalization raised; storing the span without GenAI columns")
        return None


def _text(value: Any) -> str | None:
    # the agent names the pod of each captured call on the span: one node, many pods
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _derive(norm: NormalizedGenAI, attrs: dict[str, Any]) -> None:
    """Fill the derived columns: the prompt fingerprint, and the GPU time and energy the agent
    attributed to a server-side call."""
    cols = norm.columns
    content = norm.content
    if content is not None and (content.input_messages or content.system_instructions):
        cols["prompt_fingerprint"] = prompt_fingerprint(
            content.system_instructions, content.input_messages
        )
    gpu_s = _number(attrs.get("infersight.gpu.seconds"))
    if gpu_s is not None:
        cols["infersight_gpu_seconds"] = gpu_s
    energy_j = _number(attrs.get("infersight.gpu.energy_j"))
    if energy_j is not None:
        cols["infersight_gpu_energy_j"] = energy_j


def decode_traces(
    request: Any,
    limits: ReceiverLimits,
    received_unix_ns: int,
    stats: DecodeStats | None = None,
) -> Decoded:
    """Decode an `ExportTraceServiceRequest` (see the module docstring)."""
    stats = stats or DecodeStats()
    out = Decoded()
    rows: list[list[Any]] = []
    genai: list[tuple[int, NormalizedGenAI]] = []
    content_rows: list[tuple[Any, ...]] = []
    store_once = not limits.content_in_attributes
    for rs in request.resource_spans:
        try:
            res = resource_info(rs.resource, limits)
        except RejectedItemError as exc:
            out.reject(exc.reason, sum(len(ss.spans) for ss in rs.scope_spans))
            continue
        for ss in rs.scope_spans:
            scope = ss.scope
            scope_name = scope.name or None
            scope_version = scope.version or None
            for span in ss.spans:
                try:
                    row, attrs, events = _span_row(span, res, scope_name, scope_version, limits)
                except RejectedItemError as exc:
                    out.reject(exc.reason)
                    continue
                norm = _normalize(attrs, row[5], events, row[9], stats)
                kept_out: tuple[str, ...] = ()
                if norm is not None:
                    genai.append((len(rows), norm))
                    _derive(norm, attrs)
                    content = norm.content
                    if content is not None:
                        as_sent = content.as_sent if store_once else ()
                        crow = _content_row(row[0], row[1], row[7], content, stats, attrs, as_sent)
                        if crow is not None:
                            content_rows.append(crow)
                            kept_out = as_sent
                if kept_out:
                    row[_ATTRIBUTES_AT] = json_text(
                        {k: v for k, v in attrs.items() if k not in kept_out}
                    )
                else:
                    row[_ATTRIBUTES_AT] = json_text(attrs)
                rows.append(row)
    out.accepted = len(rows)
    if rows:
        out.tables["spans"] = _spans_table(rows, genai, received_unix_ns)
    if content_rows:
        out.tables["genai_content"] = pa.Table.from_pydict(
            dict(zip(GENAI_CONTENT.names, zip(*content_rows, strict=True), strict=True)),
            schema=GENAI_CONTENT,
        )
    return out


def _content_row(
    trace_id: str,
    span_id: str,
    time_ns: int | None,
    content: Any,
    stats: DecodeStats,
    attrs: dict[str, Any],
    as_sent: tuple[str, ...],
) -> tuple[Any, ...] | None:
    values = [getattr(content, f, None) for f in _CONTENT_FIELDS]
    if all(v is None for v in values):
        return None
    texts: list[bytes | None] = []
    try:
        for name, value in zip(_CONTENT_FIELDS, values, strict=True):
            if value is None:
                texts.append(None)
                continue
            sent = attrs.get(_CONTENT_ATTRIBUTES[name]) if as_sent else None
            if isinstance(sent, str) and _CONTENT_ATTRIBUTES[name] in as_sent:
                # The producer's own JSON text: normalization parsed it and found nothing to
                # rewrite, so it says what `value` says.
                texts.append(sent.encode())
            else:
                texts.append(json_text_lenient(value))
    except (TypeError, ValueError):
        stats.normalize_errors += 1
        return None
    return (trace_id, span_id, time_ns, str(getattr(content, "origin", "span_attributes")), *texts)


def _spans_table(
    rows: list[list[Any]], genai: list[tuple[int, NormalizedGenAI]], received_unix_ns: int
) -> pa.Table:
    n = len(rows)
    data: dict[str, Any] = dict(zip(_BASE_COLUMNS, zip(*rows, strict=True), strict=True))
    sparse: dict[str, list[Any]] = {name: [None] * n for name in (*GENAI_COLUMNS, *DERIVED_COLUMNS)}
    dialects = sparse["gen_ai_dialect"]
    for i, norm in genai:
        dialects[i] = norm.dialect
        for name, value in norm.columns.items():
            col = sparse.get(name)
            if col is not None and name != "gen_ai_dialect":
                col[i] = value
    for name, values in sparse.items():
        data[name] = _genai_array(values, SPANS.field(name).type)
    data["received_time"] = [received_unix_ns] * n
    return pa.Table.from_pydict({name: data[name] for name in SPANS.names}, schema=SPANS)


def _genai_array(values: list[Any], typ: pa.DataType) -> pa.Array:
    """An Arrow column from normalization output; a value of the wrong type becomes null
    instead of failing every span of the export."""
    try:
        return pa.array(values, type=typ)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    log.warning("GenAI normalization produced values that are not %s; storing them as null", typ)
    kept: list[Any] = []
    for v in values:
        try:
            pa.array([v], type=typ)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            v = None
        kept.append(v)
    return pa.array(kept, type=typ)
