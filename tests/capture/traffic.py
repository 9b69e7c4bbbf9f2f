"""Real HTTP traffic for the capture tests: a loopback server and Python clients.

Run as `python -m tests.capture.traffic server|client ...` from the repository root, so that
every server and client is its own process with its own pid. The server (http.server, HTTP/1.1
keep-alive, optional TLS through Python's ssl module) answers every request deterministically
from its `x-test-seq` header (`expected_body`), so a test can check captured bodies without
trusting the client; for SSE responses it appends the monotonic times just before each event's
write and just after it returned to a JSON-lines file. The client (requests or httpx) makes
`--count` calls over one keep-alive session, a mix of the four kinds below, and prints one JSON
result per call.
"""

from __future__ import annotations

import argparse
import gzip
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KINDS = ("plain", "gzip", "chunked", "sse")
SSE_EVENTS = 4
SSE_GAP_S = 0.03


def kind_of(seq: int) -> str:
    """Which kind of call number `seq` is."""
    return KINDS[seq % len(KINDS)]


def request_for(seq: int) -> tuple[str, str, bytes | None]:
    """(method, path, JSON body or None) of call number `seq`."""
    kind = kind_of(seq)
    if kind == "gzip":
        return "GET", f"/v1/models?seq={seq}", None
    body = {
        "model": "test-model",
        "seq": seq,
        "stream": kind == "sse",
        "messages": [{"role": "user", "content": f"question {seq}"}],
    }
    path = "/v1/chunked" if kind == "chunked" else "/v1/chat/completions"
    return "POST", path, json.dumps(body, separators=(",", ":")).encode()


def expected_body(seq: int, path: str) -> bytes:
    """The decoded response body the server sends for a non-streaming call."""
    doc = {
        "id": f"resp-{seq}",
        "seq": seq,
        "path": path.split("?")[0],
        "text": f"answer number {seq} " + "x" * (seq * 37 % 500),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sse_payloads(seq: int) -> list[bytes]:
    """The `data:` payloads of the SSE response to call `seq`, in order."""
    out = [
        json.dumps({"seq": seq, "delta": f"tok{i}"}, separators=(",", ":")).encode()
        for i in range(SSE_EVENTS)
    ]
    out.append(b"[DONE]")
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # As streaming servers do: otherwise Nagle holds each small event until the client's
    # delayed ACK, and the client really receives it milliseconds late.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _seq(self) -> int:
        return int(self.headers.get("x-test-seq", "0"))

    def do_GET(self) -> None:
        seq = self._seq()
        body = gzip.compress(expected_body(seq, self.path))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length) if length else b""
        seq = self._seq()
        if self.path == "/v1/echo-size":
            self._send_json(json.dumps({"received": len(raw)}).encode())
            return
        try:
            doc = json.loads(raw or b"{}")
        except ValueError:
            doc = {}
        if doc.get("stream"):
            self._send_sse(seq)
        elif self.path == "/v1/chunked":
            self._send_chunked(expected_body(seq, self.path))
        else:
            self._send_json(expected_body(seq, self.path))

    def _send_json(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_chunked(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 50):
            part = body[i : i + 50]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")

    def _send_sse(self, seq: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        before: list[int] = []
        times: list[int] = []
        payloads = sse_payloads(seq)
        # Like a model server's time to first token: the client is waiting in its read by the
        # time the first event comes.
        time.sleep(SSE_GAP_S)
        for i, data in enumerate(payloads):
            event = b"data: " + data + b"\n\n"
            if i < len(payloads) - 1:
                event = b"event: delta\n" + event
            before.append(time.monotonic_ns())
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            times.append(time.monotonic_ns())
            time.sleep(SSE_GAP_S)
        self.wfile.write(b"0\r\n\r\n")
        self.server.record({"seq": seq, "before": before, "times": times})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], timings_path: str) -> None:
        super().__init__(addr, _Handler)
        self._timings_path = timings_path
        self._lock = threading.Lock()

    def record(self, doc: dict[str, Any]) -> None:
        with self._lock, open(self._timings_path, "a") as f:
            f.write(json.dumps(doc) + "\n")


