"""Pieces shared by the parsers of OpenAI-shaped APIs (and the servers that copy them).

Takes decoded request/response JSON of the Chat Completions, Completions, Embeddings and
Responses APIs; gives the provider name the wire supports, usage counts, the error type, request
parameters and response metadata, written into an `InferenceCall`.

Provider rule (from the wire only, never from host names):

* path under `/openai/deployments/{name}/` (Azure OpenAI routing) -> `azure.ai.openai`;
* `system_fingerprint` `fp_ollama` -> `ollama`;
* `system_fingerprint` of the form `{version}-native` / `{version}-sha-{hex}` -> `tgi`;
* a choice carrying the `stop_reason` key, or a top-level `prompt_logprobs` / `kv_transfer_params`
  key, or an embeddings `id` starting `embd-` -> `vllm`;
* anything else -> `openai`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.capture.exchange import HttpExchange
from agent.genai import jsonvalue as jv
from agent.genai.call import InferenceCall
from agent.genai.content import Part, generic_part, media_part, text_part
from agent.genai.wire import (
    Event,
    events,
    forgive_cut_after_end,
    request_json,
    request_path,
    response_json,
    set_error,
    set_stream_timing,
)

_TGI_FINGERPRINT_RE = re.compile(r"\d+\.\d+\.\d+[\w.+-]*-(?:native|sha-[0-9a-f]{6,40})")
_AZURE_DEPLOYMENT_RE = re.compile(r"/openai/deployments/([^/]+)/")
_VLLM_TOP_KEYS = ("prompt_logprobs", "kv_transfer_params")
# Keys of servers that copied vLLM's protocol classes: `stop_reason` alone does not mean vLLM.
_NOT_VLLM_CHOICE_KEYS = ("avg_decoded_tokens_per_iter", "disaggregated_params")


@dataclass(slots=True)
class Usage:
    """Token counts as the convention names them."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None


def read_usage(usage: object) -> Usage | None:
    """A `usage` object of any OpenAI-shaped API (chat/completions or Responses names)."""
    if not isinstance(usage, dict):
        return None
    out = Usage()
    out.input_tokens = jv.get_count(usage, "prompt_tokens")
    if out.input_tokens is None:
        out.input_tokens = jv.get_count(usage, "input_tokens")
    out.output_tokens = jv.get_count(usage, "completion_tokens")
    if out.output_tokens is None:
        out.output_tokens = jv.get_count(usage, "output_tokens")
    in_details = jv.get_dict(usage, "prompt_tokens_details") or jv.get_dict(
        usage, "input_tokens_details"
    )
    out_details = jv.get_dict(usage, "completion_tokens_details") or jv.get_dict(
        usage, "output_tokens_details"
    )
    out.cached_input_tokens = jv.get_count(in_details, "cached_tokens")
    out.cache_creation_input_tokens = jv.get_count(in_details, "cache_write_tokens")
    out.reasoning_output_tokens = jv.get_count(out_details, "reasoning_tokens")
    if all(
        v is None
        for v in (
            out.input_tokens,
            out.output_tokens,
            out.cached_input_tokens,
            out.reasoning_output_tokens,
        )
    ):
        return None
    return out


def apply_usage(call: InferenceCall, usage: Usage | None) -> None:
    """Copy usage counts into the call."""
    if usage is None:
        return
    call.input_tokens = usage.input_tokens
    call.output_tokens = usage.output_tokens
    call.cached_input_tokens = usage.cached_input_tokens
    call.cache_creation_input_tokens = usage.cache_creation_input_tokens
    call.reasoning_output_tokens = usage.reasoning_output_tokens


def error_type(obj: object) -> str | None:
    """The provider's error code or type from an error body or event, if it is one.

    Prefers a string `code` (specific: `model_not_found`, `rate_limit_exceeded`) over `type`
    (a category: `invalid_request_error`); TGI's `{"error": "...", "error_type": "..."}` and vLLM's
    older top-level `{"object": "error", "type": ...}` are understood too.
    """
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        return jv.get_nonempty_str(err, "code") or jv.get_nonempty_str(err, "type") or "_OTHER"
    if isinstance(err, str):
        return jv.get_nonempty_str(obj, "error_type") or "_OTHER"
    if obj.get("object") == "error" or obj.get("type") == "error":
        return (
            jv.get_nonempty_str(obj, "code")
            or (jv.get_nonempty_str(obj, "type") if obj.get("type") != "error" else None)
            or "_OTHER"
        )
    return None


_FOREIGN_KEYS = ("type", "created_at", "done", "generated_text", "token", "embeddings")


