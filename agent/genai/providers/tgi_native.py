"""Hugging Face TGI's native API: `POST /generate`, `/generate_stream` (and `/` with `inputs`).

Takes an `HttpExchange`; `matches` says whether it is one of these calls (path AND payload shape:
a request object with a string `inputs`, or a response with `generated_text` / a stream of
`token` events); `parse` gives an `InferenceCall` with provider `tgi`, operation
`text_completion`. TGI's OpenAI-compatible routes are handled by the OpenAI parsers. A response
whose first object belongs to another API vetoes the match.

Tokens: `details.input_length` / `details.generated_tokens` when the request asked for details,
else the `x-prompt-tokens` / `x-generated-tokens` response headers (non-streamed calls), else,
for a complete stream, the number of token events (TGI sends exactly one event per generated
token). Finish reason is `details.finish_reason` as sent (`length`, `eos_token`,
`stop_sequence`). Streams have no `[DONE]`: the event carrying `generated_text` ends them. The
native API does not name the model, so the models stay unknown.
"""

from __future__ import annotations

from agent.capture.exchange import HttpExchange
from agent.genai import jsonvalue as jv
from agent.genai.call import InferenceCall
from agent.genai.content import ContentMode, apply_mode, message, output_message, text_part
from agent.genai.providers import openai_compat as oc
from agent.genai.wire import (
    events,
    first_response_value,
    header_count,
    is_post,
    new_call,
    path_endswith,
    request_json,
    request_path,
    response_json,
    set_error,
    set_stream_timing,
)

API_GENERATE = "tgi.generate"
API_GENERATE_STREAM = "tgi.generate_stream"
APIS: tuple[str, ...] = (API_GENERATE, API_GENERATE_STREAM)


def _route(path: str) -> bool:
    if path_endswith(path, "api/generate"):  # Ollama's
        return False
    return path == "/" or path_endswith(path, "generate", "generate_stream")


def matches(exchange: HttpExchange) -> bool:
    """A TGI native generate call, by path and payload shape."""
    if not is_post(exchange) or not _route(request_path(exchange)):
        return False
    shape = _response_shape(first_response_value(exchange))
    if shape is False:
        return False
    req = request_json(exchange).value
    return (isinstance(req, dict) and isinstance(req.get("inputs"), str)) or shape is True


def _response_shape(first: object) -> bool | None:
    """True for a TGI generate response or token event, False for another API's, else None."""
    if isinstance(first, list):
        first = first[0] if first else None
    if not isinstance(first, dict):
        return None
    if "generated_text" in first or jv.get_dict(first, "token") is not None:
        return True
    if "error" in first and not any(k in first for k in ("object", "type")):
        return None
    foreign = ("object", "type", "choices", "created_at", "embeddings", "data", "message")
    return False if any(k in first for k in foreign) else None


def parse(exchange: HttpExchange, content_mode: ContentMode) -> InferenceCall:
    """The call as far as the exchange tells it."""
    path = request_path(exchange)
    req_body = request_json(exchange)
    req = req_body.value
    evs = events(exchange)
    streamed = (
        path_endswith(path, "generate_stream")
        or bool(evs)
        or (path == "/" and jv.get_bool(req, "stream") is True)
    )
    call = new_call(
        exchange, "tgi", "text_completion", API_GENERATE_STREAM if streamed else API_GENERATE
    )
    call.truncated = call.truncated or req_body.partial
    call.streaming = streamed
    params = jv.get_dict(req, "parameters")
    call.request_max_tokens = jv.get_count(params, "max_new_tokens")
    call.request_temperature = jv.get_float(params, "temperature")
    call.request_top_p = jv.get_float(params, "top_p")
    call.request_top_k = jv.get_float(params, "top_k")
    call.request_seed = jv.get_int(params, "seed")
    call.request_frequency_penalty = jv.get_float(params, "frequency_penalty")
    if params is not None:
        call.request_stop_sequences = jv.str_list(params.get("stop"))
    grammar = jv.get_dict(params, "grammar")
    if jv.get_str(grammar, "type") in ("json", "json_object"):
        call.output_type = "json"
    generated: str | None = None
    details: dict[str, object] | None = None
    if evs:
        texts: list[str] = []
        token_events = 0
        ended = False
        failed = False
        arrivals: list[int | None] = []
        for ev in evs:
            data = ev.data.strip()
            if not data:
                continue
            obj, complete = jv.loads(data)
            call.truncated = call.truncated or not complete
            if not isinstance(obj, dict):
                continue
            if "error" in obj:
                failed = True
                set_error(call, oc.error_type(obj))
                continue
            token = jv.get_dict(obj, "token")
            if token is not None:
                token_events += 1
                arrivals.append(ev.arrival_mono_ns)
                if jv.get_bool(token, "special") is not True:
                    texts.append(jv.get_str(token, "text") or "")
            final_text = jv.get_str(obj, "generated_text")
            if final_text is not None:
                generated = final_text
                details = jv.get_dict(obj, "details")
                ended = True
        if not ended and not failed:
            call.truncated = True
        if generated is None and texts:
            generated = "".join(texts)
        set_stream_timing(call, exchange, arrivals)
        if ended and details is None:
            call.output_tokens = token_events
    else:
        body = response_json(exchange)
        call.truncated = call.truncated or body.partial
        obj = body.value
        if isinstance(obj, list) and obj:  # the `/` route wraps the answer in a list
            obj = obj[0]
        if isinstance(obj, dict) and "error" in obj:
            set_error(call, oc.error_type(obj))
        elif isinstance(obj, dict):
            generated = jv.get_str(obj, "generated_text")
            details = jv.get_dict(obj, "details")
    if details is not None:
        reason = jv.get_nonempty_str(details, "finish_reason")
        if reason:
            call.finish_reasons = [reason]
        call.output_tokens = jv.get_count(details, "generated_tokens")
        call.input_tokens = jv.get_count(details, "input_length")
    headers = exchange.response_headers
    if call.input_tokens is None:
        call.input_tokens = header_count(headers, "x-prompt-tokens")
    if call.output_tokens is None:
        call.output_tokens = header_count(headers, "x-generated-tokens")
    if content_mode is not ContentMode.OFF:
        inputs = jv.get_str(req, "inputs")
        finish = call.finish_reasons[0] if call.finish_reasons else None
        if finish is None and call.error_type is None and not call.truncated:
            finish = "unknown"  # without `details` TGI does not say why it stopped
        call.input_messages, call.output_messages, call.system_instructions = apply_mode(
            content_mode,
            [message("user", [text_part(inputs)])] if inputs is not None else None,
            [output_message([text_part(generated)], finish)] if generated is not None else None,
            None,
        )
    return call
