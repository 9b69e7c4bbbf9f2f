"""A local model server speaking three more API families, for the agent's end-to-end tests.

Takes HTTP requests on 127.0.0.1 (plaintext, or TLS through Python's `ssl` module, so the
plaintext passes through OpenSSL where the capture reads it); gives deterministic answers in
each family's wire format and keeps a ground-truth record of every answer:

- Anthropic Messages, `POST /v1/messages`: one JSON message, or with `"stream": true` SSE with
  `message_start`, `content_block_start`, `ping`, one `content_block_delta` per word,
  `content_block_stop`, `message_delta` (stop reason, cumulative usage) and `message_stop`.
- Ollama's native API, `POST /api/chat` and `/api/generate`: NDJSON (`application/x-ndjson`),
  one object per word and a final `"done": true` object with `done_reason`,
  `prompt_eval_count`, `eval_count` and durations in ns, unless `"stream": false` asks for one
  JSON object (Ollama streams by default).
- vLLM's OpenAI-compatible server, `POST /v1/chat/completions`: choices carry vLLM's
  `stop_reason`, responses its `prompt_logprobs` / `kv_transfer_params`, usage its
  `prompt_tokens_details.cached_tokens`; a stream carries usage when the request has a
  `stream_options` object (vLLM defaults `include_usage` to true there), on every chunk with
  `continuous_usage_stats`, and ends with `data: [DONE]`.
- `GET /_test/served`: the ground truth as a JSON list; `GET /_test/count`: how many answers.

Rules of the answers (`plan`): the answer text is `ANSWERS[seq % 4]`; its words are the output
tokens, cut at the request's limit (`max_tokens`, `options.num_predict`), which makes the finish
reason `max_tokens` / `length` instead of `end_turn` / `stop`. Prompt tokens = words of every
message (and system text) + 3 per message. Anthropic leaves cached tokens out of `input_tokens`:
the record's `input_tokens` is the convention's total (uncached + cache read + cache creation),
what the agent must report. Response model: Anthropic and vLLM add a snapshot suffix, Ollama a
`:latest` tag. Every record says when the request arrived and when the first event that carried
output had been written (monotonic ns), so the server-side time to first chunk is known.

Run as `python -m tests.agent.native_model_server --port N [--cert C --key K]
[--first-chunk-delay-ms D] [--chunk-interval-ms I]`; prints `listening on URL`. Stdlib only.
Must not: listen on anything but loopback.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWERS: tuple[str, ...] = (
    "Paged attention keeps the KV cache in fixed size blocks.",
    "Continuous batching admits new requests between decoding steps.",
    "Speculative decoding drafts tokens with a small model first.",
    "Quantized weights trade a little accuracy for memory bandwidth.",
)


@dataclass
class Answer:
    """Ground truth of one answered request."""

    seq: int
    api: str  # anthropic.messages, ollama.chat, ollama.generate, vllm.chat
    provider: str
    operation: str
    request_model: str
    response_model: str
    response_id: str | None
    stream: bool
    text: str
    input_tokens: int  # as the conventions count them (cache reads and writes included)
    output_tokens: int
    cache_read_tokens: int | None
    cache_creation_tokens: int | None
    finish_reason: str
    usage_sent: bool  # whether the token counts went out on the wire
    received_mono_ns: int = 0
    first_output_mono_ns: int | None = None
    done_mono_ns: int | None = None
    events: int = 0  # stream events written (SSE events or NDJSON lines)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def server_ttfc_s(self) -> float | None:
        """Seconds from the request's arrival to the first output-carrying event written."""
        if self.first_output_mono_ns is None:
            return None
        return (self.first_output_mono_ns - self.received_mono_ns) / 1e9

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["server_ttfc_s"] = self.server_ttfc_s
        return out


def _words(text: str) -> int:
    return len(text.split())


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def _prompt_tokens(messages: Any, system: Any = None) -> int:
    total = _words(_text_of(system)) if system else 0
    for m in messages if isinstance(messages, list) else []:
        if isinstance(m, dict):
            total += _words(_text_of(m.get("content"))) + 3
    return total


