"""OpenAI Chat Completions (`POST .../chat/completions`) and the servers that speak it.

Takes an `HttpExchange`; `matches` says whether it is a Chat Completions call (path AND payload
shape: a request object with a `messages` array, or a response whose `object` is
`chat.completion` / `chat.completion.chunk`); `parse` gives an `InferenceCall` with operation
`chat`. One parser serves OpenAI, Azure OpenAI, vLLM, TGI's and Ollama's OpenAI-compatible
routes; the provider name comes from the wire (see `openai_compat`). A response
whose first object belongs to another API vetoes the match.

Streams: usage is taken from the last chunk that carries one (OpenAI's final `choices: []`
chunk, or vLLM's cumulative `continuous_usage_stats` usage on every chunk); text, reasoning
(vLLM `reasoning` / `reasoning_content`), refusals and tool-call fragments are joined per choice;
vLLM's `stop_reason` becomes `matched_stop`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.capture.exchange import HttpExchange
from agent.genai import jsonvalue as jv
from agent.genai.call import InferenceCall
from agent.genai.content import (
    ContentMode,
    Message,
    Part,
    apply_mode,
    message,
    output_message,
    reasoning_part,
    tool_call_part,
    tool_response_part,
)
from agent.genai.providers import openai_compat as oc
from agent.genai.wire import (
    first_response_value,
    is_post,
    new_call,
    path_endswith,
    request_json,
    request_path,
)

API = "openai.chat_completions"
APIS: tuple[str, ...] = (API,)
_OBJECTS = ("chat.completion", "chat.completion.chunk")


def matches(exchange: HttpExchange) -> bool:
    """A Chat Completions request, by path and payload shape."""
    if not is_post(exchange) or not path_endswith(request_path(exchange), "chat/completions"):
        return False
    shape = oc.response_shape(first_response_value(exchange), _OBJECTS)
    if shape is False:
        return False
    req = request_json(exchange).value
    return (isinstance(req, dict) and isinstance(req.get("messages"), list)) or shape is True


@dataclass(slots=True)
class _ToolCall:
    call_id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Choice:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tools: dict[int, _ToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    stop: str | None = None


def parse(exchange: HttpExchange, content_mode: ContentMode) -> InferenceCall:
    """The call as far as the exchange tells it."""
    call = new_call(exchange, "openai", "chat", API)
    choices: dict[int, _Choice] = {}
    req = oc.read_exchange(call, exchange, lambda obj: _take_choices(obj, choices))
    ordered = [choices[i] for i in sorted(choices)]
    call.finish_reasons = [c.finish_reason for c in ordered if c.finish_reason]
    call.matched_stop = next((c.stop for c in ordered if c.stop), None)
    if content_mode is not ContentMode.OFF:
        inputs = input_messages(jv.get_list(req, "messages"))
        outputs = [_output(c) for c in ordered] if ordered else None
        call.input_messages, call.output_messages, call.system_instructions = apply_mode(
            content_mode, inputs, outputs, None
        )
    return call


def _take_choices(obj: dict[str, object], choices: dict[int, _Choice]) -> bool:
    """Fold a response body or stream chunk into `choices`; True when it carried output."""
    produced = False
    for pos, raw in enumerate(jv.get_list(obj, "choices") or []):
        if not isinstance(raw, dict):
            continue
        index = jv.get_int(raw, "index")
        choice = choices.setdefault(index if index is not None else pos, _Choice())
        delta = jv.get_dict(raw, "delta") or jv.get_dict(raw, "message") or {}
        produced = _take_delta(choice, delta) or produced
        finish = jv.get_nonempty_str(raw, "finish_reason")
        if finish:
            choice.finish_reason = finish
        stop = oc.stop_text(raw.get("stop_reason"))
        if stop:
            choice.stop = stop
    return produced


def _take_delta(choice: _Choice, delta: dict[str, object]) -> bool:
    """Add one message or delta to a choice; True when it carried generated output."""
    produced = False
    text = jv.get_str(delta, "content")
    if text:
        choice.text.append(text)
        produced = True
    for key in ("reasoning", "reasoning_content"):
        thought = jv.get_str(delta, key)
        if thought:
            choice.reasoning.append(thought)
            produced = True
            break
    refusal = jv.get_str(delta, "refusal")
    if refusal:
        choice.refusal.append(refusal)
        produced = True
    calls = jv.get_list(delta, "tool_calls") or []
    legacy = jv.get_dict(delta, "function_call")
    if legacy is not None:
        calls = [*calls, {"index": -1, "function": legacy}]
    for pos, raw in enumerate(calls):
        if not isinstance(raw, dict):
            continue
        index = jv.get_int(raw, "index")
        tool = choice.tools.setdefault(index if index is not None else pos, _ToolCall())
        tool.call_id = tool.call_id or jv.get_nonempty_str(raw, "id")
        fn = jv.get_dict(raw, "function") or {}
        name = jv.get_nonempty_str(fn, "name")
        if name:
            tool.name = tool.name or name  # sent whole, once (some servers repeat it)
            produced = True
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            tool.arguments.append(args)
            produced = True
        elif isinstance(args, dict):  # some compatible servers send decoded arguments
            tool.arguments.append(jv.dumps(args))
            produced = True
    return produced


def _output(choice: _Choice) -> Message:
    parts: list[Part] = []
    if choice.reasoning:
        parts.append(reasoning_part("".join(choice.reasoning)))
    if choice.text:
        parts.append({"type": "text", "content": "".join(choice.text)})
    if choice.refusal:
        parts.append({"type": "refusal", "content": "".join(choice.refusal)})
    for index in sorted(choice.tools):
        tool = choice.tools[index]
        parts.append(
            tool_call_part(
                tool.call_id,
                tool.name,
                jv.maybe_json("".join(tool.arguments)) if tool.arguments else None,
            )
        )
    return output_message(parts, choice.finish_reason)


def input_messages(messages: list[object] | None) -> list[Message] | None:
    """Chat Completions `messages` in the convention's schema (system messages stay in order)."""
    if messages is None:
        return None
    out: list[Message] = []
    for raw in messages:
        if not isinstance(raw, dict):
            continue
        role = jv.get_nonempty_str(raw, "role") or "user"
        content = raw.get("content")
        parts: list[Part]
        if role in ("tool", "function"):
            call_id = jv.get_str(raw, "tool_call_id")
            parts = [tool_response_part(call_id, oc.text_of(content))]
        else:
            parts = oc.content_parts(content)
        for tool in jv.get_list(raw, "tool_calls") or []:
            fn = jv.get_dict(tool, "function") or {}
            args = fn.get("arguments")
            parts.append(
                tool_call_part(
                    jv.get_str(tool, "id"),
                    jv.get_str(fn, "name"),
                    jv.maybe_json(args) if isinstance(args, str) else jv.bounded(args),
                )
            )
        legacy = jv.get_dict(raw, "function_call")
        if legacy is not None:
            args = legacy.get("arguments")
            parts.append(
                tool_call_part(
                    None,
                    jv.get_str(legacy, "name"),
                    jv.maybe_json(args) if isinstance(args, str) else None,
                )
            )
        out.append(message(role, parts, jv.get_str(raw, "name")))
    return out
