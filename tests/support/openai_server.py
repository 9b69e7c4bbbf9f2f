"""A local OpenAI-compatible HTTP server for tests: OpenAI API requests in, deterministic answers
and a ground-truth record of every answer out.

Serves `POST /v1/chat/completions` (JSON, or SSE when `stream` is true, with the usage chunk
only when `stream_options.include_usage` is true, as OpenAI does), `POST /v1/completions` and
`POST /v1/embeddings` on 127.0.0.1, plus `GET /_test/served` (the ground truth as JSON) and
`POST /_test/reset`. Every answer is a pure function of the request and its sequence number:
model, ids, text, token counts and finish reason can be predicted, and each `Served` record
says what was sent and when the first streamed chunk left (unix and monotonic ns), so a test
can compare what an instrumentation reported with what really happened.

Rules of the answers (see `plan_chat`, `plan_completion`):
- response model = request model + `-2025-01-01` (a served snapshot name, as OpenAI does);
- input tokens = words in all message contents (or the prompt) + 3 per message;
  cached input tokens = (input tokens // 8) * 4; reasoning tokens = 2 for `o*` models, else 0;
- the answer is one of `ANSWERS` (by the sequence number); output tokens = its words;
- `max_tokens`/`max_completion_tokens` below the answer's length cut it and finish `length`;
  a request with `tools` answers one tool call and finishes `tool_calls`;
- a model named `fail-NNN` is answered with HTTP status NNN and an OpenAI error body;
  `flaky-NNN` likewise the first time a request body is seen (with `retry-after-ms: 10`, so
  that a retrying client comes back at once), and normally when the same body comes again.

Stdlib only, so the per-family virtual environments can import it too. In process:
`with OpenAIServer(first_chunk_delay_s=0.2) as srv: ... srv.base_url ... srv.served()`.
As a process: `python -m tests.support.openai_server --port N` (prints `listening on URL`).
Must not: listen on anything but loopback.
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWERS: tuple[str, ...] = (
    "The KV cache keeps attention keys and values of tokens already seen.",
    "Batching many requests together lowers the cost of each generated token.",
    "Time to first token is mostly the prefill of the prompt.",
    "Throughput grows with batch size until memory bandwidth saturates.",
)
TOOL_NAME = "get_weather"
EMBEDDING_DIM = 8


@dataclass
class Served:
    """Ground truth of one answered request."""

    seq: int
    path: str
    operation: str  # chat, text_completion, embeddings
    status: int
    request_model: str
    response_model: str | None = None
    response_id: str | None = None
    stream: bool = False
    include_usage: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_output_tokens: int | None = None
    finish_reasons: list[str] = field(default_factory=list)
    text: str = ""
    tool_call_id: str | None = None
    error_type: str | None = None
    request_messages: list[Any] = field(default_factory=list)
    received_unix_ns: int = 0
    received_mono_ns: int = 0
    headers_mono_ns: int | None = None
    first_chunk_unix_ns: int | None = None
    first_chunk_mono_ns: int | None = None
    done_mono_ns: int | None = None

    @property
    def server_ttfc_s(self) -> float | None:
        """Seconds from the request's arrival to the first chunk leaving (streams only)."""
        if self.first_chunk_mono_ns is None:
            return None
        return (self.first_chunk_mono_ns - self.received_mono_ns) / 1e9

    @property
    def headers_to_first_chunk_s(self) -> float | None:
        """Seconds from the response headers leaving to the first chunk leaving (streams)."""
        if self.first_chunk_mono_ns is None or self.headers_mono_ns is None:
            return None
        return (self.first_chunk_mono_ns - self.headers_mono_ns) / 1e9

    def to_json(self) -> dict[str, Any]:
        """JSON-able form, with the derived server-side times to first chunk."""
        out = asdict(self)
        out["server_ttfc_s"] = self.server_ttfc_s
        out["headers_to_first_chunk_s"] = self.headers_to_first_chunk_s
        return out


