"""Ollama's native API: `POST /api/chat`, `/api/generate`, `/api/embed` (legacy `/api/embeddings`).

Takes an `HttpExchange`; `matches` says whether it is one of these calls (path AND payload shape:
a request object with `messages` / `prompt` / `input`, or a response object carrying Ollama's
`created_at` + `done` / `embeddings` fields); `parse` gives an `InferenceCall` with provider
`ollama` and operation `chat`, `text_completion` or `embeddings`. A response
whose first object belongs to another API vetoes the match.

Chat and generate stream by default (NDJSON, one object per line, no `data:` prefix, no
`[DONE]`); the last object has `"done": true`, `done_reason`, `prompt_eval_count` (input tokens)
and `eval_count` (output tokens). Those counts are omitted by Ollama when zero: an absent count
is reported as unknown, not as zero. `"stream": false` gives one JSON object with the same fields.
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
    media_part,
    message,
    output_message,
    reasoning_part,
    text_part,
    tool_call_part,
    tool_response_part,
)
from agent.genai.wire import (
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

API_CHAT = "ollama.chat"
API_GENERATE = "ollama.generate"
API_EMBED = "ollama.embed"
APIS: tuple[str, ...] = (API_CHAT, API_GENERATE, API_EMBED)


def _api_for_path(path: str) -> str | None:
    if path_endswith(path, "api/chat"):
        return API_CHAT
    if path_endswith(path, "api/generate"):
        return API_GENERATE
    if path_endswith(path, "api/embed", "api/embeddings"):
        return API_EMBED
    return None


def _response_shape(api: str, first: object) -> bool | None:
    """True for this Ollama API's response, False for another API's, None when unknown."""
    if isinstance(first, list):
        return False
    if not isinstance(first, dict):
        return None
    if api == API_EMBED:
        if isinstance(first.get("embeddings"), list) or isinstance(first.get("embedding"), list):
            return True
    elif "created_at" in first:
        return ("message" if api == API_CHAT else "response") in first
    if "error" in first and not any(k in first for k in ("object", "type")):
        return None
    foreign = ("object", "type", "choices", "data", "generated_text", "token", "created_at")
    return False if any(k in first for k in foreign) else None


def matches(exchange: HttpExchange) -> bool:
    """An Ollama native call, by path and payload shape."""
    if not is_post(exchange):
        return False
    api = _api_for_path(request_path(exchange))
    if api is None:
        return False
    shape = _response_shape(api, first_response_value(exchange))
    if shape is False:
        return False
    req = request_json(exchange).value
    if isinstance(req, dict):
        if api == API_CHAT and isinstance(req.get("messages"), list):
            return True
        if api == API_GENERATE and isinstance(req.get("prompt"), str):
            return True
        if api == API_EMBED and "model" in req and ("input" in req or "prompt" in req):
            return True
    return shape is True


@dataclass(slots=True)
class _Output:
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    tool_calls: list[Part] = field(default_factory=list)


def parse(exchange: HttpExchange, content_mode: ContentMode) -> InferenceCall:
    """The call as far as the exchange tells it."""
    api = _api_for_path(request_path(exchange)) or API_CHAT
    operation = {API_CHAT: "chat", API_GENERATE: "text_completion"}.get(api, "embeddings")
    call = new_call(exchange, "ollama", operation, api)
    req_body = request_json(exchange)
    req = req_body.value
    call.truncated = call.truncated or req_body.partial
    call.request_model = jv.get_nonempty_str(req, "model")
    _request_options(call, req)
    if api == API_EMBED:
        _parse_embed(call, exchange)
        return call
    out = _Output()
    evs = events(exchange)
    if evs:
        done = False
        failed = False
        events_whole = True
        arrivals: list[int | None] = []
        for ev in evs:
            data = ev.data.strip()
            if not data:
                continue
            obj, complete = jv.loads(data)
            events_whole = events_whole and complete
            call.truncated = call.truncated or not complete
            if isinstance(obj, dict) and "error" in obj:
                failed = True
                set_error(call, jv.get_nonempty_str(obj, "error_type"))
                continue
            if _take(call, obj, out):
                arrivals.append(ev.arrival_mono_ns)
            done = done or jv.get_bool(obj, "done") is True
        if not done and not failed:
            call.truncated = True
        elif done and events_whole:
            forgive_cut_after_end(call, exchange)
        set_stream_timing(call, exchange, arrivals)
    else:
        body = response_json(exchange)
        call.truncated = call.truncated or body.partial
        if isinstance(body.value, dict) and "error" in body.value:
            set_error(call, None)
        else:
            _take(call, body.value, out)
    requested = jv.get_bool(req, "stream")
    if requested is None:
        # Ollama streams unless told not to; a cut request hides the flag, so trust the response.
        requested = True if req_body.complete and isinstance(req, dict) else bool(evs)
    call.streaming = requested
    if content_mode is not ContentMode.OFF:
        if api == API_CHAT:
            inputs = chat_messages(jv.get_list(req, "messages"))
            system = None
        else:
            inputs = _generate_prompt(req)
            instructions = jv.get_str(req, "system")
            system = [text_part(instructions)] if instructions else None
        outputs: list[Message] | None = None
        if out.text or out.thinking or out.tool_calls or call.finish_reasons:
            parts: list[Part] = []
            if out.thinking:
                parts.append(reasoning_part("".join(out.thinking)))
            if out.text:
                parts.append(text_part("".join(out.text)))
            parts.extend(out.tool_calls)
            finish = call.finish_reasons[0] if call.finish_reasons else None
            outputs = [output_message(parts, finish)]
        call.input_messages, call.output_messages, call.system_instructions = apply_mode(
            content_mode, inputs, outputs, system
        )
    return call


def _request_options(call: InferenceCall, req: object) -> None:
    options = jv.get_dict(req, "options")
    call.request_temperature = jv.get_float(options, "temperature")
    call.request_top_p = jv.get_float(options, "top_p")
    call.request_top_k = jv.get_float(options, "top_k")
    call.request_seed = jv.get_int(options, "seed")
    call.request_frequency_penalty = jv.get_float(options, "frequency_penalty")
    call.request_presence_penalty = jv.get_float(options, "presence_penalty")
    max_tokens = jv.get_int(options, "num_predict")
    call.request_max_tokens = max_tokens if max_tokens is not None and max_tokens >= 0 else None
    if options is not None:
        call.request_stop_sequences = jv.str_list(options.get("stop"))
    fmt = req.get("format") if isinstance(req, dict) else None
    if fmt == "json" or isinstance(fmt, dict):
        call.output_type = "json"


def _take(call: InferenceCall, obj: object, out: _Output) -> bool:
    """Add one response object; True when it carried generated output."""
    if not isinstance(obj, dict):
        return False
    call.response_model = call.response_model or jv.get_nonempty_str(obj, "model")
    produced = False
    msg = jv.get_dict(obj, "message")
    source = msg if msg is not None else obj
    text = jv.get_str(source, "content") if msg is not None else jv.get_str(obj, "response")
    if text:
        out.text.append(text)
        produced = True
    thinking = jv.get_str(source, "thinking")
    if thinking:
        out.thinking.append(thinking)
        produced = True
    for tool in jv.get_list(msg, "tool_calls") or []:
        fn = jv.get_dict(tool, "function") or {}
        out.tool_calls.append(
            tool_call_part(
                jv.get_str(tool, "id"), jv.get_str(fn, "name"), jv.bounded(fn.get("arguments"))
            )
        )
        produced = True
    if jv.get_bool(obj, "done") is True:
        reason = jv.get_nonempty_str(obj, "done_reason")
        if reason:
            call.finish_reasons = [reason]
        call.input_tokens = jv.get_count(obj, "prompt_eval_count")
        call.output_tokens = jv.get_count(obj, "eval_count")
    return produced


def _parse_embed(call: InferenceCall, exchange: HttpExchange) -> None:
    body = response_json(exchange)
    call.truncated = call.truncated or body.partial
    obj = body.value
    if isinstance(obj, dict) and "error" in obj:
        set_error(call, None)
        return
    call.response_model = jv.get_nonempty_str(obj, "model")
    call.input_tokens = jv.get_count(obj, "prompt_eval_count")
    vectors = jv.get_list(obj, "embeddings")
    first = vectors[0] if vectors else jv.get_list(obj, "embedding")
    if isinstance(first, list):
        call.embeddings_dimension_count = len(first)


def chat_messages(messages: list[object] | None) -> list[Message] | None:
    """Ollama chat `messages` in the convention's schema."""
    if messages is None:
        return None
    out: list[Message] = []
    for raw in messages:
        if not isinstance(raw, dict):
            continue
        role = jv.get_nonempty_str(raw, "role") or "user"
        content = jv.get_str(raw, "content")
        parts: list[Part] = []
        if role == "tool":
            parts.append(tool_response_part(None, content or ""))
        else:
            thinking = jv.get_str(raw, "thinking")
            if thinking:
                parts.append(reasoning_part(thinking))
            if content:
                parts.append(text_part(content))
        parts.extend(_images(raw))
        for tool in jv.get_list(raw, "tool_calls") or []:
            fn = jv.get_dict(tool, "function") or {}
            parts.append(
                tool_call_part(
                    jv.get_str(tool, "id"), jv.get_str(fn, "name"), jv.bounded(fn.get("arguments"))
                )
            )
        out.append(message(role, parts, jv.get_str(raw, "tool_name")))
    return out


def _images(obj: object) -> list[Part]:
    return [
        media_part("image", data=img)
        for img in jv.get_list(obj, "images") or []
        if isinstance(img, str)
    ]


def _generate_prompt(req: object) -> list[Message] | None:
    prompt = jv.get_str(req, "prompt")
    if prompt is None:
        return None
    return [message("user", [text_part(prompt), *_images(req)])]
