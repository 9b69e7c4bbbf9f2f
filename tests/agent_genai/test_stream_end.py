"""A stream cut after its terminal event is complete; one cut before it is truncated."""

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


def _exchange(
    events: list[bytes], *, response_truncated: bool, request_truncated: bool = False
) -> HttpExchange:
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ).encode()
    return HttpExchange(
        conn=ConnectionInfo(pid=1),
        method="POST",
        path="/v1/chat/completions",
        request_headers={"content-type": "application/json", "host": "h"},
        request_body=body,
        start_mono_ns=0,
        request_end_mono_ns=10,
        status=200,
        response_headers={"content-type": "text/event-stream"},
        first_byte_mono_ns=100,
        end_mono_ns=1000,
        stream_events=[StreamEvent(100 + i, data) for i, data in enumerate(events)],
        request_truncated=request_truncated,
        response_truncated=response_truncated,
    )


WHOLE = [_chunk(0, "a"), _chunk(1, "b", "stop"), b"[DONE]"]


@pytest.mark.parametrize(
    ("events", "response_cut", "request_cut", "truncated"),
    [
        (WHOLE, False, False, False),
        (WHOLE, True, False, False),  # closed after [DONE], before the closing chunk
        (WHOLE, True, True, True),  # the request itself was cut
        (WHOLE[:2], True, False, True),  # no terminal event: really cut
        ([_chunk(0, "a"), _chunk(1, "b", "stop")[:20], b"[DONE]"], True, False, True),
    ],
)
def test_truncation_after_the_terminal_event(
    events: list[bytes], response_cut: bool, request_cut: bool, truncated: bool
) -> None:
    call = parse_exchange(
        _exchange(events, response_truncated=response_cut, request_truncated=request_cut)
    )
    assert call is not None
    assert call.truncated is truncated
