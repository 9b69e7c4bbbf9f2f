"""Golden cases: raw HTTP bytes on disk -> `HttpExchange` objects, plus the expected call.

Each case directory `golden/<provider>/<case>/` holds:

* `request.http`  - the request exactly as sent on the wire (request line, headers, body);
* `response.http` - the response exactly as received (status line, headers, body; chunked
  transfer coding and gzip as the server sent them); may be cut short for truncated cases;
* `meta.json`     - what the capture layer adds: connection (role, addresses, tls, pid), the
  monotonic timestamps, one arrival time per streamed event, truncation flags;
* `expected.json` - the `InferenceCall` (as `dataclasses.asdict`) that `parse_exchange` must give
  in content mode `full` (content redacted).

This loader stands in for the capture layer: it de-chunks, decompresses and splits SSE / NDJSON
bodies into events on its own, so the parsers are tested against independently decoded input.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.capture.exchange import ConnectionInfo, HttpExchange, Role, StreamEvent

GOLDEN_DIR = Path(__file__).parent / "golden"


@dataclass
class GoldenCase:
    """One golden case, loaded."""

    provider: str
    name: str
    path: Path
    meta: dict[str, Any]
    expected: dict[str, Any]
    request_raw: bytes
    response_raw: bytes

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.name}"

    def exchange(self) -> HttpExchange:
        """A fresh exchange built from the raw bytes."""
        return build_exchange(self.request_raw, self.response_raw, self.meta)


def _split_message(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, _, body = raw.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return (lines[0] if lines else ""), headers, body


def _dechunk(body: bytes) -> bytes:
    """Decode chunked transfer coding; a body cut mid-chunk keeps the bytes that arrived."""
    out = bytearray()
    pos = 0
    while pos < len(body):
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(body[pos:eol].split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        start = eol + 2
        out += body[start : start + size]
        pos = start + size + 2
    return bytes(out)


def _decode_body(headers: dict[str, str], body: bytes, truncated: bool) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    if headers.get("content-encoding", "").lower() == "gzip":
        # A streaming decompressor also yields what a cut gzip stream holds.
        body = (
            zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body)
            if truncated
            else (gzip.decompress(body))
        )
    return body


def sse_events(body: bytes) -> list[tuple[str | None, bytes]]:
    """SSE events as (event name, data) from a decoded body (a cut last event is kept)."""
    out: list[tuple[str | None, bytes]] = []
    for block in re.split(rb"\r?\n\r?\n", body):
        name: str | None = None
        data: list[bytes] = []
        for line in block.splitlines():
            if line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"event":
                name = value.decode()
            elif field == b"data":
                data.append(value)
        if data:
            out.append((name, b"\n".join(data)))
    return out


def build_exchange(request_raw: bytes, response_raw: bytes, meta: dict[str, Any]) -> HttpExchange:
    """The exchange the capture layer would hand over for these bytes and this metadata."""
    request_line, req_headers, req_body = _split_message(request_raw)
    method, _, rest = request_line.partition(" ")
    path = rest.rsplit(" ", 1)[0]
    req_body = _decode_body(req_headers, req_body, bool(meta.get("request_truncated")))
    conn = ConnectionInfo(
        pid=meta.get("pid", 1000),
        tid=meta.get("pid", 1000),
        comm=meta.get("comm", "python3"),
        role=Role(meta.get("role", "client")),
        local_addr=meta["local"][0],
        local_port=meta["local"][1],
        peer_addr=meta["peer"][0],
        peer_port=meta["peer"][1],
        tls=bool(meta.get("tls")),
    )
    exchange = HttpExchange(
        conn=conn,
        method=method,
        path=path,
        request_headers=req_headers,
        request_body=req_body,
        start_mono_ns=meta["start_ns"],
        request_end_mono_ns=meta["request_end_ns"],
        request_truncated=bool(meta.get("request_truncated")),
        response_truncated=bool(meta.get("response_truncated")),
        response_missing=bool(meta.get("response_missing")),
    )
    if not response_raw:
        exchange.end_mono_ns = meta.get("end_ns")
        return exchange
    status_line, resp_headers, resp_body = _split_message(response_raw)
    exchange.status = int(status_line.split(" ")[1])
    exchange.response_headers = resp_headers
    exchange.response_body = _decode_body(
        resp_headers, resp_body, bool(meta.get("response_truncated"))
    )
    exchange.first_byte_mono_ns = meta.get("first_byte_ns")
    exchange.end_mono_ns = meta.get("end_ns")
    ctype = resp_headers.get("content-type", "")
    arrivals: list[int] = meta.get("event_arrival_ns", [])
    pieces: list[tuple[str | None, bytes]] = []
    if "text/event-stream" in ctype:
        pieces = sse_events(exchange.response_body)
    elif "ndjson" in ctype:
        pieces = [(None, line) for line in exchange.response_body.splitlines() if line.strip()]
    if pieces:
        assert len(pieces) == len(arrivals), (
            f"{len(pieces)} events but {len(arrivals)} arrival times"
        )
        exchange.stream_events = [
            StreamEvent(arrival_mono_ns=t, data=d, event=e)
            for (e, d), t in zip(pieces, arrivals, strict=True)
        ]
    return exchange


def load_case(path: Path) -> GoldenCase:
    """Read one case directory."""
    response_file = path / "response.http"
    return GoldenCase(
        provider=path.parent.name,
        name=path.name,
        path=path,
        meta=json.loads((path / "meta.json").read_text()),
        expected=json.loads((path / "expected.json").read_text()),
        request_raw=(path / "request.http").read_bytes(),
        response_raw=response_file.read_bytes() if response_file.exists() else b"",
    )


def all_cases() -> list[GoldenCase]:
    """Every golden case, sorted by provider then name."""
    return [load_case(p) for p in sorted(GOLDEN_DIR.glob("*/*")) if (p / "meta.json").exists()]
