"""OpenAI legacy Completions (`POST .../completions`, not `.../chat/completions`).

Takes an `HttpExchange`; `matches` says whether it is a Completions call (path AND payload
shape: a request object with `prompt`, or a response whose `object` is `text_completion`);
`parse` gives an `InferenceCall` with operation `text_completion`. Serves OpenAI, vLLM, TGI and
Ollama's compatible routes; the provider comes from the wire (see `openai_compat`). Streams use
the same framing as chat (`data: ...`, `[DONE]`, optional final usage chunk, vLLM cumulative
usage and `stop_reason`). A response
whose first object belongs to another API vetoes the match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.capture.exchange import HttpExchange
from agent.genai import jsonvalue as jv
from agent.genai.call import InferenceCall
from agent.genai.content import ContentMode, Message, apply_mode, message, output_message, text_part
from agent.genai.providers import openai_compat as oc
from agent.genai.wire import (
    first_response_value,
    is_post,
    new_call,
    path_endswith,
    request_json,
    request_path,
)

API = "openai.completions"
APIS: tuple[str, ...] = (API,)


def matches(exchange: HttpExchange) -> bool:
    """A Completions request, by path and payload shape."""
    path = request_path(exchange)
    if not is_post(exchange) or not path_endswith(path, "completions"):
        return False
    if path_endswith(path, "chat/completions"):
        return False
    shape = oc.response_shape(first_response_value(exchange), ("text_completion",))
    if shape is False:
        return False
    req = request_json(exchange).value
    return (isinstance(req, dict) and "prompt" in req and "messages" not in req) or shape is True


@dataclass(slots=True)
class _Choice:
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    stop: str | None = None


def parse(exchange: HttpExchange, content_mode: ContentMode) -> InferenceCall:
    """The call as far as the exchange tells it."""
    call = new_call(exchange, "openai", "text_completion", API)
    choices: dict[int, _Choice] = {}
    req = oc.read_exchange(call, exchange, lambda obj: _take_choices(obj, choices))
    ordered = [choices[i] for i in sorted(choices)]
    call.finish_reasons = [c.finish_reason for c in ordered if c.finish_reason]
    call.matched_stop = next((c.stop for c in ordered if c.stop), None)
    if content_mode is not ContentMode.OFF:
        prompts = _prompts(req)
        outputs: list[Message] | None = [
            output_message([text_part("".join(c.text))], c.finish_reason) for c in ordered
        ] or None
        call.input_messages, call.output_messages, call.system_instructions = apply_mode(
            content_mode, prompts, outputs, None
        )
    return call


def _take_choices(obj: dict[str, object], choices: dict[int, _Choice]) -> bool:
    produced = False
    for pos, raw in enumerate(jv.get_list(obj, "choices") or []):
        if not isinstance(raw, dict):
            continue
        index = jv.get_int(raw, "index")
        choice = choices.setdefault(index if index is not None else pos, _Choice())
        text = jv.get_str(raw, "text")
        if text:
            choice.text.append(text)
            produced = True
        finish = jv.get_nonempty_str(raw, "finish_reason")
        if finish:
            choice.finish_reason = finish
        stop = oc.stop_text(raw.get("stop_reason"))
        if stop:
            choice.stop = stop
    return produced


def _prompts(req: object) -> list[Message] | None:
    """The prompt(s) as user messages; token-id prompts carry no text and are left out."""
    if not isinstance(req, dict) or "prompt" not in req:
        return None
    texts = jv.str_list(req.get("prompt"))
    return [message("user", [text_part(t)]) for t in texts]