def _limit(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def plan(seq: int, path: str, body: dict[str, Any]) -> Answer | None:
    """The answer to request number `seq` on `path`, or None for an unknown path."""
    model = str(body.get("model", ""))
    words = ANSWERS[seq % len(ANSWERS)].split()
    if path == "/v1/messages":
        limit = _limit(body.get("max_tokens"))
        cut = limit is not None and limit < len(words)
        kept = words[: max(limit or 0, 0)] if cut else words
        prompt = _prompt_tokens(body.get("messages"), body.get("system"))
        cache_read = (prompt // 8) * 4
        cache_creation = min(2, prompt - cache_read) if seq % 3 == 0 else 0
        return Answer(
            seq=seq,
            api="anthropic.messages",
            provider="anthropic",
            operation="chat",
            request_model=model,
            response_model=f"{model}-20250514",
            response_id=f"msg_{seq:06d}",
            stream=body.get("stream") is True,
            text=" ".join(kept),
            input_tokens=prompt,
            output_tokens=len(kept),
            cache_read_tokens=cache_read,
            cache_creation_tokens=cache_creation,
            finish_reason="max_tokens" if cut else "end_turn",
            usage_sent=True,
        )
    if path in ("/api/chat", "/api/generate"):
        chat = path == "/api/chat"
        options = body.get("options")
        limit = _limit(options.get("num_predict")) if isinstance(options, dict) else None
        cut = limit is not None and 0 <= limit < len(words)
        kept = words[: limit or 0] if cut else words
        if chat:
            prompt = _prompt_tokens(body.get("messages"))
        else:
            prompt = _words(str(body.get("prompt", ""))) + _words(str(body.get("system", "")))
        return Answer(
            seq=seq,
            api="ollama.chat" if chat else "ollama.generate",
            provider="ollama",
            operation="chat" if chat else "text_completion",
            request_model=model,
            response_model=model if ":" in model else f"{model}:latest",
            response_id=None,
            stream=body.get("stream") is not False,
            text=" ".join(kept),
            input_tokens=prompt,
            output_tokens=len(kept),
            cache_read_tokens=None,
            cache_creation_tokens=None,
            finish_reason="length" if cut else "stop",
            usage_sent=True,
        )
    if path == "/v1/chat/completions":
        limit = _limit(body.get("max_tokens"))
        cut = limit is not None and limit < len(words)
        kept = words[: max(limit or 0, 0)] if cut else words
        prompt = _prompt_tokens(body.get("messages"))
        stream = body.get("stream") is True
        options = body.get("stream_options")
        usage_sent = not stream or (
            isinstance(options, dict) and options.get("include_usage", True) is not False
        )
        return Answer(
            seq=seq,
            api="vllm.chat",
            provider="vllm",
            operation="chat",
            request_model=model,
            response_model=model,
            response_id=f"chatcmpl-{seq:08x}",
            stream=stream,
            text=" ".join(kept),
            input_tokens=prompt,
            output_tokens=len(kept),
            cache_read_tokens=(prompt // 16) * 16,
            cache_creation_tokens=None,
            finish_reason="length" if cut else "stop",
            usage_sent=usage_sent,
            extra={
                "continuous": isinstance(options, dict)
                and bool(options.get("continuous_usage_stats"))
            },
        )
    return None


class NativeServer:
    """The server and its ground truth; `serve_forever()` runs it on the calling thread."""

    def __init__(
        self,
        port: int = 0,
        first_chunk_delay_s: float = 0.04,
        chunk_interval_s: float = 0.003,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        self.first_chunk_delay_s = first_chunk_delay_s
        self.chunk_interval_s = chunk_interval_s
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._seq = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self.httpd.daemon_threads = True
        self.tls = bool(cert and key)
        if cert and key:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def next_seq(self) -> int:
        with self._lock:
            seq = self._seq
            self._seq += 1
            return seq

    def record(self, answer: Answer) -> None:
        with self._lock:
            self._answers.append(answer)

    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)


def _now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _make_handler(server: NativeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Streaming servers turn Nagle off; otherwise small events wait for the peer's ACK.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            if self.path == "/_test/served":
                self._json([a.to_json() for a in server.answers()])
            elif self.path == "/_test/count":
                self._json({"count": len(server.answers())})
            else:
                self._json({"error": f"no route {self.path}"}, 404)

        def do_POST(self) -> None:
            received_mono_ns = time.monotonic_ns()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                self._json({"error": "bad JSON"}, 400)
                return
            answer = plan(server.next_seq(), self.path.split("?", 1)[0], body)
            if answer is None:
                self._json({"error": f"no route {self.path}"}, 404)
                return
            answer.received_mono_ns = received_mono_ns
            # Recorded before answering: the record exists once the client has its answer.
            server.record(answer)
            if answer.api == "anthropic.messages":
                self._anthropic(answer)
            elif answer.provider == "ollama":
                self._ollama(answer)
            else:
                self._vllm(answer)

        # --- framing ---------------------------------------------------------------------------

        def _json(self, doc: Any, status: int = 200, ctype: str = "application/json") -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _start_stream(self, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()

        def _chunk(self, answer: Answer, data: bytes, output: bool) -> None:
            # One write per event, so the kernel stamps each event with its own time.
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            answer.events += 1
            if output and answer.first_output_mono_ns is None:
                answer.first_output_mono_ns = time.monotonic_ns()

        def _end_stream(self, answer: Answer) -> None:
            self.wfile.write(b"0\r\n\r\n")
            answer.done_mono_ns = time.monotonic_ns()

        def _pieces(self, answer: Answer) -> list[str]:
            words = answer.text.split()
            return [w if i == 0 else " " + w for i, w in enumerate(words)]

        def _pause(self, first: bool) -> None:
            delay = server.first_chunk_delay_s if first else server.chunk_interval_s
            if delay > 0:
                time.sleep(delay)

        # --- Anthropic ---------------------------------------------------------------------

        def _anthropic_usage(self, answer: Answer) -> dict[str, int]:
            cache_read = answer.cache_read_tokens or 0
            cache_creation = answer.cache_creation_tokens or 0
            return {
                "input_tokens": answer.input_tokens - cache_read - cache_creation,
                "cache_creation_input_tokens": cache_creation,
                "cache_read_input_tokens": cache_read,
                "output_tokens": answer.output_tokens,
            }

        def _anthropic(self, answer: Answer) -> None:
            usage = self._anthropic_usage(answer)
            message: dict[str, Any] = {
                "id": answer.response_id,
                "type": "message",
                "role": "assistant",
                "model": answer.response_model,
                "content": [{"type": "text", "text": answer.text}],
                "stop_reason": answer.finish_reason,
                "stop_sequence": None,
                "usage": {**usage, "service_tier": "standard"},
            }
            if not answer.stream:
                self._pause(True)
                answer.done_mono_ns = time.monotonic_ns()
                self._json(message)
                return
            self._start_stream("text/event-stream; charset=utf-8")

            def event(name: str, doc: dict[str, Any], output: bool = False) -> None:
                data = f"event: {name}\ndata: {json.dumps(doc)}\n\n".encode()
                self._chunk(answer, data, output)

            start = {**message, "content": [], "stop_reason": None}
            start["usage"] = {**usage, "output_tokens": 1}
            self._pause(True)
            event("message_start", {"type": "message_start", "message": start})
            block = {"type": "text", "text": ""}
            event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
            event("ping", {"type": "ping"})
            for i, piece in enumerate(self._pieces(answer)):
                if i:
                    self._pause(False)
                delta = {"type": "text_delta", "text": piece}
                event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    output=True,
                )
            event("content_block_stop", {"type": "content_block_stop", "index": 0})
            # Counts in message_delta are cumulative; newer servers repeat the input counts.
            final_usage: dict[str, int] = {"output_tokens": answer.output_tokens}
            if answer.seq % 2:
                final_usage = usage
            stop = {"stop_reason": answer.finish_reason, "stop_sequence": None}
            event("message_delta", {"type": "message_delta", "delta": stop, "usage": final_usage})
            event("message_stop", {"type": "message_stop"})
            self._end_stream(answer)

        # --- Ollama ------------------------------------------------------------------------

        def _ollama_piece(self, answer: Answer, text: str, done: bool) -> dict[str, Any]:
            doc: dict[str, Any] = {"model": answer.response_model, "created_at": _now_rfc3339()}
            if answer.api == "ollama.chat":
                doc["message"] = {"role": "assistant", "content": text}
            else:
                doc["response"] = text
            doc["done"] = done
            if done:
                doc["done_reason"] = answer.finish_reason
                if answer.api == "ollama.generate":
                    doc["context"] = [1, 2, 3]
                doc.update(
                    {
                        "total_duration": 51_000_000,
                        "load_duration": 1_000_000,
                        "prompt_eval_count": answer.input_tokens,
                        "prompt_eval_duration": 10_000_000,
                        "eval_count": answer.output_tokens,
                        "eval_duration": 40_000_000,
                    }
                )
            return doc

        def _ollama(self, answer: Answer) -> None:
            if not answer.stream:
                self._pause(True)
                doc = self._ollama_piece(answer, answer.text, done=True)
                answer.done_mono_ns = time.monotonic_ns()
                self._json(doc, ctype="application/json; charset=utf-8")
                return
            self._start_stream("application/x-ndjson")
            self._pause(True)
            for i, piece in enumerate(self._pieces(answer)):
                if i:
                    self._pause(False)
                line = json.dumps(self._ollama_piece(answer, piece, done=False)) + "\n"
                self._chunk(answer, line.encode(), output=True)
            line = json.dumps(self._ollama_piece(answer, "", done=True)) + "\n"
            self._chunk(answer, line.encode(), output=False)
            self._end_stream(answer)

        # --- vLLM --------------------------------------------------------------------------

        def _vllm_usage(self, answer: Answer, completion: int) -> dict[str, Any]:
            return {
                "prompt_tokens": answer.input_tokens,
                "total_tokens": answer.input_tokens + completion,
                "completion_tokens": completion,
                "prompt_tokens_details": {"cached_tokens": answer.cache_read_tokens},
            }

        def _vllm(self, answer: Answer) -> None:
            created = int(time.time())
            if not answer.stream:
                self._pause(True)
                doc: dict[str, Any] = {
                    "id": answer.response_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": answer.response_model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": answer.text,
                                "refusal": None,
                                "annotations": None,
                                "audio": None,
                                "function_call": None,
                                "tool_calls": [],
                                "reasoning_content": None,
                            },
                            "logprobs": None,
                            "finish_reason": answer.finish_reason,
                            "stop_reason": None,
                        }
                    ],
                    "service_tier": None,
                    "system_fingerprint": None,
                    "usage": self._vllm_usage(answer, answer.output_tokens),
                    "prompt_logprobs": None,
                    "kv_transfer_params": None,
                }
                answer.done_mono_ns = time.monotonic_ns()
                self._json(doc)
                return
            continuous = bool(answer.extra.get("continuous"))
            self._start_stream("text/event-stream; charset=utf-8")

            def chunk(
                choices: list[dict[str, Any]], completion: int | None, output: bool = False
            ) -> None:
                doc: dict[str, Any] = {
                    "id": answer.response_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": answer.response_model,
                    "choices": choices,
                }
                if completion is not None:
                    doc["usage"] = self._vllm_usage(answer, completion)
                self._chunk(answer, b"data: " + json.dumps(doc).encode() + b"\n\n", output)

            def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                return {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }

            self._pause(True)
            chunk([choice({"role": "assistant", "content": ""})], 0 if continuous else None)
            pieces = self._pieces(answer)
            for i, piece in enumerate(pieces):
                if i:
                    self._pause(False)
                last = i == len(pieces) - 1
                chunk(
                    [choice({"content": piece}, answer.finish_reason if last else None)],
                    i + 1 if continuous else None,
                    output=True,
                )
            if answer.usage_sent:
                chunk([], answer.output_tokens)
            self._chunk(answer, b"data: [DONE]\n\n", output=False)
            self._end_stream(answer)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-chunk-delay-ms", type=float, default=40.0)
    parser.add_argument("--chunk-interval-ms", type=float, default=3.0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args(argv)
    srv = NativeServer(
        args.port,
        args.first_chunk_delay_ms / 1000,
        args.chunk_interval_ms / 1000,
        args.cert,
        args.key,
    )
    scheme = "https" if srv.tls else "http"
    print(f"listening on {scheme}://127.0.0.1:{srv.port}", flush=True)
    try:
        srv.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
