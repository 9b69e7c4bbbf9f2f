"""`InferenceCall`: one LLM call in provider-neutral form, named like the GenAI conventions.

Produced by the provider parsers (`agent.genai.providers.*`) from an `HttpExchange`; consumed by
the agent's OpenTelemetry output. Durations are seconds measured from wire timestamps; content
fields are filled only when content capture is enabled, and are redacted before export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class InferenceCall:
    """Everything the wire tells about one call."""

    provider: str  # gen_ai.provider.name value, e.g. "openai", "anthropic", "ollama", "vllm"
    operation: str  # gen_ai.operation.name value: chat, text_completion, embeddings, ...
    api: str  # parser that recognised it, e.g. "openai.chat_completions", "ollama.chat"
    request_model: str | None = None
    response_model: str | None = None
    response_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    finish_reasons: list[str] = field(default_factory=list)
    streaming: bool = False
    http_status: int | None = None
    error_type: str | None = None
    time_to_first_chunk_s: float | None = None
    time_per_output_chunk_s: list[float] = field(default_factory=list)
    duration_s: float | None = None
    request_max_tokens: int | None = None
    request_temperature: float | None = None
    request_top_p: float | None = None
    server_address: str | None = None
    server_port: int | None = None
    traceparent: str | None = None
    request_id: str | None = None  # provider request-id header (x-request-id, request-id)
    input_messages: list[dict[str, Any]] | None = None
    output_messages: list[dict[str, Any]] | None = None
    system_instructions: list[dict[str, Any]] | None = None
    # Part of the request or response was not captured (cut capture, missing response, a stream
    # that ended before its terminal event, a body that only parsed as a prefix): the fields
    # above hold what could be read.
    truncated: bool = False
    cache_creation_input_tokens: int | None = None  # subset of input_tokens (cache writes)
    request_top_k: float | None = None
    request_seed: int | None = None
    request_frequency_penalty: float | None = None
    request_presence_penalty: float | None = None
    request_choice_count: int | None = None
    request_stop_sequences: list[str] = field(default_factory=list)
    output_type: str | None = None  # gen_ai.output.type: text, json, ...
    matched_stop: str | None = None  # stop string or token id that ended generation, when sent
    response_service_tier: str | None = None
    response_system_fingerprint: str | None = None
    embeddings_dimension_count: int | None = None