def response_shape(first: object, objects: tuple[str, ...]) -> bool | None:
    """Whether a response's first object is of an OpenAI-shaped API whose `object` is in `objects`.

    True: it says so; False: it positively belongs to another API (another `object` value, or
    Anthropic / Ollama / TGI top-level fields); None: no evidence (missing, error body, unknown).
    """
    if isinstance(first, list):
        return False  # TGI's `/` route; OpenAI-shaped APIs answer with an object
    if not isinstance(first, dict):
        return None
    kind = first.get("object")
    if isinstance(kind, str) and kind:
        if kind in objects:
            return True
        return None if kind == "error" else False
    if first.get("type") == "error":
        return False  # Anthropic's error envelope; OpenAI-shaped errors have no top-level type
    if "error" in first:
        return None
    return False if any(k in first for k in _FOREIGN_KEYS) else None


def has_error(obj: object) -> bool:
    """The object is an error body or error event."""
    return error_type(obj) is not None


def detect_provider(exchange: HttpExchange, objects: Iterable[object]) -> str:
    """The provider name the wire supports (rule in the module docstring)."""
    if _AZURE_DEPLOYMENT_RE.search(request_path(exchange) + "/"):
        return "azure.ai.openai"
    vllm = False
    not_vllm = False
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        fingerprint = obj.get("system_fingerprint")
        if fingerprint == "fp_ollama":
            return "ollama"
        if isinstance(fingerprint, str) and _TGI_FINGERPRINT_RE.fullmatch(fingerprint):
            return "tgi"
        if any(k in obj for k in _VLLM_TOP_KEYS):
            vllm = True
        obj_id = obj.get("id")
        if obj.get("object") == "list" and isinstance(obj_id, str) and obj_id.startswith("embd-"):
            vllm = True
        choices = obj.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    if "stop_reason" in choice:
                        vllm = True
                    if any(k in choice for k in _NOT_VLLM_CHOICE_KEYS):
                        not_vllm = True
    return "vllm" if vllm and not not_vllm else "openai"


def azure_deployment(exchange: HttpExchange) -> str | None:
    """The deployment name of an Azure OpenAI path (it stands in for the model)."""
    m = _AZURE_DEPLOYMENT_RE.search(request_path(exchange) + "/")
    return m.group(1) if m else None


