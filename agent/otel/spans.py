"""One captured LLM call as one OpenTelemetry span, built through the SDK's tracer.

Takes in: an `InferenceCall` (from `agent.genai`), the `HttpExchange` it was parsed from (wire
times, connection, role), the `Workload` behind the process (`agent.k8s.resolver`) and a
`MonoToUnix` clock.
Gives out: a finished span on the tracer, named `{gen_ai.operation.name} {model}`, of kind CLIENT
when a process of this node made the call and SERVER when one received it; start and end are the
first request byte and the last response byte as the kernel saw them. A call that carried a W3C
`traceparent` joins that trace as a child of the span that sent it. Attributes follow the GenAI,
server, HTTP, network, process and Kubernetes conventions (keys from
`opentelemetry-semantic-conventions`); the agent's own are under `infersight.*`. Content goes out
only when the parser put it in the call (content mode `metadata` or `full`, already redacted).
Must not log content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv._incubating.attributes import (
    k8s_attributes,
    openai_attributes,
    process_attributes,
    thread_attributes,
)
from opentelemetry.semconv._incubating.attributes.container_attributes import CONTAINER_ID
from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util.types import AttributeValue

from agent.capture.exchange import HttpExchange, Role
from agent.genai.call import InferenceCall
from agent.k8s.resolver import Workload
from agent.otel.clock import MonoToUnix

SOURCE: Final = "ebpf"

# The agent's own attribute keys.
INFERSIGHT_SOURCE: Final = "infersight.source"
INFERSIGHT_API: Final = "infersight.api"
INFERSIGHT_COMM: Final = "infersight.comm"
INFERSIGHT_TLS: Final = "infersight.tls"
INFERSIGHT_TRUNCATED: Final = "infersight.truncated"
INFERSIGHT_RESPONSE_MISSING: Final = "infersight.response_missing"
INFERSIGHT_REQUEST_ID: Final = "infersight.request_id"
INFERSIGHT_CGROUP_ID: Final = "infersight.cgroup_id"
WIRE_REQUEST_BODY_BYTES: Final = "infersight.wire.request_body_bytes"
WIRE_RESPONSE_BODY_BYTES: Final = "infersight.wire.response_body_bytes"
WIRE_STREAM_EVENTS: Final = "infersight.wire.stream_events"
WIRE_TIME_TO_FIRST_BYTE: Final = "infersight.wire.time_to_first_byte_s"
WIRE_REQUEST_SEND: Final = "infersight.wire.request_send_s"


def span_kind(exchange: HttpExchange) -> SpanKind:
    """CLIENT for calls this node's processes made, SERVER for calls they answered."""
    return SpanKind.SERVER if exchange.conn.role is Role.SERVER else SpanKind.CLIENT


def span_name(call: InferenceCall) -> str:
    """`{operation} {model}` (the request model; the response model when the request had none)."""
    model = call.request_model or call.response_model
    return f"{call.operation} {model}" if model else call.operation


