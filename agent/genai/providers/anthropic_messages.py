"""Anthropic Messages API (`POST .../v1/messages`).

Takes an `HttpExchange`; `matches` says whether it is a Messages call (path AND payload shape: a
request object with `messages` and `max_tokens` or an `anthropic-version` header, or a response
of `type` `message` / a stream starting with `message_start`); `parse` gives an `InferenceCall`
with provider `anthropic`, operation `chat`. A response
whose first object belongs to another API vetoes the match.

Usage: Anthropic's `input_tokens` leaves out cached tokens, so input tokens are
`input_tokens + cache_read_input_tokens + cache_creation_input_tokens` (the convention's rule);
cache reads and writes are also kept apart. In streams, `message_start` gives the first counts
and every `message_delta` usage is cumulative and replaces them. Finish reason is `stop_reason`
as sent (`end_turn`, `max_tokens`, `tool_use`, ...); `stop_sequence` becomes `matched_stop`;
the top-level `system` becomes system instructions; `thinking` blocks become reasoning parts.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    media_part,
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
    forgive_cut_after_end,
    is_post,
    new_call,
    path_endswith,
    request_json,
    request_path,
    response_json,
    set_error,
    set_stream_timing,
)

API = "anthropic.messages"
APIS: tuple[str, ...] = (API,)


def matches(exchange: HttpExchange) -> bool:
    """A Messages request, by path and payload shape."""
    if not is_post(exchange) or not path_endswith(request_path(exchange), "messages"):
        return False
    shape = _response_shape(first_response_value(exchange))
    if shape is False:
        return False
    req = request_json(exchange).value
    if (
        isinstance(req, dict)
        and isinstance(req.get("messages"), list)
        and ("max_tokens" in req or "anthropic-version" in exchange.request_headers)
    ):
        return True
    return shape is True


def _response_shape(first: object) -> bool | None:
    """True for a Messages response or stream, False for another API's, None when unknown."""
    if isinstance(first, list):
        return False
    if not isinstance(first, dict):
        return None
    kind = first.get("type")
    if kind in ("message", "message_start"):
        return True
    if kind == "error":
        return None
    foreign = (
        "object",
        "type",
        "created_at",
        "done",
        "generated_text",
        "token",
        "choices",
        "embeddings",
    )
    if any(k in first for k in foreign):
        return False
    return None


@dataclass(slots=True)
class _Usage:
    input_tokens: int | None = None
    cache_read: int | None = None
    cache_creation: int | None = None
    output_tokens: int | None = None
    thinking_tokens: int | None = None

    def update(self, usage: object) -> None:
        """Take every count present; Anthropic's streamed counts are cumulative."""
        for attr, key in (
            ("input_tokens", "input_tokens"),
            ("cache_read", "cache_read_input_tokens"),
            ("cache_creation", "cache_creation_input_tokens"),
            ("output_tokens", "output_tokens"),
        ):
            value = jv.get_count(usage, key)
            if value is not None:
                setattr(self, attr, value)
        details = jv.get_dict(usage, "output_tokens_details")
        thinking = jv.get_count(details, "thinking_tokens")
        if thinking is None:
            thinking = jv.get_count(details, "reasoning_tokens")
        if thinking is not None:
            self.thinking_tokens = thinking

    def apply(self, call: InferenceCall) -> None:
        present = [
            v for v in (self.input_tokens, self.cache_read, self.cache_creation) if v is not None
        ]
        call.input_tokens = sum(present) if present else None
        call.cached_input_tokens = self.cache_read
        call.cache_creation_input_tokens = self.cache_creation
        call.output_tokens = self.output_tokens
        call.reasoning_output_tokens = self.thinking_tokens


@dataclass(slots=True)
class _Block:
    kind: str
    start: dict[str, object] = field(default_factory=dict)
    pieces: list[str] = field(default_factory=list)

    def finished(self) -> dict[str, object]:
        """The block as a non-streamed response would carry it."""
        block = dict(self.start)
        joined = "".join(self.pieces)
        if self.kind == "text":
            block["text"] = str(block.get("text") or "") + joined
        elif self.kind == "thinking":
            block["thinking"] = str(block.get("thinking") or "") + joined
        elif self.kind in ("tool_use", "server_tool_use") and self.pieces:
            block["input"] = jv.maybe_json(joined)
        return block


