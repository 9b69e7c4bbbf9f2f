"""Value coercion and rewrite tables for GenAI normalization.

Takes single attribute values as decoded from OTLP (str, int, float, bool, list, dict, None) or
found in a producer's JSON; gives canonical Python values: non-negative token counts as int,
finite floats, string lists, and the semantic-convention enum values for providers, operations
and finish reasons. Every function here returns None for a value it cannot read and never
raises on odd input.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

_INT64_MAX = (1 << 63) - 1

#: `gen_ai.provider.name` values of v1.41 and later (the conventions' well-known list).
KNOWN_PROVIDERS = frozenset(
    {
        "openai",
        "anthropic",
        "aws.bedrock",
        "azure.ai.inference",
        "azure.ai.openai",
        "cohere",
        "deepseek",
        "gcp.gemini",
        "gcp.vertex_ai",
        "gcp.gen_ai",
        "groq",
        "ibm.watsonx.ai",
        "mistral_ai",
        "perplexity",
        "x_ai",
        "moonshot_ai",
    }
)

#: Older or vendor spellings of a provider -> the convention's value (lower-cased keys).
#: Sources: deprecated `gen_ai.system` members, OpenLLMetry's `GenAISystem`, OpenLIT's and
#: OpenInference's own values. Unknown values are kept (lower-cased), as the enum allows.
_PROVIDER_ALIASES: dict[str, str] = {
    "az.ai.openai": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure-openai": "azure.ai.openai",
    "azure.openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference",
    "azure_ai_inference": "azure.ai.inference",
    "xai": "x_ai",
    "grok": "x_ai",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "vertex": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "google_genai": "gcp.gen_ai",
    "google": "gcp.gen_ai",
    "ibm.watson.ai": "ibm.watsonx.ai",
    "watsonx": "ibm.watsonx.ai",
    "ibm_watsonx": "ibm.watsonx.ai",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "bedrock": "aws.bedrock",
    "aws_bedrock": "aws.bedrock",
    "aws": "aws.bedrock",
    "azure": "azure.ai.openai",
    "moonshot": "moonshot_ai",
    "moonshotai": "moonshot_ai",
}

#: Finish reasons -> the `gen_ai.output.messages` enum (stop, length, content_filter,
#: tool_call, error). Producers send OpenAI's, Anthropic's, TGI's and Ollama's own words;
#: one spelling per meaning makes `GROUP BY finish_reason` work across dialects. Values not
#: listed are kept (lower-cased): the conventions allow custom reasons.
_FINISH_REASONS: dict[str, str] = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "eos": "stop",
    "eos_token": "stop",
    "complete": "stop",
    "finish_reason_stop": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "model_length": "length",
    "model_context_window_exceeded": "length",
    "tool_calls": "tool_call",
    "tool_call": "tool_call",
    "function_call": "tool_call",
    "tool_use": "tool_call",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "safety": "content_filter",
    "error": "error",
}

#: Operation names of other dialects -> `gen_ai.operation.name`.
_OPERATIONS: dict[str, str] = {
    "chat": "chat",
    "completion": "text_completion",
    "completions": "text_completion",
    "text_completion": "text_completion",
    "generate_content": "generate_content",
    "embedding": "embeddings",
    "embeddings": "embeddings",
    "rerank": "rerank",
    "retrieval": "retrieval",
    "create_agent": "create_agent",
    "invoke_agent": "invoke_agent",
    "execute_tool": "execute_tool",
    "invoke_workflow": "invoke_workflow",
}

#: `openinference.span.kind` -> operation (CHAIN is a pipeline step: a workflow, roughly).
OPENINFERENCE_KINDS: dict[str, str] = {
    "LLM": "chat",
    "EMBEDDING": "embeddings",
    "RETRIEVER": "retrieval",
    "RERANKER": "rerank",
    "TOOL": "execute_tool",
    "AGENT": "invoke_agent",
    "CHAIN": "invoke_workflow",
}

#: `traceloop.span.kind` -> operation.
TRACELOOP_KINDS: dict[str, str] = {
    "workflow": "invoke_workflow",
    "agent": "invoke_agent",
    "tool": "execute_tool",
    "task": "task",
}

#: Span names that carry the operation when no attribute does.
SPAN_NAME_OPERATIONS: dict[str, str] = {
    "openai.chat": "chat",
    "openai.completion": "text_completion",
    "openai.embeddings": "embeddings",
    "openai.response": "chat",
    "ChatCompletion": "chat",
    "Completion": "text_completion",
    "CreateEmbeddings": "embeddings",
    "Embeddings": "embeddings",
}


def as_str(value: Any) -> str | None:
    """A non-empty string, or None."""
    if isinstance(value, str) and value:
        return value
    return None


def as_int(value: Any) -> int | None:
    """A non-negative integer that fits int64 (ints, integral floats, digit strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        result = value
    elif isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return None
        result = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text.isdigit() or len(text) > 19:
            return None
        result = int(text)
    else:
        return None
    if result < 0 or result > _INT64_MAX:
        return None
    return result


def as_float(value: Any) -> float | None:
    """A finite float (ints, floats, numeric strings), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            result = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str):
        try:
            result = float(value)
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def as_bool(value: Any) -> bool | None:
    """A boolean (also from "true"/"false" strings), or None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low == "true":
            return True
        if low == "false":
            return False
    return None


def as_str_list(value: Any) -> list[str] | None:
    """A list of non-empty strings from a list, a scalar string, or a JSON array string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            parsed = parse_json(text)
            if isinstance(parsed, list):
                value = parsed
            else:
                return [text] if text else None
        else:
            return [text] if text else None
    if isinstance(value, (list, tuple)):
        out = [v for v in value if isinstance(v, str) and v]
        return out or None
    return None


def parse_json(value: Any) -> Any:
    """The JSON value of a string (None when it is not JSON); non-strings pass through."""
    if not isinstance(value, (str, bytes)):
        return value
    try:
        return orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None


def provider(value: Any) -> str | None:
    """The convention's provider name for any spelling of it."""
    text = as_str(value)
    if text is None:
        return None
    low = text.strip().lower()
    if low in KNOWN_PROVIDERS:
        return low
    return _PROVIDER_ALIASES.get(low, low) or None


def operation(value: Any) -> str | None:
    """The convention's operation name for any dialect's spelling of it."""
    text = as_str(value)
    if text is None:
        return None
    low = text.strip().lower()
    return _OPERATIONS.get(low, low) or None


def finish_reason(value: Any) -> str | None:
    """The convention's finish reason for any producer's spelling of it."""
    text = as_str(value)
    if text is None:
        return None
    low = text.strip().lower()
    return _FINISH_REASONS.get(low, low) or None


def finish_reasons(raw: list[str] | None) -> list[str] | None:
    """Normalized finish reasons, position by position (one per choice)."""
    if not raw:
        return None
    out = [finish_reason(r) for r in raw]
    return [r for r in out if r is not None] or None
