"""A stream cut after its terminal event is complete; one cut before it is truncated: OpenAI
(`[DONE]`), Anthropic (`message_stop`) and Ollama (`"done": true`) streams alike."""

from __future__ import annotations

import json

import pytest

from agent.capture.exchange import ConnectionInfo, HttpExchange, StreamEvent
from agent.genai.registry import parse_exchange


def _chunk(i: int, content: str, finish: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-cut",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        }
    ).encode()


def _anthropic(kind: str, **fields: object) -> bytes:
    return json.dumps({"type": kind, **fields}).encode()


def _ollama(content: str, done: bool) -> bytes:
    line: dict[str, object] = {
        "model": "m",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        line.update(done_reason="stop", prompt_eval_count=3, eval_count=2)
    return json.dumps(line).encode()


#: provider -> (path, response content type, a whole stream, the same cut inside its last event)
STREAMS: dict[str, tuple[str, str, list[bytes], list[bytes]]] = {
    "openai": (
        "/v1/chat/completions",
        "text/event-stream",
        [_chunk(0, "a"), _chunk(1, "b", "stop"), b"[DONE]"],
        [_chunk(0, "a"), _chunk(1, "b", "stop")[:20], b"[DONE]"],
    ),
    "anthropic": (
        "/v1/messages",
        "text/event-stream",
        [
            _anthropic("message_start", message={"id": "msg_1", "model": "m", "usage": {}}),
            _anthropic("content_block_start", index=0, content_block={"type": "text"}),
            _anthropic("content_block_delta", index=0, delta={"type": "text_delta", "text": "a"}),
            _anthropic("message_delta", delta={"stop_reason": "end_turn"}, usage={}),
            _anthropic("message_stop"),
        ],
        [
            _anthropic("message_start", message={"id": "msg_1", "model": "m", "usage": {}}),
            _anthropic("content_block_delta", index=0, delta={"type": "text_delta", "text": "a"}),
            _anthropic("message_delta", delta={"stop_reason": "end_turn"})[:25],
            _anthropic("message_stop"),
        ],
    ),
    "ollama": (
        "/api/chat",
        "application/x-ndjson",
        [_ollama("a", False), _ollama("b", False), _ollama("", True)],
        [_ollama("a", False), _ollama("b", False)[:20], _ollama("", True)],
    ),
}


def _exchange(
    provider: str,
    events: list[bytes],
    *,
    response_truncated: bool,
    request_truncated: bool = False,
) -> HttpExchange:
    path, content_type = STREAMS[provider][:2]
    request: dict[str, object] = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    if provider == "anthropic":
        request["max_tokens"] = 16
    return HttpExchange(
        conn=ConnectionInfo(pid=1),
        method="POST",
        path=path,
        request_headers={"content-type": "application/json", "host": "h"},
        request_body=json.dumps(request).encode(),
        start_mono_ns=0,
        request_end_mono_ns=10,
        status=200,
        response_headers={"content-type": content_type},
        first_byte_mono_ns=100,
        end_mono_ns=1000,
        stream_events=[StreamEvent(100 + i, data) for i, data in enumerate(events)],
        request_truncated=request_truncated,
        response_truncated=response_truncated,
    )


@pytest.mark.parametrize("provider", sorted(STREAMS))
@pytest.mark.parametrize(
    ("which", "response_cut", "request_cut", "truncated"),
    [
        ("whole", False, False, False),
        ("whole", True, False, False),  # closed after the terminal event, before the body's end
        ("whole", True, True, True),  # the request itself was cut
        ("no_end", True, False, True),  # no terminal event: really cut
        ("cut_inside", True, False, True),  # an event before the terminal one arrived cut
    ],
)
def test_truncation_after_the_terminal_event(
    provider: str, which: str, response_cut: bool, request_cut: bool, truncated: bool
) -> None:
    whole, cut_inside = STREAMS[provider][2:]
    events = {"whole": whole, "no_end": whole[:-1], "cut_inside": cut_inside}[which]
    call = parse_exchange(
        _exchange(provider, events, response_truncated=response_cut, request_truncated=request_cut)
    )
    assert call is not None
    assert call.provider == provider
    assert call.truncated is truncated