def serve(port: int, timings: str, cert: str | None, key: str | None) -> None:
    """Serve until killed; print {"port": N} once listening."""
    server = _Server(("127.0.0.1", port), timings)
    if cert and key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


def _pause() -> None:
    print("paused", flush=True)
    sys.stdin.readline()


def run_client(
    lib: str,
    base_url: str,
    count: int,
    ca: str | None,
    start_at: int,
    pause_after: int = -1,
    big_body_bytes: int = 0,
) -> None:
    """Make `count` calls over one keep-alive session; print a JSON list of results.

    With `pause_after` N, wait for a line on stdin after the first N calls (the connection
    stays open); with `big_body_bytes`, first POST that many bytes to /v1/echo-size.
    """
    results: list[dict[str, Any]] = []
    verify: str | bool = ca if ca else True
    if lib == "requests":
        import requests

        with requests.Session() as session:
            if big_body_bytes:
                resp = session.post(
                    base_url + "/v1/echo-size",
                    data=b"a" * big_body_bytes,
                    headers={"x-test-seq": "-1"},
                    verify=verify,
                    timeout=30,
                )
                results.append({"seq": -1, "status": resp.status_code, "body": resp.text})
            for seq in range(start_at, start_at + count):
                if seq - start_at == pause_after:
                    _pause()
                method, path, body = request_for(seq)
                headers = {"x-test-seq": str(seq)}
                if body is not None:
                    headers["content-type"] = "application/json"
                resp = session.request(
                    method,
                    base_url + path,
                    data=body,
                    headers=headers,
                    verify=verify,
                    stream=True,
                    timeout=30,
                )
                if kind_of(seq) == "sse":
                    lines = [line for line in resp.iter_lines() if line]
                    results.append(
                        {
                            "seq": seq,
                            "status": resp.status_code,
                            "lines": [ln.decode() for ln in lines],
                        }
                    )
                else:
                    results.append(
                        {"seq": seq, "status": resp.status_code, "body": resp.content.decode()}
                    )
                resp.close()
    else:
        import httpx

        with httpx.Client(verify=verify, timeout=30) as client:
            for seq in range(start_at, start_at + count):
                if seq - start_at == pause_after:
                    _pause()
                method, path, body = request_for(seq)
                headers = {"x-test-seq": str(seq)}
                if body is not None:
                    headers["content-type"] = "application/json"
                with client.stream(method, base_url + path, content=body, headers=headers) as resp:
                    if kind_of(seq) == "sse":
                        lines = [line for line in resp.iter_lines() if line]
                        results.append({"seq": seq, "status": resp.status_code, "lines": lines})
                    else:
                        resp.read()
                        results.append({"seq": seq, "status": resp.status_code, "body": resp.text})
    print(json.dumps(results), flush=True)


def raw_exchange(port: int, payload: bytes, read_until_close: bool = False) -> bytes:
    """Send `payload` on a fresh plaintext connection and return what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        if not read_until_close:
            return s.recv(65536)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    srv = sub.add_parser("server")
    srv.add_argument("--port", type=int, default=0)
    srv.add_argument("--timings", required=True)
    srv.add_argument("--cert")
    srv.add_argument("--key")
    cli = sub.add_parser("client")
    cli.add_argument("--lib", choices=("requests", "httpx"), required=True)
    cli.add_argument("--url", required=True)
    cli.add_argument("--count", type=int, required=True)
    cli.add_argument("--ca")
    cli.add_argument("--start-at", type=int, default=0)
    cli.add_argument("--wait-for-go", action="store_true")
    cli.add_argument("--pause-after", type=int, default=-1)
    cli.add_argument("--big-body-bytes", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cmd == "server":
        serve(args.port, args.timings, args.cert, args.key)
    else:
        if args.wait_for_go:
            print("ready", flush=True)
            sys.stdin.readline()
        run_client(
            args.lib,
            args.url,
            args.count,
            args.ca,
            args.start_at,
            args.pause_after,
            args.big_body_bytes,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