def parse(exchange: HttpExchange, content_mode: ContentMode) -> InferenceCall:
    """The call as far as the exchange tells it."""
    call = new_call(exchange, "anthropic", "chat", API)
    req_body = request_json(exchange)
    req = req_body.value
    call.truncated = call.truncated or req_body.partial
    call.request_model = jv.get_nonempty_str(req, "model")
    call.request_max_tokens = jv.get_count(req, "max_tokens")
    call.request_temperature = jv.get_float(req, "temperature")
    call.request_top_p = jv.get_float(req, "top_p")
    call.request_top_k = jv.get_float(req, "top_k")
    if isinstance(req, dict):
        call.request_stop_sequences = jv.str_list(req.get("stop_sequences"))
    usage = _Usage()
    blocks: list[dict[str, object]] | None = None
    evs = events(exchange)
    if evs:
        blocks = _read_stream(call, exchange, evs, usage)
    else:
        body = response_json(exchange)
        call.truncated = call.truncated or body.partial
        obj = body.value
        if oc.has_error(obj):
            set_error(call, oc.error_type(obj))
        elif isinstance(obj, dict):
            _take_message(call, obj, usage)
            content = jv.get_list(obj, "content")
            blocks = [b for b in content if isinstance(b, dict)] if content is not None else None
    usage.apply(call)
    requested = jv.get_bool(req, "stream")
    call.streaming = requested if requested is not None else bool(evs)
    if content_mode is not ContentMode.OFF:
        inputs = input_messages(jv.get_list(req, "messages"))
        system = system_instructions(req.get("system") if isinstance(req, dict) else None)
        outputs: list[Message] | None = None
        if blocks is not None:
            finish = call.finish_reasons[0] if call.finish_reasons else None
            outputs = [output_message(_blocks_to_parts(blocks), finish)]
        call.input_messages, call.output_messages, call.system_instructions = apply_mode(
            content_mode, inputs, outputs, system
        )
    return call


def _take_message(call: InferenceCall, msg: dict[str, object], usage: _Usage) -> None:
    call.response_id = call.response_id or jv.get_nonempty_str(msg, "id")
    call.response_model = call.response_model or jv.get_nonempty_str(msg, "model")
    _take_stop(call, msg)
    usage.update(msg.get("usage"))
    tier = jv.get_nonempty_str(jv.get_dict(msg, "usage"), "service_tier")
    call.response_service_tier = call.response_service_tier or tier


def _take_stop(call: InferenceCall, obj: object) -> None:
    reason = jv.get_nonempty_str(obj, "stop_reason")
    if reason:
        call.finish_reasons = [reason]
    sequence = jv.get_nonempty_str(obj, "stop_sequence")
    if sequence:
        call.matched_stop = sequence


def _read_stream(
    call: InferenceCall, exchange: HttpExchange, evs: list[Event], usage: _Usage
) -> list[dict[str, object]]:
    blocks: dict[int, _Block] = {}
    stopped = False
    failed = False
    events_whole = True
    output_arrivals: list[int | None] = []
    for ev in evs:
        data = ev.data.strip()
        if not data:
            continue
        obj, complete = jv.loads(data)
        events_whole = events_whole and complete
        call.truncated = call.truncated or not complete
        if not isinstance(obj, dict):
            continue
        kind = jv.get_str(obj, "type") or ev.event or ""
        if kind == "error" or ev.event == "error":
            failed = True
            set_error(call, oc.error_type(obj))
        elif kind == "message_start":
            _take_message(call, jv.get_dict(obj, "message") or {}, usage)
        elif kind == "content_block_start":
            index = jv.get_int(obj, "index")
            start = jv.get_dict(obj, "content_block") or {}
            if index is not None:
                blocks[index] = _Block(jv.get_str(start, "type") or "unknown", dict(start))
        elif kind == "content_block_delta":
            index = jv.get_int(obj, "index")
            delta = jv.get_dict(obj, "delta") or {}
            piece = (
                jv.get_str(delta, "text")
                or jv.get_str(delta, "thinking")
                or jv.get_str(delta, "partial_json")
            )
            if piece:
                output_arrivals.append(ev.arrival_mono_ns)
                if index is not None:
                    block = blocks.setdefault(index, _Block(_kind_of_delta(delta)))
                    block.pieces.append(piece)
        elif kind == "message_delta":
            _take_stop(call, jv.get_dict(obj, "delta"))
            usage.update(obj.get("usage"))
        elif kind == "message_stop":
            stopped = True
    if not stopped and not failed:
        call.truncated = True
    elif stopped and events_whole:
        forgive_cut_after_end(call, exchange)
    set_stream_timing(call, exchange, output_arrivals)
    return [blocks[i].finished() for i in sorted(blocks)]


