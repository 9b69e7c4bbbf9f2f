"""A tiny OpenAI-compatible model server for the demo: chat requests in, canned completions out.

Takes `POST /v1/chat/completions` (streaming with SSE and `stream_options.include_usage`, or
not); gives deterministic answers whose token counts are the word counts, a short think time
before the first chunk, and a 429 for prompts that ask for one. It stands in for vLLM/Ollama so
the demo runs anywhere; it is not a model.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

ANSWERS = (
    "GPUs batch many requests together so each token costs less.",
    "The KV cache holds attention keys and values for tokens already seen.",
    "Time to first token is dominated by prefill of the prompt.",
    "Throughput rises with batch size until memory bandwidth saturates.",
)


def _words(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in messages)


def build_model_server(first_chunk_delay_s: float = 0.02) -> FastAPI:
    """The FastAPI app of the demo model server."""
    app = FastAPI(title="demo model server")
    ids = itertools.count(1)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        body = await request.json()
        messages = body.get("messages") or []
        model = str(body.get("model", "demo-llm"))
        prompt_tokens = _words(messages)
        if "rate limit me" in json.dumps(messages):
            return JSONResponse(
                {
                    "error": {
                        "message": "rate limited",
                        "type": "rate_limit_error",
                        "code": "rate_limit_exceeded",
                    }
                },
                status_code=429,
            )
        n = next(ids)
        answer = ANSWERS[n % len(ANSWERS)]
        words = answer.split(" ")
        max_tokens = int(body.get("max_tokens") or 1_000)
        finish = "length" if max_tokens < len(words) else "stop"
        words = words[:max_tokens]
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        rid = f"chatcmpl-demo{n:06d}"
        created = int(time.time())
        await asyncio.sleep(first_chunk_delay_s)
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": finish,
                            "message": {"role": "assistant", "content": " ".join(words)},
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            def chunk(delta: dict[str, Any], reason: str | None) -> bytes:
                data = {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
                }
                return b"data: " + json.dumps(data).encode() + b"\n\n"

            yield chunk({"role": "assistant", "content": ""}, None)
            for i, word in enumerate(words):
                yield chunk({"content": (" " if i else "") + word}, None)
                await asyncio.sleep(0.002)
            yield chunk({}, finish)
            if include_usage:
                data = {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                yield b"data: " + json.dumps(data).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app
