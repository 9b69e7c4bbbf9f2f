"""One span per paired call: the SDK span, with what the wire showed added to it.

Takes in: an OTLP protobuf `Span` an application exported, the attributes the agent would have
put on its own span of the same call (`agent.otel.spans.call_attributes`), the capture's wire
times, the SDK span's canonical GenAI columns, and the pairing method and confidence.
Gives out: the same span (ids, parent, name, times and status untouched, so its place in the
trace stays) with `infersight.source=both`, the wire fields (`infersight.wire.*`, the HTTP
status, the provider's request id, TLS and truncation flags), `infersight.pair.method` /
`.confidence`, and the GenAI fields the SDK left out (model, response id, token counts, time
to first chunk) taken from the wire, the wire start (`infersight.wire.start_unix_ns`), and,
when the client retried, `infersight.wire.attempts` and the HTTP status of every failed
attempt (`infersight.wire.retried_status_codes`). An attribute the application set is never
overwritten, except `infersight.source`, which says what the span now is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv.attributes import http_attributes
from opentelemetry.util.types import AttributeValue

from agent.otel import spans as agent_spans

SOURCE_BOTH: Final = "both"
PAIR_METHOD: Final = "infersight.pair.method"
PAIR_CONFIDENCE: Final = "infersight.pair.confidence"
WIRE_DURATION: Final = "infersight.wire.duration_s"
WIRE_TIME_TO_FIRST_CHUNK: Final = "infersight.wire.time_to_first_chunk_s"
WIRE_START: Final = "infersight.wire.start_unix_ns"
WIRE_ATTEMPTS: Final = "infersight.wire.attempts"
WIRE_RETRIED_STATUS_CODES: Final = "infersight.wire.retried_status_codes"

#: Copied from the capture whenever the SDK span lacks them.
_WIRE_KEYS: Final = (
    agent_spans.WIRE_REQUEST_BODY_BYTES,
    agent_spans.WIRE_RESPONSE_BODY_BYTES,
    agent_spans.WIRE_STREAM_EVENTS,
    agent_spans.WIRE_TIME_TO_FIRST_BYTE,
    agent_spans.WIRE_REQUEST_SEND,
    agent_spans.WIRE_REQUEST_DIGEST,
    agent_spans.INFERSIGHT_REQUEST_ID,
    agent_spans.INFERSIGHT_TLS,
    agent_spans.INFERSIGHT_TRUNCATED,
    agent_spans.INFERSIGHT_RESPONSE_MISSING,
    agent_spans.INFERSIGHT_API,
    http_attributes.HTTP_RESPONSE_STATUS_CODE,
)
#: Canonical column -> the capture's attribute, copied only when the SDK span has no value for
#: the column in any dialect (the normalizer found none).
_GENAI_FILL: Final = {
    "gen_ai_request_model": ga.GEN_AI_REQUEST_MODEL,
    "gen_ai_response_model": ga.GEN_AI_RESPONSE_MODEL,
    "gen_ai_response_id": ga.GEN_AI_RESPONSE_ID,
    "gen_ai_usage_input_tokens": ga.GEN_AI_USAGE_INPUT_TOKENS,
    "gen_ai_usage_output_tokens": ga.GEN_AI_USAGE_OUTPUT_TOKENS,
    "gen_ai_response_time_to_first_chunk": ga.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
}


def _set(kv: KeyValue, value: AttributeValue) -> None:
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    elif isinstance(value, str):
        kv.value.string_value = value
    elif isinstance(value, list | tuple):
        for item in value:
            entry = kv.value.array_value.values.add()
            if isinstance(item, bool):
                entry.bool_value = item
            elif isinstance(item, int):
                entry.int_value = item
            elif isinstance(item, float):
                entry.double_value = item
            else:
                entry.string_value = str(item)


def _put(span: Any, present: dict[str, KeyValue], key: str, value: AttributeValue | None) -> None:
    if value is None or key in present:
        return
    kv = span.attributes.add()
    kv.key = key
    _set(kv, value)
    present[key] = kv


def merge_capture(
    span: Any,
    capture_attrs: Mapping[str, AttributeValue],
    *,
    wire_start_unix_ns: int,
    wire_end_unix_ns: int,
    sdk_columns: Mapping[str, Any],
    method: str,
    confidence: float,
    retried: Sequence[Mapping[str, AttributeValue]] = (),
) -> None:
    """Add the capture's fields to `span` (in place), as the module docstring says;
    `retried` holds the span attributes of the failed attempts folded into the call."""
    present: dict[str, KeyValue] = {kv.key: kv for kv in span.attributes}
    source = present.get(agent_spans.INFERSIGHT_SOURCE)
    if source is not None:
        source.value.Clear()
        source.value.string_value = SOURCE_BOTH
    else:
        _put(span, present, agent_spans.INFERSIGHT_SOURCE, SOURCE_BOTH)
    for key in _WIRE_KEYS:
        _put(span, present, key, capture_attrs.get(key))
    _put(span, present, WIRE_DURATION, max(wire_end_unix_ns - wire_start_unix_ns, 0) / 1e9)
    _put(span, present, WIRE_START, wire_start_unix_ns)
    if retried:
        _put(span, present, WIRE_ATTEMPTS, 1 + len(retried))
        statuses = [
            status
            for attrs in retried
            if isinstance(status := attrs.get(http_attributes.HTTP_RESPONSE_STATUS_CODE), int)
        ]
        _put(span, present, WIRE_RETRIED_STATUS_CODES, statuses or None)
    _put(
        span,
        present,
        WIRE_TIME_TO_FIRST_CHUNK,
        capture_attrs.get(ga.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK),
    )
    for column, key in _GENAI_FILL.items():
        if sdk_columns.get(column) is None:
            _put(span, present, key, capture_attrs.get(key))
    _put(span, present, PAIR_METHOD, method)
    _put(span, present, PAIR_CONFIDENCE, float(confidence))