def _kind_of_delta(delta: dict[str, object]) -> str:
    kind = jv.get_str(delta, "type")
    return {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "tool_use"}.get(
        kind or "", "unknown"
    )


def _blocks_to_parts(blocks: Sequence[object]) -> list[Part]:
    parts: list[Part] = []
    for block in blocks:
        if isinstance(block, str):
            parts.append(text_part(block))
            continue
        if not isinstance(block, dict):
            continue
        kind = jv.get_str(block, "type") or "unknown"
        if kind == "text":
            parts.append(text_part(jv.get_str(block, "text") or ""))
        elif kind == "thinking":
            parts.append(reasoning_part(jv.get_str(block, "thinking") or ""))
        elif kind == "tool_use":
            parts.append(
                tool_call_part(
                    jv.get_str(block, "id"),
                    jv.get_str(block, "name"),
                    jv.bounded(block.get("input")),
                )
            )
        elif kind == "server_tool_use":
            part: Part = {
                "type": "server_tool_call",
                "name": jv.get_str(block, "name") or "",
                "server_tool_call": {
                    "type": jv.get_str(block, "name") or "unknown",
                    "input": jv.bounded(block.get("input")),
                },
            }
            block_id = jv.get_str(block, "id")
            if block_id:
                part["id"] = block_id
            parts.append(part)
        elif kind == "tool_result":
            content = block.get("content")
            response: object = content if isinstance(content, str) else _text_of(content)
            parts.append(tool_response_part(jv.get_str(block, "tool_use_id"), response))
        elif kind in ("image", "document"):
            parts.append(_media(kind, jv.get_dict(block, "source")))
        else:
            parts.append(generic_part(kind))
    return parts


def _media(kind: str, source: dict[str, object] | None) -> Part:
    modality = "image" if kind == "image" else "document"
    source_type = jv.get_str(source, "type")
    if source_type == "text":
        return text_part(jv.get_str(source, "data") or "")
    return media_part(
        modality,
        url=jv.get_str(source, "url"),
        data=jv.get_str(source, "data") if source_type == "base64" else None,
        mime_type=jv.get_str(source, "media_type"),
        file_id=jv.get_str(source, "file_id"),
    )


def _text_of(content: object) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(jv.get_str(b, "text") or "" for b in content if jv.get_str(b, "type") == "text")


def input_messages(messages: list[object] | None) -> list[Message] | None:
    """Anthropic `messages` in the convention's schema (a tool result keeps the user role)."""
    if messages is None:
        return None
    out: list[Message] = []
    for raw in messages:
        if not isinstance(raw, dict):
            continue
        role = jv.get_nonempty_str(raw, "role") or "user"
        content = raw.get("content")
        blocks: list[object] = (
            [content]
            if isinstance(content, str)
            else (content if isinstance(content, list) else [])
        )
        out.append(message(role, _blocks_to_parts(blocks)))
    return out


def system_instructions(system: object) -> list[Part] | None:
    """Anthropic's top-level `system` (a string or text blocks) as instruction parts."""
    if isinstance(system, str):
        return [text_part(system)] if system else None
    if isinstance(system, list):
        return _blocks_to_parts(system) or None
    return None
