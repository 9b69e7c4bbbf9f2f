"""Pairing records from the two sides the agent sees: relayed OTLP spans and its own captures.

Takes in: an OTLP protobuf `Span` (as an application exported it, in any GenAI dialect) with
the pid and pod the relay found for its sender; or an `InferenceCall` with its wire times in
unix ns. Gives out: the `CallRecord` the pure rules of `agent.pair.rules` compare, or None for
a span that is not a GenAI call (chat, text completion, content generation, embeddings).
The span's GenAI fields are read with the collector's dialect normalizer
(`collector.genai.normalize`), so an SDK span is understood the same way on the node as in the
store. Pure: no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.semconv.attributes import http_attributes

from agent.genai.call import InferenceCall
from agent.otel import spans as agent_spans
from agent.pair.rules import CallRecord
from collector.genai.normalize import NormalizedGenAI, normalize_span
from collector.otlp.values import attributes as decode_attributes

OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
_KINDS: Final = ("internal", "internal", "server", "client", "producer", "consumer")
_REQUEST_ID_KEYS: Final = ("infersight.request_id", "openai.request.id", "gen_ai.openai.request.id")
_MAX_ATTRIBUTES: Final = 4096
_MAX_DEPTH: Final = 8
_capture_ids = itertools.count(1)


def span_attributes(span: Any) -> dict[str, Any]:
    """A protobuf span's attributes as Python values (empty when they cannot be read)."""
    try:
        return decode_attributes(span.attributes, _MAX_ATTRIBUTES, _MAX_DEPTH)
    except Exception:
        return {}


def genai_of(span: Any, attrs: dict[str, Any]) -> NormalizedGenAI | None:
    """The span's canonical GenAI fields, or None when it is not an LLM call."""
    events = [(e.name, span_attributes(e), int(e.time_unix_nano)) for e in span.events if e.name]
    genai = normalize_span(attrs, span.name, events, int(span.start_time_unix_nano) or None)
    if genai is None or genai.columns.get("gen_ai_operation_name") not in OPERATIONS:
        return None
    return genai


def kind_of(span: Any) -> str:
    """The span kind as the store names it."""
    kind = int(span.kind)
    return _KINDS[kind] if 0 <= kind < len(_KINDS) else "internal"


def sdk_record(
    span: Any,
    attrs: dict[str, Any],
    genai: NormalizedGenAI,
    *,
    pid: int | None,
    pod: str | None,
    service: str | None,
    received_unix_ns: int,
) -> CallRecord:
    """The pairing record of one SDK GenAI span."""
    cols = genai.columns
    request_id = next(
        (v for k in _REQUEST_ID_KEYS if isinstance(v := attrs.get(k), str) and v), None
    )
    return CallRecord(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() or None,
        kind=kind_of(span),
        start_unix_ns=int(span.start_time_unix_nano),
        end_unix_ns=int(span.end_time_unix_nano),
        request_model=cols.get("gen_ai_request_model"),
        response_model=cols.get("gen_ai_response_model"),
        response_id=cols.get("gen_ai_response_id"),
        request_id=request_id,
        input_tokens=cols.get("gen_ai_usage_input_tokens"),
        output_tokens=cols.get("gen_ai_usage_output_tokens"),
        pid=pid,
        pod=pod,
        service=service,
        source="sdk",
        received_unix_ns=received_unix_ns,
    )


def _traceparent_ids(traceparent: str | None) -> tuple[str, str] | None:
    """(trace id, parent span id) of a W3C `traceparent`, lower-case hex."""
    if not traceparent:
        return None
    parts = traceparent.strip().lower().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        if int(parts[1], 16) == 0 or int(parts[2], 16) == 0:
            return None
    except ValueError:
        return None
    return parts[1], parts[2]


def capture_failed(status: object, error_type: object, response_missing: object) -> bool:
    """Whether an exchange failed: an HTTP error, an error type, or no response at all."""
    if isinstance(status, int) and not isinstance(status, bool):
        return status >= 400 or bool(error_type)
    return bool(error_type) or bool(response_missing)


def capture_record(
    call: InferenceCall,
    attributes: Mapping[str, Any],
    *,
    start_unix_ns: int,
    end_unix_ns: int,
    pid: int,
    pod: str | None,
    received_unix_ns: int,
) -> CallRecord:
    """The pairing record of one client-side capture. Its span does not exist yet (it is made
    only if the capture goes out unpaired), so it gets a key of its own; the trace id and the
    parent come from the `traceparent` it carried on the wire; what retries are recognised by
    (failure, request digest, resend count) from the attributes of its span to be."""
    n = next(_capture_ids)
    ids = _traceparent_ids(call.traceparent)
    trace_id, parent = ids if ids is not None else (f"capture-{n}", None)
    return CallRecord(
        trace_id=trace_id,
        span_id=f"capture-{n}",
        parent_span_id=parent,
        kind="client",
        start_unix_ns=start_unix_ns,
        end_unix_ns=end_unix_ns,
        request_model=call.request_model,
        response_model=call.response_model,
        response_id=call.response_id,
        request_id=call.request_id,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        pid=pid,
        pod=pod,
        source="ebpf",
        received_unix_ns=received_unix_ns,
        failed=capture_failed(
            call.http_status,
            call.error_type,
            attributes.get(agent_spans.INFERSIGHT_RESPONSE_MISSING),
        ),
        request_digest=_str_or_none(attributes.get(agent_spans.WIRE_REQUEST_DIGEST)),
        resend_count=_int_or_none(attributes.get(http_attributes.HTTP_REQUEST_RESEND_COUNT)),
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
