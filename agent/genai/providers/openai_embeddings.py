"""OpenAI Embeddings (`POST .../embeddings`) and the servers that speak it.

Takes an `HttpExchange`; `matches` says whether it is an Embeddings call (path AND payload shape:
a request object with `input`, or a `list` response of `embedding` objects); `parse` gives an
`InferenceCall` with operation `embeddings`: model, input tokens, dimension count (from the first
vector, float list or base64 float32), error. Embeddings carry no messages, so no content is
recorded in any content mode. A response
whose first object belongs to another API vetoes the match.
"""

from __future__ import annotations

from agent.capture.exchange import HttpExchange
from agent.genai import jsonvalue as jv
from agent.genai.call import InferenceCall
from agent.genai.content import ContentMode
from agent.genai.providers import openai_compat as oc
from agent.genai.wire import (
    first_response_value,
    is_post,
    new_call,
    path_endswith,
    request_json,
    request_path,
    response_json,
    set_error,
)

API = "openai.embeddings"
APIS: tuple[str, ...] = (API,)


def matches(exchange: HttpExchange) -> bool:
    """An Embeddings request, by path and payload shape."""
    if not is_post(exchange) or not path_endswith(request_path(exchange), "embeddings"):
        return False
    shape = oc.response_shape(first_response_value(exchange), ("list",))
    if shape is False:
        return False
    req = request_json(exchange).value
    return (isinstance(req, dict) and "input" in req) or shape is True


def parse(exchange: HttpExchange, content_mode: ContentMode) -> InferenceCall:
    """The call as far as the exchange tells it (`content_mode` has nothing to add here)."""
    call = new_call(exchange, "openai", "embeddings", API)
    req_body = request_json(exchange)
    req = req_body.value
    call.truncated = call.truncated or req_body.partial
    call.request_model = jv.get_nonempty_str(req, "model") or oc.azure_deployment(exchange)
    body = response_json(exchange)
    call.truncated = call.truncated or body.partial
    obj = body.value
    seen: list[object] = []
    if oc.has_error(obj):
        set_error(call, oc.error_type(obj))
    elif isinstance(obj, dict):
        seen.append(obj)
        call.response_model = jv.get_nonempty_str(obj, "model")
        oc.apply_usage(call, oc.read_usage(obj.get("usage")))
        # Embeddings produce no output tokens; some servers still send completion_tokens: 0.
        call.output_tokens = None
        first = (jv.get_list(obj, "data") or [None])[0]
        call.embeddings_dimension_count = _dimensions(first)
    if call.embeddings_dimension_count is None:
        call.embeddings_dimension_count = jv.get_count(req, "dimensions")
    call.provider = oc.detect_provider(exchange, seen)
    return call


def _dimensions(item: object) -> int | None:
    vector = item.get("embedding") if isinstance(item, dict) else None
    if isinstance(vector, list):
        return len(vector)
    if isinstance(vector, str) and vector:
        # encoding_format=base64: little-endian float32 values, 4 bytes each.
        size = len(vector) * 3 // 4 - len(vector) + len(vector.rstrip("="))
        return size // 4 if size > 0 and size % 4 == 0 else None
    return None