def apply_request(call: InferenceCall, exchange: HttpExchange, req: object) -> None:
    """Request model and sampling parameters of chat/completions-style requests."""
    call.request_model = jv.get_nonempty_str(req, "model") or azure_deployment(exchange)
    max_tokens = jv.get_count(req, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = jv.get_count(req, "max_tokens")
    if max_tokens is None:
        max_tokens = jv.get_count(req, "max_output_tokens")
    call.request_max_tokens = max_tokens
    call.request_temperature = jv.get_float(req, "temperature")
    call.request_top_p = jv.get_float(req, "top_p")
    call.request_top_k = jv.get_float(req, "top_k")
    call.request_seed = jv.get_int(req, "seed")
    call.request_frequency_penalty = jv.get_float(req, "frequency_penalty")
    call.request_presence_penalty = jv.get_float(req, "presence_penalty")
    call.request_choice_count = jv.get_count(req, "n")
    if isinstance(req, dict):
        call.request_stop_sequences = jv.str_list(req.get("stop"))
    fmt = jv.get_dict(req, "response_format")
    if fmt is None:
        fmt = jv.get_dict(jv.get_dict(req, "text"), "format")  # Responses API
    call.output_type = output_type(jv.get_str(fmt, "type"))


def output_type(format_type: str | None) -> str | None:
    """`gen_ai.output.type` from an OpenAI response format type."""
    if format_type in ("json_object", "json_schema", "json"):
        return "json"
    if format_type == "text":
        return "text"
    return None


def apply_response_meta(call: InferenceCall, obj: object) -> None:
    """Response id, model, service tier and system fingerprint, first non-empty value wins."""
    if not isinstance(obj, dict):
        return
    call.response_id = call.response_id or jv.get_nonempty_str(obj, "id")
    call.response_model = call.response_model or jv.get_nonempty_str(obj, "model")
    call.response_service_tier = call.response_service_tier or jv.get_nonempty_str(
        obj, "service_tier"
    )
    call.response_system_fingerprint = call.response_system_fingerprint or jv.get_nonempty_str(
        obj, "system_fingerprint"
    )


def request_stream(req: object) -> bool | None:
    """The request's `stream` flag."""
    return jv.get_bool(req, "stream")


def stop_text(value: object) -> str | None:
    """vLLM `stop_reason`: the stop string, or the stop token id as text."""
    if isinstance(value, str) and value:
        return value
    number = jv.to_int(value)
    return str(number) if number is not None else None


def content_parts(content: object) -> list[Part]:
    """Semantic-convention parts from OpenAI message content (a string or a list of parts).

    Understands both the Chat Completions part names (`text`, `image_url`, `input_audio`,
    `file`, `refusal`) and the Responses ones (`input_text`, `output_text`, `input_image`,
    `input_file`).
    """
    if isinstance(content, str):
        return [text_part(content)]
    if not isinstance(content, list):
        return []
    parts: list[Part] = []
    for item in content:
        if isinstance(item, str):
            parts.append(text_part(item))
        elif isinstance(item, dict):
            parts.append(_content_part(item))
    return parts


def _content_part(item: dict[str, object]) -> Part:
    kind = jv.get_str(item, "type") or "unknown"
    if kind in ("text", "input_text", "output_text"):
        return text_part(jv.get_str(item, "text") or "")
    if kind == "refusal":
        return {"type": "refusal", "content": jv.get_str(item, "refusal") or ""}
    if kind in ("image_url", "input_image"):
        url = jv.get_str(jv.get_dict(item, "image_url"), "url") or jv.get_str(item, "image_url")
        return media_part("image", url=url, file_id=jv.get_str(item, "file_id"))
    if kind == "input_audio":
        audio = jv.get_dict(item, "input_audio") or item
        fmt = jv.get_str(audio, "format")
        return media_part(
            "audio", data=jv.get_str(audio, "data") or "", mime_type=f"audio/{fmt}" if fmt else None
        )
    if kind in ("file", "input_file"):
        file = jv.get_dict(item, "file") or item
        data = jv.get_str(file, "file_data")
        url = (
            data if data is not None and data.startswith("data:") else jv.get_str(file, "file_url")
        )
        return media_part(
            "document",
            url=url,
            data=data if data is not None and url is None else None,
            file_id=jv.get_str(file, "file_id"),
        )
    return generic_part(kind)


def text_of(content: object) -> str:
    """Plain text of message content (tool results): a string, or the text parts joined."""
    if isinstance(content, str):
        return content
    return "".join(
        p.get("content", "")
        for p in content_parts(content)
        if p.get("type") == "text" and isinstance(p.get("content"), str)
    )


def read_sse_stream(
    call: InferenceCall,
    exchange: HttpExchange,
    evs: list[Event],
    seen: list[object],
    take_chunk: Callable[[dict[str, object]], bool],
) -> None:
    """Read an OpenAI-style SSE stream (`data: {chunk}` ... `data: [DONE]`).

    Each chunk's response metadata and usage (cumulative when sent on every chunk, so the last
    one is the total) go on `call`; `take_chunk` folds the chunk's choices into the caller's
    state and says whether it carried generated output, whose arrival times give the stream
    timing. A stream without `[DONE]` (and without an error event) is truncated.
    """
    done = False
    failed = False
    events_whole = True
    output_arrivals: list[int | None] = []
    for ev in evs:
        data = ev.data.strip()
        if data == b"[DONE]":
            done = True
            continue
        if not data:
            continue
        obj, complete = jv.loads(data)
        events_whole = events_whole and complete
        call.truncated = call.truncated or not complete
        if ev.event == "error" or has_error(obj):
            failed = True
            set_error(call, error_type(obj))
            continue
        if not isinstance(obj, dict):
            continue
        seen.append(obj)
        apply_response_meta(call, obj)
        usage = read_usage(obj.get("usage"))
        if usage is not None:
            apply_usage(call, usage)
        if take_chunk(obj):
            output_arrivals.append(ev.arrival_mono_ns)
    if not done and not failed:
        call.truncated = True
    elif done and events_whole:
        forgive_cut_after_end(call, exchange)
    set_stream_timing(call, exchange, output_arrivals)


def read_exchange(
    call: InferenceCall,
    exchange: HttpExchange,
    take_choices: Callable[[dict[str, object]], bool],
) -> object:
    """Read an OpenAI-style request and its response, streamed or not, into `call`.

    The request's parameters, the response metadata, usage, errors, streaming and provider go on
    `call`; `take_choices` folds each response object (the body, or every stream chunk) into the
    caller's choices. Returns the request body for the caller's content.
    """
    req_body = request_json(exchange)
    req = req_body.value
    call.truncated = call.truncated or req_body.partial
    apply_request(call, exchange, req)
    seen: list[object] = []
    evs = events(exchange)
    if evs:
        read_sse_stream(call, exchange, evs, seen, take_choices)
    else:
        body = response_json(exchange)
        call.truncated = call.truncated or body.partial
        obj = body.value
        if has_error(obj):
            set_error(call, error_type(obj))
        elif isinstance(obj, dict):
            seen.append(obj)
            apply_response_meta(call, obj)
            apply_usage(call, read_usage(obj.get("usage")))
            take_choices(obj)
    requested = request_stream(req)
    call.streaming = requested if requested is not None else bool(evs)
    call.provider = detect_provider(exchange, seen)
    return req