def _words(text: str) -> int:
    return len(text.split())


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _input_tokens(messages: list[Any]) -> int:
    total = 0
    for m in messages:
        if isinstance(m, dict):
            total += _words(_content_text(m.get("content"))) + 3
    return total


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def plan_chat(seq: int, body: dict[str, Any], id_prefix: str = "") -> Served:
    """The answer to chat request number `seq` (see the module docstring for the rules)."""
    model = str(body.get("model", ""))
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    served = Served(
        seq=seq,
        path="/v1/chat/completions",
        operation="chat",
        status=200,
        request_model=model,
        request_messages=list(messages or []),
    )
    _plan_common(served, body, _input_tokens(messages or []), id_prefix, "chatcmpl")
    if body.get("tools"):
        served.finish_reasons = ["tool_calls"]
        served.tool_call_id = f"call_{id_prefix}{seq:06d}"
        served.text = ""
        served.output_tokens = 9
    return served


def plan_completion(seq: int, body: dict[str, Any], id_prefix: str = "") -> Served:
    """The answer to legacy completions request number `seq`."""
    model = str(body.get("model", ""))
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = " ".join(p for p in prompt if isinstance(p, str))
    served = Served(
        seq=seq,
        path="/v1/completions",
        operation="text_completion",
        status=200,
        request_model=model,
        request_messages=[{"role": "user", "content": str(prompt)}],
    )
    _plan_common(served, body, _words(str(prompt)), id_prefix, "cmpl")
    return served