def parent_context(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """A context whose current span is the remote span named by a W3C `traceparent`."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) < 4:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    state = TraceState.from_header([tracestate]) if tracestate else TraceState()
    ctx = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags), trace_state=state
    )
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _put(attrs: dict[str, AttributeValue], key: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool | int | float | str):
        attrs[key] = value
    elif isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        attrs[key] = list(value)


def call_attributes(
    call: InferenceCall, exchange: HttpExchange, workload: Workload | None = None
) -> dict[str, AttributeValue]:
    """Every span attribute for one call (see the module docstring)."""
    a: dict[str, AttributeValue] = {}
    conn = exchange.conn
    # GenAI
    _put(a, ga.GEN_AI_OPERATION_NAME, call.operation)
    _put(a, ga.GEN_AI_PROVIDER_NAME, call.provider)
    _put(a, ga.GEN_AI_REQUEST_MODEL, call.request_model)
    _put(a, ga.GEN_AI_RESPONSE_MODEL, call.response_model)
    _put(a, ga.GEN_AI_RESPONSE_ID, call.response_id)
    _put(a, ga.GEN_AI_USAGE_INPUT_TOKENS, call.input_tokens)
    _put(a, ga.GEN_AI_USAGE_OUTPUT_TOKENS, call.output_tokens)
    _put(a, ga.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, call.cached_input_tokens)
    _put(a, ga.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, call.cache_creation_input_tokens)
    _put(a, ga.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, call.reasoning_output_tokens)
    _put(a, ga.GEN_AI_RESPONSE_FINISH_REASONS, call.finish_reasons)
    _put(a, ga.GEN_AI_REQUEST_STREAM, call.streaming)
    if call.streaming:
        _put(a, ga.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, call.time_to_first_chunk_s)
    _put(a, ga.GEN_AI_REQUEST_MAX_TOKENS, call.request_max_tokens)
    _put(a, ga.GEN_AI_REQUEST_TEMPERATURE, call.request_temperature)
    _put(a, ga.GEN_AI_REQUEST_TOP_P, call.request_top_p)
    _put(a, ga.GEN_AI_REQUEST_TOP_K, call.request_top_k)
    _put(a, ga.GEN_AI_REQUEST_SEED, call.request_seed)
    _put(a, ga.GEN_AI_REQUEST_FREQUENCY_PENALTY, call.request_frequency_penalty)
    _put(a, ga.GEN_AI_REQUEST_PRESENCE_PENALTY, call.request_presence_penalty)
    _put(a, ga.GEN_AI_REQUEST_CHOICE_COUNT, call.request_choice_count)
    _put(a, ga.GEN_AI_REQUEST_STOP_SEQUENCES, call.request_stop_sequences)
    _put(a, ga.GEN_AI_OUTPUT_TYPE, call.output_type)
    _put(a, ga.GEN_AI_EMBEDDINGS_DIMENSION_COUNT, call.embeddings_dimension_count)
    _put(a, openai_attributes.OPENAI_RESPONSE_SERVICE_TIER, call.response_service_tier)
    _put(a, openai_attributes.OPENAI_RESPONSE_SYSTEM_FINGERPRINT, call.response_system_fingerprint)
    if call.input_messages is not None:
        a[ga.GEN_AI_INPUT_MESSAGES] = _json(call.input_messages)
    if call.output_messages is not None:
        a[ga.GEN_AI_OUTPUT_MESSAGES] = _json(call.output_messages)
    if call.system_instructions is not None:
        a[ga.GEN_AI_SYSTEM_INSTRUCTIONS] = _json(call.system_instructions)
    # server, error, HTTP, network
    _put(a, server_attributes.SERVER_ADDRESS, call.server_address)
    _put(a, server_attributes.SERVER_PORT, call.server_port)
    _put(a, error_attributes.ERROR_TYPE, call.error_type)
    _put(a, http_attributes.HTTP_REQUEST_METHOD, exchange.method or None)
    _put(a, http_attributes.HTTP_RESPONSE_STATUS_CODE, call.http_status)
    _put(a, url_attributes.URL_PATH, exchange.path.split("?", 1)[0] or None)
    a[network_attributes.NETWORK_TRANSPORT] = "tcp"
    a[network_attributes.NETWORK_PROTOCOL_NAME] = "http"
    a[network_attributes.NETWORK_PROTOCOL_VERSION] = "1.1"
    if conn.peer_addr:
        a[network_attributes.NETWORK_PEER_ADDRESS] = conn.peer_addr
        if conn.peer_port:
            a[network_attributes.NETWORK_PEER_PORT] = conn.peer_port
    if conn.role is Role.SERVER and conn.peer_addr:
        a[client_attributes.CLIENT_ADDRESS] = conn.peer_addr
        if conn.peer_port:
            a[client_attributes.CLIENT_PORT] = conn.peer_port
    # process and Kubernetes (per call: one tracer provider serves every process of the node)
    a[process_attributes.PROCESS_PID] = conn.pid
    if conn.tid:
        a[thread_attributes.THREAD_ID] = conn.tid
    executable = workload.executable if workload is not None else None
    _put(a, process_attributes.PROCESS_EXECUTABLE_NAME, executable or conn.comm or None)
    if workload is not None:
        _put(a, k8s_attributes.K8S_NAMESPACE_NAME, workload.namespace)
        _put(a, k8s_attributes.K8S_POD_NAME, workload.pod)
        _put(a, k8s_attributes.K8S_POD_UID, workload.pod_uid)
        _put(a, k8s_attributes.K8S_CONTAINER_NAME, workload.container)
        _put(a, CONTAINER_ID, workload.container_id)
    # ours
    a[INFERSIGHT_SOURCE] = SOURCE
    a[INFERSIGHT_API] = call.api
    _put(a, INFERSIGHT_COMM, conn.comm or None)
    a[INFERSIGHT_TLS] = bool(conn.tls)
    a[INFERSIGHT_TRUNCATED] = bool(call.truncated)
    if exchange.response_missing:
        a[INFERSIGHT_RESPONSE_MISSING] = True
    _put(a, INFERSIGHT_REQUEST_ID, call.request_id)
    if conn.cgroup_id:
        a[INFERSIGHT_CGROUP_ID] = conn.cgroup_id
    a[WIRE_REQUEST_BODY_BYTES] = len(exchange.request_body)
    a[WIRE_RESPONSE_BODY_BYTES] = len(exchange.response_body)
    if exchange.stream_events:
        a[WIRE_STREAM_EVENTS] = len(exchange.stream_events)
    if exchange.first_byte_mono_ns is not None:
        a[WIRE_TIME_TO_FIRST_BYTE] = (exchange.first_byte_mono_ns - exchange.start_mono_ns) / 1e9
    if exchange.request_end_mono_ns >= exchange.start_mono_ns:
        a[WIRE_REQUEST_SEND] = (exchange.request_end_mono_ns - exchange.start_mono_ns) / 1e9
    return a


def end_mono_ns(exchange: HttpExchange) -> int:
    """The last wire time known for the exchange (the response's end when it was seen)."""
    for t in (exchange.end_mono_ns, exchange.first_byte_mono_ns, exchange.request_end_mono_ns):
        if t is not None and t >= exchange.start_mono_ns:
            return t
    return exchange.start_mono_ns


class SpanEmitter:
    """Builds and ends one span per call on the given tracer."""

    def __init__(self, tracer: trace.Tracer, clock: MonoToUnix) -> None:
        self._tracer = tracer
        self._clock = clock

    def emit(
        self,
        call: InferenceCall,
        exchange: HttpExchange,
        workload: Workload | None = None,
        extra: Mapping[str, AttributeValue] | None = None,
    ) -> SpanContext:
        """Record the call as a finished span; returns its context (trace and span ids)."""
        attrs = call_attributes(call, exchange, workload)
        if extra:
            attrs.update(extra)
        offset_ns = self._clock.offset_ns()
        start_unix_ns = exchange.start_mono_ns + offset_ns
        end_unix_ns = end_mono_ns(exchange) + offset_ns
        parent = parent_context(call.traceparent, exchange.request_headers.get("tracestate"))
        span = self._tracer.start_span(
            span_name(call),
            context=parent,
            kind=span_kind(exchange),
            attributes=attrs,
            start_time=start_unix_ns,
        )
        if call.error_type:
            span.set_status(Status(StatusCode.ERROR, call.error_type))
        span.end(end_time=end_unix_ns)
        return span.get_span_context()
