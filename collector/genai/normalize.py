"""GenAI attribute normalization: any instrumentation dialect in, canonical columns out.

Takes the attributes (already decoded to Python values), name and events of one span; gives a
`NormalizedGenAI` with the canonical `gen_ai_*` span columns (see `store.schema.GENAI_COLUMNS`),
the content found (semantic-convention message schema) and the dialect recognised, or None for a
span that is not a GenAI span. Pure: no I/O, never raises on odd input.

Dialects (the `gen_ai_dialect` column):
- `otel_genai`: the OpenTelemetry GenAI conventions of v1.37 and later (`gen_ai.provider.name`);
  the official OpenAI instrumentation from 2.4b0, and any producer following the conventions.
- `otel_genai_legacy`: the conventions up to v1.36 (`gen_ai.system`, content in events); the
  official OpenAI instrumentation's default output up to 2.3b0.
- `openllmetry`: Traceloop OpenLLMetry from 0.55 (conventions plus `gen_ai.openai.api_base`,
  `gen_ai.is_streaming`, `gen_ai.usage.reasoning_tokens`, span names `openai.chat`, ...).
- `openllmetry_legacy`: OpenLLMetry before 0.55 (`llm.request.type`, `gen_ai.prompt.{i}.*`,
  `gen_ai.completion.{i}.*`, `gen_ai.usage.prompt_tokens`, `llm.vendor`, `llm.prompts.{i}.*`).
- `openlit`: OpenLIT (span attribute `telemetry.sdk.name=openlit`, or its legacy
  `gen_ai.application_name`/`gen_ai.environment`); `openlit_legacy` when it still sends
  `gen_ai.system` and flattened `gen_ai.prompt`/`gen_ai.completion` strings.
- `openinference`: Arize OpenInference (`openinference.span.kind`, `llm.*`, `input.value`).

Value rewrites: providers to the conventions' names (`gen_ai.system=az.ai.openai` ->
`azure.ai.openai`, OpenInference `llm.provider`/`llm.system`, ...); operations from
`llm.request.type`, `openinference.span.kind`, `traceloop.span.kind` or the span name; finish
reasons to the `gen_ai.output.messages` enum (`stop`, `length`, `content_filter`, `tool_call`,
`error`): OpenAI's `tool_calls` and Anthropic's `tool_use` become `tool_call`, `end_turn` and
`stop_sequence` become `stop`, `max_tokens` becomes `length`, so one spelling means one thing
across dialects; the producer's own list stays in `NormalizedGenAI.finish_reasons_raw` (and in
the span's raw attributes). Time to first chunk comes from `gen_ai.response.time_to_first_chunk`,
OpenLIT's `gen_ai.server.time_to_first_token` (streams only: for other calls OpenLIT writes the
whole duration there), or the first streaming span event (OpenLLMetry's
`gen_ai.content.completion.chunk`, OpenInference's `First Token Stream Event`) minus the span
start, which needs event times: pass events as `(name, attributes, time_unix_ns)` and
`start_unix_ns`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv.attributes import error_attributes, server_attributes

from collector.genai import content as ct
from collector.genai import values as vl

__all__ = ["GenAIContent", "NormalizedGenAI", "content_from_log_event", "normalize_span"]


@dataclass(slots=True)
class GenAIContent:
    """Prompt and response content in the semantic-convention message schema (JSON-able)."""

    input_messages: list[dict[str, Any]] | None = None
    output_messages: list[dict[str, Any]] | None = None
    system_instructions: list[dict[str, Any]] | None = None
    tool_definitions: list[dict[str, Any]] | None = None
    origin: str = "span_attributes"
    """`span_attributes`, `span_events` or `log_events`."""
    as_sent: tuple[str, ...] = ()
    """The span attributes (of `gen_ai.input.messages`, `gen_ai.output.messages`,
    `gen_ai.system_instructions`, `gen_ai.tool.definitions`) whose value this content holds
    exactly as the producer sent it, so a store may keep that value here alone."""


@dataclass(slots=True)
class NormalizedGenAI:
    """The canonical view of one GenAI span."""

    dialect: str
    columns: dict[str, Any] = field(default_factory=dict)
    content: GenAIContent | None = None
    finish_reasons_raw: list[str] | None = None
    """Finish reasons as the producer spelled them (before the rewrite to the enum)."""
    total_tokens: int | None = None
    """A total the producer reported, when it did (not a column: input + output is canonical)."""


# --- attribute names ---------------------------------------------------------------------------

OPERATION = ga.GEN_AI_OPERATION_NAME
PROVIDER = ga.GEN_AI_PROVIDER_NAME
SYSTEM = ga.GEN_AI_SYSTEM
REQUEST_MODEL = ga.GEN_AI_REQUEST_MODEL
RESPONSE_MODEL = ga.GEN_AI_RESPONSE_MODEL
RESPONSE_ID = ga.GEN_AI_RESPONSE_ID
INPUT_TOKENS = ga.GEN_AI_USAGE_INPUT_TOKENS
OUTPUT_TOKENS = ga.GEN_AI_USAGE_OUTPUT_TOKENS
PROMPT_TOKENS = ga.GEN_AI_USAGE_PROMPT_TOKENS
COMPLETION_TOKENS = ga.GEN_AI_USAGE_COMPLETION_TOKENS
CACHE_READ = ga.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
CACHE_CREATION = ga.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
REASONING = ga.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS
FINISH_REASONS = ga.GEN_AI_RESPONSE_FINISH_REASONS
STREAM = ga.GEN_AI_REQUEST_STREAM
TTFC = ga.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
CONVERSATION_ID = ga.GEN_AI_CONVERSATION_ID
TEMPERATURE = ga.GEN_AI_REQUEST_TEMPERATURE
TOP_P = ga.GEN_AI_REQUEST_TOP_P
MAX_TOKENS = ga.GEN_AI_REQUEST_MAX_TOKENS
AGENT_NAME = ga.GEN_AI_AGENT_NAME
TOOL_NAME = ga.GEN_AI_TOOL_NAME
INPUT_MESSAGES = ga.GEN_AI_INPUT_MESSAGES
OUTPUT_MESSAGES = ga.GEN_AI_OUTPUT_MESSAGES
SYSTEM_INSTRUCTIONS = ga.GEN_AI_SYSTEM_INSTRUCTIONS
TOOL_DEFINITIONS = ga.GEN_AI_TOOL_DEFINITIONS
PROMPT = ga.GEN_AI_PROMPT
COMPLETION = ga.GEN_AI_COMPLETION
SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
SERVER_PORT = server_attributes.SERVER_PORT
ERROR_TYPE = error_attributes.ERROR_TYPE

# Renamed on the conventions' development branch; read as the v1.41 name.
CACHE_WRITE = "gen_ai.usage.cache_write.input_tokens"

OI_KIND = "openinference.span.kind"
TL_KIND = "traceloop.span.kind"

#: One of these keys must be present for a span to be looked at further. Checked in order of
#: how often they appear, so a GenAI span stops at the first lookups and any other span costs
#: exactly this many dict lookups.
_MARKERS: tuple[str, ...] = (
    OPERATION,
    PROVIDER,
    SYSTEM,
    OI_KIND,
    REQUEST_MODEL,
    "llm.request.type",
    "llm.system",
    "llm.model_name",
    "llm.vendor",
    TL_KIND,
)

#: Span events that mark the first streamed chunk, by dialect.
_FIRST_CHUNK_EVENTS = frozenset(
    {
        "gen_ai.content.completion.chunk",
        "llm.content.completion.chunk",
        "First Token Stream Event",
    }
)

_LEGACY_MESSAGE_EVENTS: dict[str, str] = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def _first(attrs: dict[str, Any], keys: tuple[str, ...], conv: Any) -> Any:
    for key in keys:
        if key in attrs:
            value = conv(attrs[key])
            if value is not None:
                return value
    return None


_INPUT_KEYS = (INPUT_TOKENS, PROMPT_TOKENS, "llm.usage.prompt_tokens", "llm.token_count.prompt")
_OUTPUT_KEYS = (
    OUTPUT_TOKENS,
    COMPLETION_TOKENS,
    "llm.usage.completion_tokens",
    "llm.token_count.completion",
)
_CACHE_READ_KEYS = (
    CACHE_READ,
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.prompt_tokens_details.cached_tokens",
    "llm.token_count.prompt_details.cache_read",
)
_CACHE_CREATION_KEYS = (
    CACHE_CREATION,
    CACHE_WRITE,
    "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.prompt_tokens_details.cache_creation_tokens",
    "llm.token_count.prompt_details.cache_write",
)
_REASONING_KEYS = (
    REASONING,
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
    "gen_ai.usage.completion_tokens_details.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
)
_TOTAL_KEYS = ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total")
_REQUEST_MODEL_KEYS = (REQUEST_MODEL, "llm.request.model", "llm.request.model_name")
_RESPONSE_MODEL_KEYS = (
    RESPONSE_MODEL,
    "llm.response.model",
    "llm.response.model_name",
    "llm.model_name",
    "embedding.model_name",
)
_TEMPERATURE_KEYS = (TEMPERATURE, "llm.temperature")
_TOP_P_KEYS = (TOP_P, "llm.top_p")
_MAX_TOKENS_KEYS = (MAX_TOKENS, "gen_ai.request.max_completion_tokens", "llm.request.max_tokens")
_STREAM_KEYS = (STREAM, "gen_ai.is_streaming", "llm.is_streaming")
_FINISH_KEYS = (
    FINISH_REASONS,
    "gen_ai.response.finish_reason",
    "llm.response.finish_reason",
    "llm.finish_reason",
)
_CONVERSATION_KEYS = (CONVERSATION_ID, "session.id", "traceloop.association.properties.session_id")
_AGENT_KEYS = (AGENT_NAME, "agent.name")
_URL_KEYS = ("gen_ai.openai.api_base", "gen_ai.endpoint")


#: Columns read straight from one of several attributes: (column, attribute keys in order of
#: preference, conversion). The first key present whose value converts wins.
_PLAIN_COLUMNS: tuple[tuple[str, tuple[str, ...], Callable[[Any], Any]], ...] = (
    ("gen_ai_request_model", _REQUEST_MODEL_KEYS, vl.as_str),
    ("gen_ai_response_model", _RESPONSE_MODEL_KEYS, vl.as_str),
    ("gen_ai_response_id", (RESPONSE_ID,), vl.as_str),
    ("gen_ai_usage_input_tokens", _INPUT_KEYS, vl.as_int),
    ("gen_ai_usage_output_tokens", _OUTPUT_KEYS, vl.as_int),
    ("gen_ai_usage_cache_read_input_tokens", _CACHE_READ_KEYS, vl.as_int),
    ("gen_ai_usage_cache_creation_input_tokens", _CACHE_CREATION_KEYS, vl.as_int),
    ("gen_ai_usage_reasoning_output_tokens", _REASONING_KEYS, vl.as_int),
    ("gen_ai_request_stream", _STREAM_KEYS, vl.as_bool),
    ("gen_ai_conversation_id", _CONVERSATION_KEYS, vl.as_str),
    ("gen_ai_request_temperature", _TEMPERATURE_KEYS, vl.as_float),
    ("gen_ai_request_top_p", _TOP_P_KEYS, vl.as_float),
    ("gen_ai_request_max_tokens", _MAX_TOKENS_KEYS, vl.as_int),
    ("gen_ai_agent_name", _AGENT_KEYS, vl.as_str),
    ("error_type", (ERROR_TYPE,), vl.as_str),
)

#: The same rules by attribute key: key -> ((column, preference, conversion), ...).
_PLAIN_BY_KEY: dict[str, tuple[tuple[str, int, Callable[[Any], Any]], ...]] = {}
for _col, _keys, _conv in _PLAIN_COLUMNS:
    for _rank, _key in enumerate(_keys):
        _PLAIN_BY_KEY[_key] = (*_PLAIN_BY_KEY.get(_key, ()), (_col, _rank, _conv))
del _col, _keys, _conv, _rank, _key


def _plain_columns(attrs: dict[str, Any], cols: dict[str, Any]) -> None:
    """Fill the `_PLAIN_COLUMNS` from `attrs`.

    One pass over the attributes a span has rather than one look-up per candidate key: a
    span carries a handful of the fifty or so keys the rules know."""
    ranks: dict[str, int] = {}
    by_key = _PLAIN_BY_KEY
    if len(attrs) > len(by_key):
        # Hostile or very wide spans: look the known keys up instead of walking them all.
        items: Any = ((k, attrs[k]) for k in by_key if k in attrs)
    else:
        items = attrs.items()
    for key, raw in items:
        rules = by_key.get(key)
        if rules is None:
            continue
        for col, rank, conv in rules:
            if rank < ranks.get(col, rank + 1):
                value = conv(raw)
                if value is not None:
                    cols[col] = value
                    ranks[col] = rank


def _dialect(attrs: dict[str, Any], span_name: str) -> str:
    if OI_KIND in attrs:
        return "openinference"
    if attrs.get("telemetry.sdk.name") == "openlit" or (
        "gen_ai.application_name" in attrs or "gen_ai.environment" in attrs
    ):
        return "openlit" if PROVIDER in attrs else "openlit_legacy"
    if (
        "llm.request.type" in attrs
        or "llm.vendor" in attrs
        or "gen_ai.prompt.0.content" in attrs
        or "gen_ai.prompt.0.role" in attrs
        or "gen_ai.completion.0.content" in attrs
        or "llm.usage.total_tokens" in attrs
    ):
        return "openllmetry_legacy"
    if (
        "gen_ai.openai.api_base" in attrs
        or "gen_ai.is_streaming" in attrs
        or span_name.startswith("openai.")
        or TL_KIND in attrs
    ):
        return "openllmetry" if PROVIDER in attrs or SYSTEM not in attrs else "openllmetry_legacy"
    if PROVIDER in attrs or (OPERATION in attrs and SYSTEM not in attrs):
        return "otel_genai"
    if SYSTEM in attrs:
        return "otel_genai_legacy"
    if "llm.system" in attrs or "llm.model_name" in attrs:
        return "openinference"
    return "otel_genai"


def _provider(attrs: dict[str, Any], dialect: str) -> str | None:
    if dialect == "openinference":
        hosting = vl.as_str(attrs.get("llm.provider"))
        # The hosting platform wins when it names a different service than the model family
        # (`llm.system=openai` served by Azure is `azure.ai.openai`).
        if hosting is not None and hosting.lower() in ("azure", "aws", "google"):
            return vl.provider(hosting)
        return vl.provider(attrs.get("llm.system")) or vl.provider(hosting)
    return (
        vl.provider(attrs.get(PROVIDER))
        or vl.provider(attrs.get(SYSTEM))
        or vl.provider(attrs.get("llm.vendor"))
        or vl.provider(attrs.get("llm.system"))
    )


def _operation(attrs: dict[str, Any], span_name: str) -> str | None:
    op = vl.operation(attrs.get(OPERATION))
    if op is not None:
        return op
    op = vl.operation(attrs.get("llm.request.type"))
    if op is not None:
        return op
    kind = attrs.get(OI_KIND)
    if isinstance(kind, str):
        op = vl.OPENINFERENCE_KINDS.get(kind.upper())
        if op == "chat" and ("llm.prompts.0.prompt.text" in attrs or span_name == "Completion"):
            op = "text_completion"
        if op is not None:
            return op
    kind = attrs.get(TL_KIND)
    if isinstance(kind, str) and kind.lower() in vl.TRACELOOP_KINDS:
        return vl.TRACELOOP_KINDS[kind.lower()]
    op = vl.SPAN_NAME_OPERATIONS.get(span_name)
    if op is not None:
        return op
    head = span_name.split(" ", 1)[0]
    if head in (
        "chat",
        "text_completion",
        "generate_content",
        "embeddings",
        "retrieval",
        "create_agent",
        "invoke_agent",
        "execute_tool",
        "invoke_workflow",
    ):
        return head
    return None


def _server(attrs: dict[str, Any], cols: dict[str, Any]) -> None:
    address = vl.as_str(attrs.get(SERVER_ADDRESS))
    port = vl.as_int(attrs.get(SERVER_PORT))
    if address is None:
        url = _first(attrs, _URL_KEYS, vl.as_str)
        if url is not None:
            try:
                parts = urlsplit(url)
                address = parts.hostname
                if port is None:
                    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
            except ValueError:
                pass
    if address is not None:
        cols["server_address"] = address
    if port is not None and port <= 65535:
        cols["server_port"] = port


def _event_time(event: Any) -> int | None:
    if isinstance(event, (tuple, list)) and len(event) >= 3:
        return vl.as_int(event[2])
    return None


def _ttfc_from_events(events: Sequence[Any], start_unix_ns: int | None) -> float | None:
    if start_unix_ns is None:
        return None
    for event in events:
        if isinstance(event, (tuple, list)) and event and event[0] in _FIRST_CHUNK_EVENTS:
            when = _event_time(event)
            if when is None or when < start_unix_ns:
                return None
            return (when - start_unix_ns) / 1e9
    return None


def _invocation_parameters(attrs: dict[str, Any]) -> dict[str, Any] | None:
    raw = attrs.get("llm.invocation_parameters") or attrs.get("embedding.invocation_parameters")
    params = vl.parse_json(raw)
    return params if isinstance(params, dict) else None


def _response_id(raw: Any) -> str | None:
    """The `id` of a raw response body. OpenAI's serialization puts it first, so the common
    case reads a few bytes instead of parsing a body that may hold the whole answer."""
    if not isinstance(raw, str):
        return None
    if raw.startswith('{"id":"'):
        end = raw.find('"', 7)
        if end > 7 and "\\" not in raw[7:end]:
            return raw[7:end]
    out = vl.parse_json(raw)
    return vl.as_str(out.get("id")) if isinstance(out, dict) else None


def _openinference(attrs: dict[str, Any], cols: dict[str, Any]) -> None:
    """OpenInference keeps request parameters and the response id inside JSON strings."""
    params = _invocation_parameters(attrs)
    if params is not None:
        model = vl.as_str(params.get("model"))
        if model is not None:
            cols["gen_ai_request_model"] = model
        for col, keys, conv in (
            ("gen_ai_request_temperature", ("temperature",), vl.as_float),
            ("gen_ai_request_top_p", ("top_p",), vl.as_float),
            ("gen_ai_request_max_tokens", ("max_tokens", "max_completion_tokens"), vl.as_int),
        ):
            if col not in cols:
                value = _first(params, keys, conv)
                if value is not None:
                    cols[col] = value
        stream = vl.as_bool(params.get("stream"))
        if stream is not None:
            cols["gen_ai_request_stream"] = stream
    if (
        params is not None
        and "gen_ai_request_stream" not in cols
        and cols.get("gen_ai_operation_name") in ("chat", "text_completion")
    ):
        # The instrumentation copies the request's parameters; no `stream` means not streamed.
        cols["gen_ai_request_stream"] = False
    if attrs.get("output.mime_type") == "application/json":
        rid = _response_id(attrs.get("output.value"))
        if rid is not None:
            cols["gen_ai_response_id"] = rid
    if "gen_ai_request_model" not in cols:
        # Without the request, the only model known is the one that answered.
        model = vl.as_str(attrs.get("llm.model_name")) or vl.as_str(
            attrs.get("embedding.model_name")
        )
        if model is not None:
            cols["gen_ai_request_model"] = model
    if cols.get("gen_ai_operation_name") == "execute_tool":
        name = vl.as_str(attrs.get("tool.name"))
        if name is not None:
            cols["gen_ai_tool_name"] = name


def _finish_reasons(attrs: dict[str, Any], out: NormalizedGenAI) -> None:
    raw = _first(attrs, _FINISH_KEYS, vl.as_str_list)
    if raw is None and (
        "gen_ai.completion.0.finish_reason" in attrs or "llm.completions.0.finish_reason" in attrs
    ):
        prefix = (
            "gen_ai.completion"
            if "gen_ai.completion.0.finish_reason" in attrs
            else ("llm.completions")
        )
        raw = []
        for i in range(ct.MAX_INDEX):
            reason = attrs.get(f"{prefix}.{i}.finish_reason")
            if reason is None:
                break
            if isinstance(reason, str) and reason:
                raw.append(reason)
    if raw:
        out.finish_reasons_raw = raw
        norm = vl.finish_reasons(raw)
        if norm is not None:
            out.columns["gen_ai_response_finish_reasons"] = norm


def _span_content(
    attrs: dict[str, Any], events: Sequence[Any], dialect: str
) -> GenAIContent | None:
    as_sent: list[str] = []
    inp = out = system = tools = None
    if INPUT_MESSAGES in attrs:
        inp, same = ct.read_semconv_messages(attrs[INPUT_MESSAGES])
        if same:
            as_sent.append(INPUT_MESSAGES)
    if OUTPUT_MESSAGES in attrs:
        out, same = ct.read_semconv_messages(attrs[OUTPUT_MESSAGES], output=True)
        if same:
            as_sent.append(OUTPUT_MESSAGES)
    if SYSTEM_INSTRUCTIONS in attrs:
        system, same = ct.read_parts_list(attrs[SYSTEM_INSTRUCTIONS])
        if same:
            as_sent.append(SYSTEM_INSTRUCTIONS)
    if TOOL_DEFINITIONS in attrs:
        tools, same = ct.read_parts_list(attrs[TOOL_DEFINITIONS])
        if same:
            as_sent.append(TOOL_DEFINITIONS)
    if dialect == "openinference":
        if inp is None:
            inp = ct.openinference_messages(
                attrs, "llm.input_messages", output=False
            ) or ct.openinference_texts(attrs, "llm.prompts", "prompt.text", "user")
        if out is None:
            out = ct.openinference_messages(
                attrs, "llm.output_messages", output=True
            ) or ct.openinference_texts(attrs, "llm.choices", "completion.text", "assistant")
            reason = vl.finish_reason(attrs.get("llm.finish_reason"))
            if out is not None and reason is not None and len(out) == 1:
                out[0]["finish_reason"] = reason
        if inp is None and attrs.get("input.mime_type") == "application/json":
            inp = ct.request_messages(attrs.get("input.value"))
        if tools is None and "llm.tools.0.tool.json_schema" in attrs:
            tools = ct.openinference_tools(attrs)
    elif dialect in ("openllmetry_legacy", "openllmetry"):
        if inp is None:
            inp = ct.indexed_messages(attrs, "gen_ai.prompt", output=False) or ct.indexed_messages(
                attrs, "llm.prompts", output=False
            )
        if out is None:
            out = ct.indexed_messages(
                attrs, "gen_ai.completion", output=True
            ) or ct.indexed_messages(attrs, "llm.completions", output=True)
        if tools is None:
            tools = ct.legacy_functions(attrs)
    if inp is None and PROMPT in attrs:
        inp = ct.flattened_prompt(attrs[PROMPT])
    if out is None and COMPLETION in attrs:
        out = ct.completion_text(attrs[COMPLETION])
    if inp is not None or out is not None or system is not None or tools is not None:
        return GenAIContent(inp, out, system, tools, "span_attributes", tuple(as_sent))
    if events:
        return _event_content(events)
    return None


def _event_content(events: Sequence[Any]) -> GenAIContent | None:
    """Content carried by span events: the v1.26 `gen_ai.content.prompt`/`.completion`
    events, or legacy message events recorded as span events."""
    inp: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for event in events:
        if not (isinstance(event, (tuple, list)) and len(event) >= 2):
            continue
        name, attrs = event[0], event[1]
        if not isinstance(attrs, dict) or not isinstance(name, str):
            continue
        if name == "gen_ai.content.prompt":
            inp.extend(ct.flattened_prompt(attrs.get(PROMPT)) or [])
        elif name == "gen_ai.content.completion":
            out.extend(ct.completion_text(attrs.get(COMPLETION)) or [])
        elif name in _LEGACY_MESSAGE_EVENTS or name == "gen_ai.choice":
            body = attrs.get("gen_ai.event.content", attrs)
            found = _legacy_event(name, body)
            if found is not None:
                inp.extend(found.input_messages or [])
                out.extend(found.output_messages or [])
    if not inp and not out:
        return None
    return GenAIContent(inp or None, out or None, None, None, "span_events")


def normalize_span(
    attributes: dict[str, Any],
    span_name: str,
    events: Sequence[tuple[Any, ...]],
    start_unix_ns: int | None = None,
) -> NormalizedGenAI | None:
    """Return the canonical GenAI fields of a span, or None when it is not a GenAI span.

    `events` are `(name, attributes)` or `(name, attributes, time_unix_ns)`; with event times
    and `start_unix_ns`, dialects that mark the first streamed chunk with a span event get a
    time to first chunk.
    """
    try:
        for key in _MARKERS:
            if key in attributes:
                break
        else:
            return None
        return _normalize(
            attributes, span_name if isinstance(span_name, str) else "", events or (), start_unix_ns
        )
    except Exception:  # odd input must never fail the export it came in
        return None


def _normalize(
    attrs: dict[str, Any], span_name: str, events: Sequence[Any], start_unix_ns: int | None
) -> NormalizedGenAI | None:
    dialect = _dialect(attrs, span_name)
    cols: dict[str, Any] = {}
    result = NormalizedGenAI(dialect, cols)
    op = _operation(attrs, span_name)
    if op is not None:
        cols["gen_ai_operation_name"] = op
    provider = _provider(attrs, dialect)
    if provider is not None:
        cols["gen_ai_provider_name"] = provider

    _plain_columns(attrs, cols)
    result.total_tokens = _first(attrs, _TOTAL_KEYS, vl.as_int)
    if dialect == "openinference":
        _openinference(attrs, cols)
    elif TOOL_NAME in attrs and (dialect != "openlit" or op == "execute_tool"):
        # OpenLIT lists the tools a chat response called here, comma-joined: not this span's
        # tool, so only its tool spans fill the column.
        name = vl.as_str(attrs[TOOL_NAME])
        if name is not None:
            cols["gen_ai_tool_name"] = name
    if attrs.get(TL_KIND) == "agent" and "gen_ai_agent_name" not in cols:
        name = vl.as_str(attrs.get("traceloop.entity.name"))
        if name is not None:
            cols["gen_ai_agent_name"] = name
    _server(attrs, cols)
    _finish_reasons(attrs, result)
    if "error_type" not in cols and events:
        # Dialects without `error.type` (OpenInference) still record the exception event.
        for event in events:
            if isinstance(event, (tuple, list)) and len(event) >= 2 and event[0] == "exception":
                ev_attrs = event[1]
                kind = (
                    vl.as_str(ev_attrs.get("exception.type"))
                    if isinstance(ev_attrs, dict)
                    else None
                )
                if kind is not None:
                    cols["error_type"] = kind
                    break

    ttfc = vl.as_float(attrs.get(TTFC))
    if ttfc is None and dialect.startswith("openlit") and cols.get("gen_ai_request_stream"):
        ttfc = vl.as_float(attrs.get("gen_ai.server.time_to_first_token"))
    if ttfc is None and events:
        ttfc = _ttfc_from_events(events, start_unix_ns)
        if ttfc is not None and "gen_ai_request_stream" not in cols:
            cols["gen_ai_request_stream"] = True
    if ttfc is not None and ttfc >= 0:
        cols["gen_ai_response_time_to_first_chunk"] = ttfc
        if "gen_ai_request_stream" not in cols and dialect == "otel_genai":
            # The conventions record a time to first chunk only for streamed calls.
            cols["gen_ai_request_stream"] = True

    result.content = _span_content(attrs, events, dialect)
    if "gen_ai_response_finish_reasons" not in cols and result.content is not None:
        # Some producers put the finish reason only on the output messages (streams of the
        # official instrumentation): one per choice, in order.
        reasons = [m.get("finish_reason") for m in result.content.output_messages or ()]
        if reasons and all(isinstance(r, str) for r in reasons):
            cols["gen_ai_response_finish_reasons"] = reasons
            raw = vl.parse_json(attrs.get(OUTPUT_MESSAGES))
            raw_reasons = (
                [m.get("finish_reason") for m in raw if isinstance(m, dict)]
                if (isinstance(raw, list))
                else []
            )
            result.finish_reasons_raw = [r for r in raw_reasons if isinstance(r, str)] or [
                r for r in reasons if isinstance(r, str)
            ]
    return result


# --- log-record events -------------------------------------------------------------------------


def _legacy_event(event_name: str, body: Any) -> GenAIContent | None:
    body = vl.parse_json(body) if isinstance(body, str) else body
    if event_name == "gen_ai.choice":
        if not isinstance(body, dict):
            return None
        message = body.get("message")
        message = dict(message) if isinstance(message, dict) else {}
        if "tool_calls" in body and "tool_calls" not in message:
            message["tool_calls"] = body["tool_calls"]
        msg = ct.openai_message(message, "assistant")
        if msg is None:
            return None
        reason = vl.finish_reason(body.get("finish_reason"))
        if reason is not None:
            msg["finish_reason"] = reason
        if not msg["parts"] and reason is None:
            return None
        return GenAIContent(output_messages=[msg], origin="log_events")
    role = _LEGACY_MESSAGE_EVENTS.get(event_name)
    if role is None:
        return None
    if isinstance(body, str):
        body = {"content": body}
    if not isinstance(body, dict):
        return None
    msg = ct.openai_message(body, role)
    if msg is None or not msg["parts"]:
        return None
    if role == "tool" and msg["parts"][0].get("response") is None:
        return None
    return GenAIContent(input_messages=[msg], origin="log_events")


def content_from_log_event(
    event_name: str,
    attributes: dict[str, Any],
    body: Any,
) -> GenAIContent | None:
    """Return the content carried by a GenAI log-record event (legacy `gen_ai.*.message`,
    `gen_ai.choice`, `gen_ai.content.*`, or the current inference-details event), else None."""
    try:
        if not isinstance(event_name, str) or not event_name.startswith("gen_ai."):
            return None
        attrs = attributes if isinstance(attributes, dict) else {}
        if event_name == "gen_ai.client.inference.operation.details":
            return _details_event(attrs, body)
        if event_name == "gen_ai.content.prompt":
            inp = ct.flattened_prompt(attrs.get(PROMPT, body))
            return GenAIContent(input_messages=inp, origin="log_events") if inp else None
        if event_name == "gen_ai.content.completion":
            out = ct.completion_text(attrs.get(COMPLETION, body))
            return GenAIContent(output_messages=out, origin="log_events") if out else None
        return _legacy_event(event_name, body)
    except Exception:  # odd input must never fail the export it came in
        return None


def _details_event(attrs: dict[str, Any], body: Any) -> GenAIContent | None:
    """`gen_ai.client.inference.operation.details`: the content attributes in structured
    form, as record attributes (the conventions) or inside a map body (some SDKs)."""
    sources = [attrs]
    parsed = vl.parse_json(body) if isinstance(body, str) else body
    if isinstance(parsed, dict):
        sources.append(parsed)
    inp = out = system = tools = None
    for src in sources:
        if inp is None and INPUT_MESSAGES in src:
            inp = ct.semconv_messages(src[INPUT_MESSAGES])
        if out is None and OUTPUT_MESSAGES in src:
            out = ct.semconv_messages(src[OUTPUT_MESSAGES], output=True)
        if system is None and SYSTEM_INSTRUCTIONS in src:
            system = ct.parts_list(src[SYSTEM_INSTRUCTIONS])
        if tools is None and TOOL_DEFINITIONS in src:
            tools = ct.parts_list(src[TOOL_DEFINITIONS])
    if inp is None and out is None and system is None and tools is None:
        return None
    return GenAIContent(inp, out, system, tools, "log_events")
