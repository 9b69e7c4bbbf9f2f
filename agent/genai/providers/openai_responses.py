"""OpenAI Responses API (`POST .../responses`).

Takes an `HttpExchange`; `matches` says whether it creates a response (path AND payload shape: a
request object with `input`, `model` or `previous_response_id`, or a response whose `object` is
`response` / a stream of `response.*` events); `parse` gives an `InferenceCall` with operation
`chat` (the API's chat-style use; `api` says `openai.responses`). A response
whose first object belongs to another API vetoes the match.

Streams are named SSE events whose data carries the same `type`; usage, status and the full
output come from the terminal event (`response.completed`, `response.incomplete`,
`response.failed`); if the stream was cut before it, output is rebuilt from the item and delta
events. Finish reasons are the raw terminal status (`completed`, `failed`, `cancelled`), or for
`incomplete` the provider's `incomplete_details.reason` (`max_output_tokens`,
`content_filter`). `instructions` become system instructions.
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
    generic_part,
    message,
    output_message,
    reasoning_part,
    text_part,
    tool_call_part,
    tool_response_part,
)
from agent.genai.providers import openai_compat as oc
from agent.genai.wire import (
    Event,
    events,
    first_response_value,
    is_post,
    new_call,
    path_endswith,
    request_json,
    request_path,
    response_json,
    set_error,
    set_stream_timing,
)

API = "openai.responses"
APIS: tuple[str, ...] = (API,)
_TERMINAL = ("response.completed", "response.incomplete", "response.failed", "response.cancelled")


def matches(exchange: HttpExchange) -> bool:
    """A Responses create request, by path and payload shape."""
    if not is_post(exchange) or not path_endswith(request_path(exchange), "responses"):
        return False
    shape = _response_shape(first_response_value(exchange))
    if shape is False:
        return False
    req = request_json(exchange).value
    if (
        isinstance(req, dict)
        and "messages" not in req
        and ("input" in req or "previous_response_id" in req or isinstance(req.get("prompt"), dict))
    ):
        return True
    return shape is True


def _response_shape(first: object) -> bool | None:
    """True for a Responses object or event, False for another API's, None when unknown."""
    if isinstance(first, list):
        return False
    if not isinstance(first, dict):
        return None
    kind, obj = first.get("type"), first.get("object")
    if obj == "response" or (isinstance(kind, str) and kind.startswith("response.")):
        return True
    if kind == "error" or obj == "error" or (obj is None and kind is None and "error" in first):
        return None
    foreign = ("object", "type", "created_at", "done", "generated_text", "token", "embeddings")
    return False if any(k in first for k in foreign) else None


