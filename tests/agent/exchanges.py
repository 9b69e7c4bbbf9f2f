"""`HttpExchange`s as the capture hands them over, for the agent's unit tests.

OpenAI Chat Completions requests and responses with the exact bytes an OpenAI-compatible server
sends (JSON, or SSE chunks with arrival times), on the client or the server end of a connection.
Times are CLOCK_MONOTONIC nanoseconds, like the kernel's.
"""

from __future__ import annotations

import json
from typing import Any

from agent.capture.exchange import ConnectionInfo, HttpExchange, Role, StreamEvent

START_MONO_NS = 5_000_000_000_000
MS = 1_000_000


def _chunk(
    delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None
) -> bytes:
    doc: dict[str, Any] = {
        "id": "chatcmpl-42",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        doc["choices"] = []
        doc["usage"] = usage
    return json.dumps(doc).encode()


USAGE = {
    "prompt_tokens": 17,
    "completion_tokens": 3,
    "total_tokens": 20,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def chat_exchange(
    *,
    role: Role = Role.CLIENT,
    stream: bool = False,
    status: int = 200,
    traceparent: str | None = None,
    pid: int = 4242,
    comm: str = "python3",
    tls: bool = False,
    system: str | None = "Be brief.",
) -> HttpExchange:
    """One chat call to gpt-4o answered "Hello there friend" (3 output tokens)."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": "Say hello to my friend"})
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": messages,
        "temperature": 0.2,
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    headers = {
        "host": "api.example.test:8000",
        "content-type": "application/json",
        "user-agent": "OpenAI/Python 1.50.0",
    }
    if traceparent:
        headers["traceparent"] = traceparent
    conn = ConnectionInfo(
        pid=pid,
        tid=pid + 1,
        comm=comm,
        role=role,
        local_addr="10.0.0.5" if role is Role.CLIENT else "10.0.0.9",
        local_port=51000 if role is Role.CLIENT else 8000,
        peer_addr="10.0.0.9" if role is Role.CLIENT else "10.0.0.5",
        peer_port=8000 if role is Role.CLIENT else 51000,
        tls=tls,
        cgroup_id=777,
    )
    ex = HttpExchange(
        conn=conn,
        method="POST",
        path="/v1/chat/completions",
        request_headers=headers,
        request_body=json.dumps(body).encode(),
        start_mono_ns=START_MONO_NS,
        request_end_mono_ns=START_MONO_NS + 1 * MS,
        status=status,
    )
    if status != 200:
        err = {"error": {"message": "overloaded", "type": "server_error", "code": None}}
        ex.response_headers = {"content-type": "application/json"}
        ex.response_body = json.dumps(err).encode()
        ex.first_byte_mono_ns = START_MONO_NS + 30 * MS
        ex.end_mono_ns = START_MONO_NS + 31 * MS
        return ex
    if stream:
        ex.response_headers = {"content-type": "text/event-stream", "transfer-encoding": "chunked"}
        pieces = [
            (_chunk({"role": "assistant", "content": ""}), 120),
            (_chunk({"content": "Hello"}), 250),
            (_chunk({"content": " there"}), 290),
            (_chunk({"content": " friend"}), 340),
            (_chunk({}, "stop"), 341),
            (_chunk({}, usage=USAGE), 342),
            (b"[DONE]", 343),
        ]
        ex.stream_events = [StreamEvent(START_MONO_NS + ms * MS, data) for data, ms in pieces]
        ex.response_body = b"".join(b"data: " + d + b"\n\n" for d, _ in pieces)
        ex.first_byte_mono_ns = START_MONO_NS + 100 * MS
        ex.end_mono_ns = START_MONO_NS + 344 * MS
        return ex
    answer = {
        "id": "chatcmpl-42",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": "Hello there friend"},
            }
        ],
        "usage": USAGE,
    }
    ex.response_headers = {"content-type": "application/json", "x-request-id": "req_abc"}
    ex.response_body = json.dumps(answer).encode()
    ex.first_byte_mono_ns = START_MONO_NS + 400 * MS
    ex.end_mono_ns = START_MONO_NS + 401 * MS
    return ex


def not_llm_exchange() -> HttpExchange:
    """A health check: HTTP, but no LLM call."""
    return HttpExchange(
        conn=ConnectionInfo(pid=99, comm="curl"),
        method="GET",
        path="/healthz",
        request_headers={"host": "localhost"},
        request_body=b"",
        start_mono_ns=START_MONO_NS,
        request_end_mono_ns=START_MONO_NS,
        status=200,
        response_headers={"content-type": "text/plain"},
        response_body=b"ok",
        first_byte_mono_ns=START_MONO_NS + MS,
        end_mono_ns=START_MONO_NS + MS,
    )
