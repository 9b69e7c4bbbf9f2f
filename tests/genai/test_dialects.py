"""Dialect forms the current library releases no longer emit (older OpenLLMetry, OpenLIT and
semantic-convention versions), value rewrites, and the log-record events.

The attribute sets follow the producers' own attribute definitions: OpenLLMetry
`opentelemetry-semantic-conventions-ai` before 0.5 (`SpanAttributes`), OpenLIT's `semcov`
before its move to the conventions, OpenInference's `SpanAttributes`, and the GenAI
conventions v1.26 to v1.41 (see the research notes on the conventions).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from collector.genai.normalize import content_from_log_event, normalize_span


def norm(
    attrs: dict[str, Any],
    name: str = "span",
    events: list[tuple[Any, ...]] | None = None,
    start: int | None = None,
) -> Any:
    out = normalize_span(attrs, name, events or [], start)
    assert out is not None
    return out


def test_openllmetry_legacy_indexed_prompts_and_completions() -> None:
    attrs = {
        "llm.request.type": "chat",
        "gen_ai.system": "OpenAI",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.id": "chatcmpl-9",
        "gen_ai.usage.prompt_tokens": 21,
        "gen_ai.usage.completion_tokens": 7,
        "llm.usage.total_tokens": 28,
        "gen_ai.usage.cache_read_input_tokens": 8,
        "gen_ai.usage.cache_creation_input_tokens": 4,
        "llm.is_streaming": True,
        "gen_ai.openai.api_base": "https://api.openai.com/v1/",
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "Be brief.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "Weather in Paris?",
        "gen_ai.prompt.2.role": "assistant",
        "gen_ai.prompt.2.tool_calls.0.id": "call_1",
        "gen_ai.prompt.2.tool_calls.0.name": "get_weather",
        "gen_ai.prompt.2.tool_calls.0.arguments": '{"city": "Paris"}',
        "gen_ai.prompt.3.role": "tool",
        "gen_ai.prompt.3.content": "rainy",
        "gen_ai.prompt.3.tool_call_id": "call_1",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "It rains.",
        "gen_ai.completion.0.finish_reason": "stop",
    }
    out = norm(attrs, "openai.chat")
    assert out.dialect == "openllmetry_legacy"
    c = out.columns
    assert c["gen_ai_operation_name"] == "chat"
    assert c["gen_ai_provider_name"] == "openai"
    assert c["gen_ai_usage_input_tokens"] == 21
    assert c["gen_ai_usage_output_tokens"] == 7
    assert c["gen_ai_usage_cache_read_input_tokens"] == 8
    assert c["gen_ai_usage_cache_creation_input_tokens"] == 4
    assert c["gen_ai_request_stream"] is True
    assert c["gen_ai_response_finish_reasons"] == ["stop"]
    assert (c["server_address"], c["server_port"]) == ("api.openai.com", 443)
    assert out.total_tokens == 28
    content = out.content
    assert content.input_messages == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "name": "get_weather",
                    "id": "call_1",
                    "arguments": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "response": "rainy", "id": "call_1"}],
        },
    ]
    assert content.output_messages == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "It rains."}],
            "finish_reason": "stop",
        }
    ]


def test_openllmetry_before_2024_llm_prefix() -> None:
    attrs = {
        "llm.vendor": "Azure",
        "llm.request.type": "completion",
        "llm.request.model": "davinci",
        "llm.response.model": "davinci-002",
        "llm.usage.prompt_tokens": 3,
        "llm.usage.completion_tokens": 5,
        "llm.temperature": 0.2,
        "llm.top_p": 1,
        "llm.request.max_tokens": 64,
        "llm.prompts.0.role": "user",
        "llm.prompts.0.content": "Hi",
        "llm.completions.0.content": "Hello there",
        "llm.completions.0.finish_reason": "length",
    }
    out = norm(attrs, "openai.completion")
    c = out.columns
    assert out.dialect == "openllmetry_legacy"
    assert c["gen_ai_operation_name"] == "text_completion"
    assert c["gen_ai_provider_name"] == "azure.ai.openai"
    assert c["gen_ai_request_model"] == "davinci"
    assert c["gen_ai_response_model"] == "davinci-002"
    assert (c["gen_ai_usage_input_tokens"], c["gen_ai_usage_output_tokens"]) == (3, 5)
    assert c["gen_ai_request_temperature"] == 0.2
    assert c["gen_ai_request_top_p"] == 1.0
    assert c["gen_ai_request_max_tokens"] == 64
    assert c["gen_ai_response_finish_reasons"] == ["length"]
    assert out.content.output_messages[0]["parts"][0]["content"] == "Hello there"


def test_openlit_legacy_flattened_strings() -> None:
    attrs = {
        "gen_ai.system": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.application_name": "demo",
        "gen_ai.environment": "prod",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.request.is_stream": False,
        "gen_ai.endpoint": "http://10.0.0.5:8000/v1",
        "gen_ai.prompt": "system: Be brief.\nuser: Name a color.",
        "gen_ai.completion": "Blue.",
    }
    out = norm(attrs, "openai.chat.completions")
    assert out.dialect == "openlit_legacy"
    assert out.columns["server_address"] == "10.0.0.5"
    assert out.columns["server_port"] == 8000
    assert out.content.input_messages == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Name a color."}]},
    ]
    assert out.content.output_messages == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Blue."}]}
    ]


def test_semconv_1_26_content_span_events() -> None:
    attrs = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4",
        "gen_ai.usage.prompt_tokens": 9,
        "gen_ai.usage.completion_tokens": 2,
    }
    events = [
        ("gen_ai.content.prompt", {"gen_ai.prompt": '[{"role": "user", "content": "Hi"}]'}),
        ("gen_ai.content.completion", {"gen_ai.completion": "Hello"}),
    ]
    out = norm(attrs, "chat gpt-4", events)
    assert out.dialect == "otel_genai_legacy"
    assert out.columns["gen_ai_usage_input_tokens"] == 9
    assert out.content.origin == "span_events"
    assert out.content.input_messages == [
        {"role": "user", "parts": [{"type": "text", "content": "Hi"}]}
    ]
    assert out.content.output_messages == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello"}]}
    ]


def test_current_conventions_ttfc_and_structured_content() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-x",
        "gen_ai.response.time_to_first_chunk": 0.42,
        "gen_ai.usage.cache_write.input_tokens": 30,
        "gen_ai.usage.reasoning.output_tokens": 11,
        "gen_ai.response.finish_reasons": ["end_turn"],
        "gen_ai.conversation.id": "conv-1",
        "gen_ai.agent.name": "helper",
        "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "x"}]}],
        "gen_ai.system_instructions": '[{"type": "text", "content": "Be nice."}]',
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [], "finish_reason": "tool_use"}]
        ),
    }
    out = norm(attrs, "chat claude-x")
    c = out.columns
    assert out.dialect == "otel_genai"
    assert c["gen_ai_response_time_to_first_chunk"] == 0.42
    assert c["gen_ai_request_stream"] is True
    assert c["gen_ai_usage_cache_creation_input_tokens"] == 30
    assert c["gen_ai_usage_reasoning_output_tokens"] == 11
    assert c["gen_ai_response_finish_reasons"] == ["stop"]
    assert out.finish_reasons_raw == ["end_turn"]
    assert c["gen_ai_conversation_id"] == "conv-1"
    assert c["gen_ai_agent_name"] == "helper"
    assert out.content.system_instructions == [{"type": "text", "content": "Be nice."}]
    assert out.content.output_messages[0]["finish_reason"] == "tool_call"


def test_openlit_non_stream_ttft_is_not_a_first_chunk() -> None:
    base = {
        "telemetry.sdk.name": "openlit",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.server.time_to_first_token": 1.5,
    }
    assert (
        "gen_ai_response_time_to_first_chunk"
        not in norm({**base, "gen_ai.request.stream": False}).columns
    )
    assert (
        norm({**base, "gen_ai.request.stream": True}).columns["gen_ai_response_time_to_first_chunk"]
        == 1.5
    )


def test_ttfc_from_first_chunk_event_needs_times() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.is_streaming": True,
    }
    start = 1_000_000_000
    events = [
        ("gen_ai.content.completion.chunk", {}, start + 300_000_000),
        ("gen_ai.content.completion.chunk", {}, start + 310_000_000),
    ]
    assert norm(attrs, "openai.chat", events, start).columns[
        "gen_ai_response_time_to_first_chunk"
    ] == pytest.approx(0.3)
    without_times = [(n, a) for n, a, _ in events]
    assert (
        "gen_ai_response_time_to_first_chunk"
        not in norm(attrs, "openai.chat", without_times, start).columns
    )


@pytest.mark.parametrize(
    ("system", "provider"),
    [
        ("az.ai.openai", "azure.ai.openai"),
        ("az.ai.inference", "azure.ai.inference"),
        ("xai", "x_ai"),
        ("vertex_ai", "gcp.vertex_ai"),
        ("gemini", "gcp.gemini"),
        ("ibm.watson.ai", "ibm.watsonx.ai"),
        ("mistralai", "mistral_ai"),
        ("OpenAI", "openai"),
        ("vLLM", "vllm"),
        ("ollama", "ollama"),
    ],
)
def test_provider_rewrites(system: str, provider: str) -> None:
    out = norm({"gen_ai.system": system, "gen_ai.operation.name": "chat"})
    assert out.columns["gen_ai_provider_name"] == provider


@pytest.mark.parametrize(
    ("llm_system", "llm_provider", "provider"),
    [
        ("openai", "azure", "azure.ai.openai"),
        ("openai", "openai", "openai"),
        ("anthropic", "aws", "aws.bedrock"),
        ("vertexai", "google", "gcp.gen_ai"),
        ("mistralai", None, "mistral_ai"),
    ],
)
def test_openinference_provider(llm_system: str, llm_provider: str | None, provider: str) -> None:
    attrs = {"openinference.span.kind": "LLM", "llm.system": llm_system}
    if llm_provider:
        attrs["llm.provider"] = llm_provider
    assert norm(attrs, "ChatCompletion").columns["gen_ai_provider_name"] == provider


@pytest.mark.parametrize(
    ("kind", "op"),
    [
        ("LLM", "chat"),
        ("EMBEDDING", "embeddings"),
        ("RETRIEVER", "retrieval"),
        ("TOOL", "execute_tool"),
        ("AGENT", "invoke_agent"),
        ("CHAIN", "invoke_workflow"),
    ],
)
def test_openinference_span_kinds(kind: str, op: str) -> None:
    attrs = {
        "openinference.span.kind": kind,
        "tool.name": "search",
        "agent.name": "bot",
        "session.id": "s1",
    }
    c = norm(attrs, "x").columns
    assert c["gen_ai_operation_name"] == op
    assert c["gen_ai_conversation_id"] == "s1"
    assert c["gen_ai_agent_name"] == "bot"
    assert c.get("gen_ai_tool_name") == ("search" if op == "execute_tool" else None)


def test_openinference_image_and_tool_messages() -> None:
    attrs = {
        "openinference.span.kind": "LLM",
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.contents.0.message_content.type": "text",
        "llm.input_messages.0.message.contents.0.message_content.text": "What is this?",
        "llm.input_messages.0.message.contents.1.message_content.type": "image",
        "llm.input_messages.0.message.contents.1.message_content.image.image.url": "http://i/x.png",
        "llm.input_messages.1.message.role": "tool",
        "llm.input_messages.1.message.content": "42",
        "llm.input_messages.1.message.tool_call_id": "call_9",
    }
    msgs = norm(attrs, "ChatCompletion").content.input_messages
    assert msgs == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "What is this?"},
                {"type": "uri", "modality": "image", "uri": "http://i/x.png"},
            ],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "response": "42", "id": "call_9"}],
        },
    ]


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("tool_calls", "tool_call"),
        ("function_call", "tool_call"),
        ("tool_use", "tool_call"),
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("eos_token", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("content_filter", "content_filter"),
        ("pause_turn", "pause_turn"),
    ],
)
def test_finish_reason_rewrites(raw: str, canonical: str) -> None:
    out = norm({"gen_ai.operation.name": "chat", "gen_ai.response.finish_reasons": [raw]})
    assert out.columns["gen_ai_response_finish_reasons"] == [canonical]
    assert out.finish_reasons_raw == [raw]


def test_traceloop_workflow_and_agent_spans() -> None:
    wf = norm({"traceloop.span.kind": "workflow", "traceloop.workflow.name": "w"}, "w.workflow")
    assert wf.columns["gen_ai_operation_name"] == "invoke_workflow"
    agent = norm({"traceloop.span.kind": "agent", "traceloop.entity.name": "planner"}, "a")
    assert agent.columns["gen_ai_operation_name"] == "invoke_agent"
    assert agent.columns["gen_ai_agent_name"] == "planner"


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {
            "http.request.method": "POST",
            "url.full": "http://x/v1/chat/completions",
            "server.address": "x",
            "server.port": 80,
        },
        {"db.system": "postgresql", "db.statement": "select 1"},
        {"gen_ai_like": "no", "llm": "no"},
    ],
)
def test_other_spans_are_not_genai(attrs: dict[str, Any]) -> None:
    assert normalize_span(attrs, "POST /v1/chat/completions", []) is None


def test_token_values_are_coerced_or_dropped() -> None:
    c = norm(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": "12",
            "gen_ai.usage.output_tokens": 3.0,
            "gen_ai.usage.cache_read.input_tokens": -1,
            "gen_ai.usage.reasoning.output_tokens": True,
            "server.port": "99999",
            "gen_ai.request.temperature": "NaN",
        }
    ).columns
    assert c["gen_ai_usage_input_tokens"] == 12
    assert c["gen_ai_usage_output_tokens"] == 3
    for key in (
        "gen_ai_usage_cache_read_input_tokens",
        "gen_ai_usage_reasoning_output_tokens",
        "server_port",
        "gen_ai_request_temperature",
    ):
        assert key not in c


# --- log-record events ---------------------------------------------------------------------


def test_legacy_message_events() -> None:
    sys_ = content_from_log_event(
        "gen_ai.system.message", {"gen_ai.system": "openai"}, {"content": "Be brief."}
    )
    assert sys_.input_messages == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]}
    ]
    assistant = content_from_log_event(
        "gen_ai.assistant.message",
        {},
        {
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
            ]
        },
    )
    assert assistant.input_messages == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "name": "f", "id": "c1", "arguments": {"a": 1}}],
        }
    ]
    tool = content_from_log_event("gen_ai.tool.message", {}, {"content": "42", "id": "c1"})
    assert tool.input_messages == [
        {"role": "tool", "parts": [{"type": "tool_call_response", "response": "42", "id": "c1"}]}
    ]
    choice = content_from_log_event(
        "gen_ai.choice",
        {},
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {"role": "assistant"},
            "tool_calls": [{"id": "c2", "function": {"name": "g"}}],
        },
    )
    assert choice.output_messages == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "name": "g", "id": "c2"}],
            "finish_reason": "tool_call",
        }
    ]
    assert all(x.origin == "log_events" for x in (sys_, assistant, tool, choice))


def test_message_event_without_content_is_not_content() -> None:
    assert content_from_log_event("gen_ai.user.message", {"gen_ai.system": "openai"}, {}) is None
    assert content_from_log_event("gen_ai.user.message", {}, None) is None


def test_inference_details_event_in_body_or_attributes() -> None:
    msgs = [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    by_attr = content_from_log_event(
        "gen_ai.client.inference.operation.details", {"gen_ai.input.messages": msgs}, None
    )
    by_body = content_from_log_event(
        "gen_ai.client.inference.operation.details",
        {},
        {
            "gen_ai.input.messages": msgs,
            "gen_ai.tool.definitions": [{"type": "function", "name": "f"}],
        },
    )
    assert by_attr.input_messages == msgs
    assert by_body.input_messages == msgs
    assert by_body.tool_definitions == [{"type": "function", "name": "f"}]


def test_unrelated_log_events() -> None:
    assert content_from_log_event("app.log", {}, "hello") is None
    assert content_from_log_event("gen_ai.evaluation.result", {}, {"x": 1}) is None
    assert content_from_log_event("", {}, None) is None