@dataclass(slots=True)
class _Partial:
    """Output rebuilt from stream events when the terminal event never came."""

    items: dict[int, dict[str, object]] = field(default_factory=dict)
    finished: set[int] = field(default_factory=set)
    text: dict[int, list[str]] = field(default_factory=dict)
    reasoning: dict[int, list[str]] = field(default_factory=dict)
    arguments: dict[int, list[str]] = field(default_factory=dict)

    def output(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for index in sorted(self.items):
            item = dict(self.items[index])
            if index not in self.finished:
                kind = item.get("type")
                if kind == "message":
                    item["content"] = [
                        {"type": "output_text", "text": "".join(self.text.get(index, []))}
                    ]
                elif kind == "function_call":
                    item["arguments"] = "".join(self.arguments.get(index, []))
                elif kind == "reasoning":
                    item["summary"] = [
                        {"type": "summary_text", "text": "".join(self.reasoning.get(index, []))}
                    ]
            out.append(item)
        return out


def parse(exchange: HttpExchange, content_mode: ContentMode) -> InferenceCall:
    """The call as far as the exchange tells it."""
    call = new_call(exchange, "openai", "chat", API)
    req_body = request_json(exchange)
    req = req_body.value
    call.truncated = call.truncated or req_body.partial
    oc.apply_request(call, exchange, req)
    call.request_choice_count = None
    seen: list[object] = []
    final: dict[str, object] | None = None
    partial = _Partial()
    evs = events(exchange)
    if evs:
        final = _read_stream(call, exchange, evs, partial, seen)
    else:
        body = response_json(exchange)
        call.truncated = call.truncated or body.partial
        if jv.get_str(body.value, "object") == "response" or (
            isinstance(body.value, dict) and "output" in body.value
        ):
            final = body.value if isinstance(body.value, dict) else None
        elif oc.has_error(body.value):
            set_error(call, oc.error_type(body.value))
    if final is not None:
        seen.append(final)
        _apply_response(call, final)
    requested = oc.request_stream(req)
    call.streaming = requested if requested is not None else bool(evs)
    call.provider = oc.detect_provider(exchange, seen)
    if content_mode is not ContentMode.OFF:
        inputs = input_messages(req.get("input") if isinstance(req, dict) else None)
        instructions = jv.get_str(req, "instructions")
        system = [text_part(instructions)] if instructions else None
        items: list[object] | None = (
            jv.get_list(final, "output") if final is not None else list(partial.output())
        )
        outputs: list[Message] | None = None
        if items:
            finish = call.finish_reasons[0] if call.finish_reasons else None
            outputs = [output_message(_output_parts(items), finish)]
        call.input_messages, call.output_messages, call.system_instructions = apply_mode(
            content_mode, inputs, outputs, system
        )
    return call


def _apply_response(call: InferenceCall, resp: dict[str, object]) -> None:
    # The terminal response is authoritative (the served tier can differ from the created one).
    call.response_id = jv.get_nonempty_str(resp, "id") or call.response_id
    call.response_model = jv.get_nonempty_str(resp, "model") or call.response_model
    call.response_service_tier = jv.get_nonempty_str(resp, "service_tier") or (
        call.response_service_tier
    )
    oc.apply_response_meta(call, resp)
    usage = oc.read_usage(resp.get("usage"))
    if usage is not None:
        oc.apply_usage(call, usage)
    status = jv.get_nonempty_str(resp, "status")
    reason = jv.get_nonempty_str(jv.get_dict(resp, "incomplete_details"), "reason")
    if status == "incomplete" and reason:
        call.finish_reasons = [reason]
    elif status in ("completed", "failed", "cancelled", "incomplete"):
        call.finish_reasons = [status]
    error = jv.get_dict(resp, "error")
    if error is not None or status == "failed":
        set_error(call, jv.get_nonempty_str(error, "code") or jv.get_nonempty_str(error, "type"))


def _read_stream(
    call: InferenceCall,
    exchange: HttpExchange,
    evs: list[Event],
    partial: _Partial,
    seen: list[object],
) -> dict[str, object] | None:
    final: dict[str, object] | None = None
    failed = False
    output_arrivals: list[int | None] = []
    for ev in evs:
        data = ev.data.strip()
        if not data or data == b"[DONE]":
            continue
        obj, complete = jv.loads(data)
        call.truncated = call.truncated or not complete
        if not isinstance(obj, dict):
            continue
        kind = jv.get_str(obj, "type") or ev.event or ""
        if kind == "error" or ev.event == "error" or (not kind and oc.has_error(obj)):
            failed = True
            set_error(call, oc.error_type(obj))
            continue
        resp = jv.get_dict(obj, "response")
        if resp is not None:
            seen.append(resp)
            oc.apply_response_meta(call, resp)
            if kind in _TERMINAL:
                final = resp
        index = jv.get_int(obj, "output_index")
        item_event = kind in ("response.output_item.added", "response.output_item.done")
        if item_event and index is not None:
            item = jv.get_dict(obj, "item")
            if item is not None:
                partial.items[index] = item
                if kind.endswith(".done"):
                    partial.finished.add(index)
        delta = jv.get_str(obj, "delta")
        if kind.endswith(".delta") and delta:
            output_arrivals.append(ev.arrival_mono_ns)
            if index is not None:
                if kind == "response.output_text.delta":
                    partial.text.setdefault(index, []).append(delta)
                elif kind.startswith("response.reasoning"):
                    partial.reasoning.setdefault(index, []).append(delta)
                elif kind == "response.function_call_arguments.delta":
                    partial.arguments.setdefault(index, []).append(delta)
    if final is None and not failed:
        call.truncated = True
    set_stream_timing(call, exchange, output_arrivals)
    return final


def _output_parts(items: list[object]) -> list[Part]:
    parts: list[Part] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = jv.get_str(item, "type") or "unknown"
        if kind == "message":
            parts.extend(oc.content_parts(item.get("content")))
        elif kind == "reasoning":
            for key in ("summary", "content"):
                for piece in jv.get_list(item, key) or []:
                    text = jv.get_str(piece, "text")
                    if text:
                        parts.append(reasoning_part(text))
        elif kind in ("function_call", "custom_tool_call"):
            args = item.get("arguments", item.get("input"))
            parts.append(
                tool_call_part(
                    jv.get_str(item, "call_id") or jv.get_str(item, "id"),
                    jv.get_str(item, "name"),
                    jv.maybe_json(args) if isinstance(args, str) else None,
                )
            )
        else:
            parts.append(generic_part(kind))
    return parts


def input_messages(value: object) -> list[Message] | None:
    """Responses `input` (a string or a list of items) in the convention's schema."""
    if isinstance(value, str):
        return [message("user", [text_part(value)])]
    if not isinstance(value, list):
        return None
    out: list[Message] = []
    for item in value:
        if not isinstance(item, dict):
            continue
        kind = jv.get_str(item, "type")
        role = jv.get_nonempty_str(item, "role")
        if role is not None and kind in (None, "message"):
            out.append(message(role, oc.content_parts(item.get("content"))))
        elif kind in ("function_call", "custom_tool_call"):
            args = item.get("arguments", item.get("input"))
            out.append(
                message(
                    "assistant",
                    [
                        tool_call_part(
                            jv.get_str(item, "call_id"),
                            jv.get_str(item, "name"),
                            jv.maybe_json(args) if isinstance(args, str) else None,
                        )
                    ],
                )
            )
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            out.append(
                message(
                    "tool",
                    [
                        tool_response_part(
                            jv.get_str(item, "call_id"),
                            output if isinstance(output, str) else oc.text_of(output),
                        )
                    ],
                )
            )
        elif kind == "reasoning":
            texts = [jv.get_str(p, "text") for p in jv.get_list(item, "summary") or []]
            out.append(message("assistant", [reasoning_part(t) for t in texts if t]))
    return out