def _plan_common(
    served: Served, body: dict[str, Any], input_tokens: int, id_prefix: str, id_kind: str
) -> None:
    model = served.request_model
    served.stream = bool(body.get("stream"))
    options = body.get("stream_options")
    served.include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    served.response_model = f"{model}-2025-01-01"
    served.response_id = f"{id_kind}-{id_prefix}{served.seq:06d}"
    words = ANSWERS[served.seq % len(ANSWERS)].split()
    limit = _max_tokens(body)
    finish = "stop"
    if limit is not None and limit < len(words):
        words = words[: max(limit, 0)]
        finish = "length"
    served.text = " ".join(words)
    served.input_tokens = input_tokens
    served.output_tokens = len(words)
    served.cached_input_tokens = (input_tokens // 8) * 4
    served.reasoning_output_tokens = 2 if model.startswith("o") else 0
    served.finish_reasons = [finish]


def _usage(served: Served) -> dict[str, Any]:
    inp = served.input_tokens or 0
    out = served.output_tokens or 0
    return {
        "prompt_tokens": inp,
        "completion_tokens": out,
        "total_tokens": inp + out,
        "prompt_tokens_details": {
            "cached_tokens": served.cached_input_tokens or 0,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": served.reasoning_output_tokens or 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_call(served: Served, with_args: bool = True) -> dict[str, Any]:
    return {
        "index": 0,
        "id": served.tool_call_id,
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "arguments": json.dumps({"city": "Paris"}) if with_args else "",
        },
    }


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping its keep-alive connection is normal; anything else is printed.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class OpenAIServer:
    """The test server, running on a background thread (see the module docstring)."""

    def __init__(
        self,
        port: int = 0,
        first_chunk_delay_s: float = 0.2,
        chunk_interval_s: float = 0.002,
        id_prefix: str = "",
    ) -> None:
        self.first_chunk_delay_s = first_chunk_delay_s
        self.chunk_interval_s = chunk_interval_s
        self.id_prefix = id_prefix
        self._lock = threading.Lock()
        self._served: list[Served] = []
        self._seq = 0
        self._flaky_seen: set[bytes] = set()
        self._httpd = _QuietHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The TCP port listened on."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI client's `base_url` for this server."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        """Serve on a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, name="openai-test-server", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; safe to call twice."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def served(self) -> list[Served]:
        """A copy of the ground truth, in arrival order."""
        with self._lock:
            return list(self._served)

    def by_response_id(self, response_id: str) -> Served:
        """The record of the answer with this response id."""
        for s in self.served():
            if s.response_id == response_id:
                return s
        raise KeyError(response_id)

    def reset(self) -> None:
        """Forget the ground truth (sequence numbers go on, so ids stay unique)."""
        with self._lock:
            self._served.clear()

    def next_seq(self) -> int:
        with self._lock:
            seq = self._seq
            self._seq += 1
            return seq

    def record(self, served: Served) -> None:
        with self._lock:
            self._served.append(served)

    def first_time(self, raw: bytes) -> bool:
        """Whether this request body comes for the first time (for `flaky-NNN` models)."""
        with self._lock:
            if raw in self._flaky_seen:
                return False
            self._flaky_seen.add(raw)
            return True


def _make_handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep test output quiet

        def do_GET(self) -> None:
            if self.path == "/_test/served":
                self._json(200, [s.to_json() for s in server.served()])
            elif self.path in ("/healthz", "/v1/models"):
                self._json(200, {"object": "list", "data": []})
            else:
                self._error(404, "not_found", f"no route {self.path}")

        def do_POST(self) -> None:
            received_unix_ns = time.time_ns()
            received_mono_ns = time.monotonic_ns()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path == "/_test/reset":
                server.reset()
                self._json(200, {})
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body is not an object")
            except ValueError as exc:
                self._error(400, "invalid_request_error", f"bad JSON: {exc}")
                return
            path = self.path.split("?", 1)[0]
            seq = server.next_seq()
            if path == "/v1/chat/completions":
                served = plan_chat(seq, body, server.id_prefix)
            elif path == "/v1/completions":
                served = plan_completion(seq, body, server.id_prefix)
            elif path == "/v1/embeddings":
                served = Served(
                    seq=seq,
                    path=path,
                    operation="embeddings",
                    status=200,
                    request_model=str(body.get("model", "")),
                )
            else:
                self._error(404, "not_found", f"no route {path}")
                return
            served.received_unix_ns = received_unix_ns
            served.received_mono_ns = received_mono_ns
            # Recorded before answering, so the record exists once the client has its answer.
            server.record(served)
            model = served.request_model
            flaky = model.startswith("flaky-") and model[6:].isdigit()
            if flaky and server.first_time(raw):
                model = f"fail-{model[6:]}"
            if model.startswith("fail-") and model[5:].isdigit():
                served.status = int(model[5:])
                served.error_type = "server_error" if served.status >= 500 else "invalid_request"
                served.finish_reasons = []
                served.response_id = served.response_model = None
                served.input_tokens = served.output_tokens = None
                served.cached_input_tokens = served.reasoning_output_tokens = None
                served.text = ""
                self._error(
                    served.status,
                    served.error_type,
                    "failure requested by the model name",
                    {"retry-after-ms": "10"} if flaky else None,
                )
                return
            if served.operation == "embeddings":
                self._embeddings(served, body)
            elif served.stream:
                self._stream(served)
            else:
                time.sleep(server.first_chunk_delay_s)
                body_out = self._full_body(served)
                served.done_mono_ns = time.monotonic_ns()
                self._json(200, body_out)

        # --- answers -----------------------------------------------------------------------

        def _full_body(self, served: Served) -> dict[str, Any]:
            created = served.received_unix_ns // 1_000_000_000
            if served.operation == "text_completion":
                return {
                    "id": served.response_id,
                    "object": "text_completion",
                    "created": created,
                    "model": served.response_model,
                    "choices": [
                        {
                            "index": 0,
                            "text": served.text,
                            "logprobs": None,
                            "finish_reason": served.finish_reasons[0],
                        }
                    ],
                    "usage": _usage(served),
                }
            message: dict[str, Any] = {
                "role": "assistant",
                "content": served.text or None,
                "refusal": None,
            }
            if served.tool_call_id:
                call = _tool_call(served)
                del call["index"]
                message["tool_calls"] = [call]
            return {
                "id": served.response_id,
                "object": "chat.completion",
                "created": created,
                "model": served.response_model,
                "system_fingerprint": "fp_test",
                "service_tier": "default",
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": served.finish_reasons[0],
                    }
                ],
                "usage": _usage(served),
            }

        def _embeddings(self, served: Served, body: dict[str, Any]) -> None:
            inputs = body.get("input", "")
            if isinstance(inputs, str) or (
                isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
            ):
                inputs = [inputs]
            if not isinstance(inputs, list):
                inputs = []
            dim = body.get("dimensions")
            dim = dim if isinstance(dim, int) and 0 < dim <= 4096 else EMBEDDING_DIM
            tokens = sum(_words(x) if isinstance(x, str) else len(x) for x in inputs)
            served.request_messages = [
                {"role": "user", "content": x} for x in inputs if isinstance(x, str)
            ]
            served.response_model = f"{served.request_model}-2025-01-01"
            served.input_tokens = tokens
            b64 = body.get("encoding_format") == "base64"
            data = []
            for i, _ in enumerate(inputs):
                vec = [round((served.seq + i + k) % 7 / 7.0, 4) for k in range(dim)]
                emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if b64 else vec
                data.append({"object": "embedding", "index": i, "embedding": emb})
            time.sleep(server.first_chunk_delay_s)
            served.done_mono_ns = time.monotonic_ns()
            self._json(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": served.response_model,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                },
            )

        def _stream(self, served: Served) -> None:
            created = served.received_unix_ns // 1_000_000_000
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            # Headers go out at once and the answer follows, as model servers do.
            served.headers_mono_ns = time.monotonic_ns()
            time.sleep(server.first_chunk_delay_s)
            chat = served.operation == "chat"
            obj = "chat.completion.chunk" if chat else "text_completion"

            def frame(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> None:
                data: dict[str, Any] = {
                    "id": served.response_id,
                    "object": obj,
                    "created": created,
                    "model": served.response_model,
                    "choices": choices,
                }
                if chat:
                    data["system_fingerprint"] = "fp_test"
                if served.include_usage:
                    data["usage"] = usage
                self._chunk(b"data: " + json.dumps(data).encode() + b"\n\n")
                if served.first_chunk_mono_ns is None:
                    served.first_chunk_mono_ns = time.monotonic_ns()
                    served.first_chunk_unix_ns = time.time_ns()

            def choice(delta_or_text: Any, finish: str | None) -> dict[str, Any]:
                if chat:
                    return {
                        "index": 0,
                        "delta": delta_or_text,
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                return {
                    "index": 0,
                    "text": delta_or_text,
                    "logprobs": None,
                    "finish_reason": finish,
                }

            if chat:
                frame([choice({"role": "assistant", "content": ""}, None)])
            if served.tool_call_id:
                frame([choice({"tool_calls": [_tool_call(served, with_args=False)]}, None)])
                frame(
                    [
                        choice(
                            {
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "function": {"arguments": json.dumps({"city": "Paris"})},
                                    }
                                ]
                            },
                            None,
                        )
                    ]
                )
            for i, word in enumerate(served.text.split()):
                piece = (" " if i else "") + word
                frame([choice({"content": piece} if chat else piece, None)])
                time.sleep(server.chunk_interval_s)
            frame([choice({} if chat else "", served.finish_reasons[0])])
            if served.include_usage:
                frame([], _usage(served))
            served.done_mono_ns = time.monotonic_ns()
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")

        # --- wire helpers --------------------------------------------------------------------

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("x-request-id", "req_test")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)
            self.wfile.flush()

        def _error(
            self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
        ) -> None:
            self._json(
                status,
                {"error": {"message": message, "type": kind, "param": None, "code": kind}},
                headers,
            )

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local OpenAI-compatible test server.")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any)")
    parser.add_argument(
        "--first-chunk-delay-ms",
        type=float,
        default=200.0,
        help="wait before the first chunk / the whole answer",
    )
    parser.add_argument("--chunk-interval-ms", type=float, default=2.0)
    parser.add_argument("--id-prefix", default="")
    args = parser.parse_args(argv)
    srv = OpenAIServer(
        args.port, args.first_chunk_delay_ms / 1000, args.chunk_interval_ms / 1000, args.id_prefix
    )
    print(f"listening on http://127.0.0.1:{srv.port}", flush=True)
    try:
        srv._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv._httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
