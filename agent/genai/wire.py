"""What every provider parser reads from an `HttpExchange` the same way.

Takes an `agent.capture.exchange.HttpExchange`; gives the normalized request path, the request
and response bodies decoded as tolerant JSON, the streamed events (the reassembled ones, or split
from the body when reassembly handed over none), and a base `InferenceCall` with the
wire-derived fields filled: HTTP status, duration, `traceparent`, request id, server address and
port, the truncation flag, and the stream timings.

Timing rules (both ends of a connection use the same formulas; on the server side the timestamps
are the server's view: request arrival to chunk written):

* duration = `end_mono_ns - start_mono_ns` (first request byte to last response byte);
* time to first chunk = arrival of the first event that carries generated output (text,
  reasoning, tool call) minus `start_mono_ns`, the request's first byte (the convention measures
  from request issue); streaming calls only;
* time per output chunk = gaps between successive output-carrying events.

Never raises on malformed exchanges.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from agent.capture.exchange import HttpExchange, Role
from agent.genai import jsonvalue
from agent.genai.call import InferenceCall

_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_LINE_SPLIT_RE = re.compile(rb"\r\n|\r|\n")
_NS_PER_S = 1e9


@dataclass(frozen=True, slots=True)
class Event:
    """One streamed event; `arrival_mono_ns` is None when it was split from a body afterwards."""

    arrival_mono_ns: int | None
    data: bytes
    event: str | None = None


@dataclass(frozen=True, slots=True)
class Body:
    """A decoded body: the value, and whether it was complete JSON."""

    value: object
    complete: bool
    present: bool

    @property
    def partial(self) -> bool:
        """Bytes were there but only a prefix (or nothing) parsed."""
        return self.present and not self.complete


def request_path(exchange: HttpExchange) -> str:
    """The request path without query string, scheme/host (proxy form) or trailing slash."""
    path = exchange.path if isinstance(exchange.path, str) else ""
    if path.startswith(("http://", "https://")):
        slash = path.find("/", path.find("//") + 2)
        path = path[slash:] if slash >= 0 else "/"
    path = path.split("?", 1)[0].split("#", 1)[0]
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    return path


def is_post(exchange: HttpExchange) -> bool:
    """True for POST requests (every inference API here is a POST)."""
    return isinstance(exchange.method, str) and exchange.method.upper() == "POST"


def path_endswith(path: str, *suffixes: str) -> bool:
    """True when `path` is one of `suffixes` or ends with `/` + one of them (a routing prefix)."""
    return any(path == s or path.endswith(s if s.startswith("/") else "/" + s) for s in suffixes)


def _decode(data: bytes) -> Body:
    if not isinstance(data, bytes | bytearray) or not data.strip():
        return Body(None, False, False)
    value, complete = jsonvalue.loads(bytes(data))
    return Body(value, complete, True)


def request_json(exchange: HttpExchange) -> Body:
    """The request body as JSON (possibly a prefix read)."""
    return _decode(exchange.request_body)


def response_json(exchange: HttpExchange) -> Body:
    """The response body as JSON (possibly a prefix read)."""
    return _decode(exchange.response_body)


def content_type(exchange: HttpExchange) -> str:
    """The response content type, lower-cased."""
    value = exchange.response_headers.get("content-type", "")
    return value.lower() if isinstance(value, str) else ""


def response_streamed(exchange: HttpExchange) -> bool:
    """The response was SSE or NDJSON."""
    ctype = content_type(exchange)
    return "event-stream" in ctype or "ndjson" in ctype or bool(exchange.stream_events)


def events(exchange: HttpExchange) -> list[Event]:
    """The streamed events: the reassembled ones, else split from the response body."""
    if exchange.stream_events:
        out: list[Event] = []
        for ev in exchange.stream_events:
            data = ev.data if isinstance(ev.data, bytes | bytearray) else b""
            arrival = ev.arrival_mono_ns if isinstance(ev.arrival_mono_ns, int) else None
            name = ev.event if isinstance(ev.event, str) else None
            out.append(Event(arrival, bytes(data), name))
        return out
    body = exchange.response_body
    if not isinstance(body, bytes | bytearray) or not body:
        return []
    ctype = content_type(exchange)
    head = bytes(body[:16]).lstrip()
    if "event-stream" in ctype or head.startswith((b"data:", b"event:", b":")):
        return [Event(None, data, name) for name, data in split_sse(bytes(body))]
    if "ndjson" in ctype:
        return [Event(None, line) for line in split_lines(bytes(body))]
    return []


def first_response_value(exchange: HttpExchange, limit_bytes: int = 4096) -> object:
    """The first streamed event's JSON, else the response body's, read from a bounded prefix.

    Used to recognise the response's shape cheaply: top-level fields that tell APIs apart
    (`object`, `type`, `created_at`) come early, so a prefix read is enough and large bodies
    (embedding vectors) are not decoded again.
    """
    head: list[bytes] = [
        ev.data for ev in exchange.stream_events[:4] if isinstance(ev.data, bytes | bytearray)
    ]
    if not exchange.stream_events:
        head = [ev.data for ev in events(exchange)[:4]]
    for raw in head:
        data = bytes(raw).strip()
        if data and data != b"[DONE]":
            return _bounded_json(data, limit_bytes)
    if head:
        return None
    body = exchange.response_body
    if not isinstance(body, bytes | bytearray) or not body:
        return None
    return _bounded_json(bytes(body), limit_bytes)


def _bounded_json(data: bytes, limit_bytes: int) -> object:
    if len(data) <= limit_bytes:
        return jsonvalue.loads(data)[0]
    return jsonvalue.loads_prefix(data[:limit_bytes])


def split_sse(body: bytes) -> list[tuple[str | None, bytes]]:
    """Split an SSE body into `(event name, data)` pairs; comments and keep-alives dropped."""
    out: list[tuple[str | None, bytes]] = []
    name: str | None = None
    data: list[bytes] = []
    for line in _LINE_SPLIT_RE.split(body):
        if not line:
            if data:
                out.append((name, b"\n".join(data)))
            name, data = None, []
            continue
        if line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", errors="replace")
    if data:  # the last event lost its blank line to a cut; keep what arrived
        out.append((name, b"\n".join(data)))
    return out


def split_lines(body: bytes) -> list[bytes]:
    """Split an NDJSON body into its non-empty lines."""
    return [line.strip() for line in _LINE_SPLIT_RE.split(body) if line.strip()]


def parse_traceparent(value: object) -> str | None:
    """A valid W3C `traceparent` value (version-00 part only), else None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    m = _TRACEPARENT_RE.fullmatch(value)
    if m is None:
        return None
    version, trace_id, parent_id, _flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return value[:55]


def header_count(headers: dict[str, str], name: str) -> int | None:
    """A non-negative integer header value."""
    value = headers.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


def _split_host(host: str) -> tuple[str | None, int | None]:
    host = host.strip()
    if not host:
        return None, None
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None, None
        name, rest = host[1:end], host[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        name, sep, port_text = host.rpartition(":")
        if not sep or not port_text.isdigit():
            name, port_text = host, ""
    valid = port_text.isascii() and port_text.isdigit() and len(port_text) < 6
    port = int(port_text) if valid else None
    return (name or None), port


def server_endpoint(exchange: HttpExchange) -> tuple[str | None, int | None]:
    """The server's address and port: the Host header's name, else the socket's server end."""
    conn = exchange.conn
    if conn.role == Role.SERVER:
        addr, conn_port = conn.local_addr, conn.local_port
    else:
        addr, conn_port = conn.peer_addr, conn.peer_port
    host = exchange.request_headers.get("host")
    name, host_port = _split_host(host) if isinstance(host, str) else (None, None)
    port = host_port
    if port is None and isinstance(conn_port, int) and conn_port > 0:
        port = conn_port
    if port is None and name is not None:
        port = 443 if conn.tls else 80
    address = name or (addr if isinstance(addr, str) and addr else None)
    return address, (port if address is not None else None)


def new_call(exchange: HttpExchange, provider: str, operation: str, api: str) -> InferenceCall:
    """An `InferenceCall` with everything the exchange itself tells (no body fields yet)."""
    call = InferenceCall(provider=provider, operation=operation, api=api)
    status = exchange.status
    call.http_status = status if isinstance(status, int) and not isinstance(status, bool) else None
    if call.http_status is not None and call.http_status >= 400:
        call.error_type = str(call.http_status)
    start, end = exchange.start_mono_ns, exchange.end_mono_ns
    if isinstance(start, int) and isinstance(end, int) and end >= start:
        call.duration_s = (end - start) / _NS_PER_S
    call.traceparent = parse_traceparent(exchange.request_headers.get("traceparent"))
    for name in ("x-request-id", "request-id"):
        rid = exchange.response_headers.get(name)
        if isinstance(rid, str) and rid.strip():
            call.request_id = rid.strip()
            break
    call.server_address, call.server_port = server_endpoint(exchange)
    call.truncated = bool(
        exchange.request_truncated or exchange.response_truncated or exchange.response_missing
    )
    return call


def forgive_cut_after_end(call: InferenceCall, exchange: HttpExchange) -> None:
    """A stream whose terminal event arrived whole is complete, even when the HTTP body was
    cut: clients commonly close the connection right after that event, before the chunked
    body's closing chunk. Only a cut request or a missing response still count as truncated."""
    if not (exchange.request_truncated or exchange.response_missing):
        call.truncated = False


def set_stream_timing(
    call: InferenceCall, exchange: HttpExchange, output_arrivals: Iterable[int | None]
) -> None:
    """Time to first chunk and time per output chunk from the output-carrying events' arrivals."""
    arrivals = list(output_arrivals)
    if not arrivals or any(a is None for a in arrivals):
        return
    known = [a for a in arrivals if a is not None]
    start = exchange.start_mono_ns
    if isinstance(start, int) and known[0] >= start:
        call.time_to_first_chunk_s = (known[0] - start) / _NS_PER_S
    call.time_per_output_chunk_s = [
        (b - a) / _NS_PER_S for a, b in itertools.pairwise(known) if b >= a
    ]


def set_error(call: InferenceCall, error_type: str | None) -> None:
    """Record a provider error type (keeps the HTTP-status fallback when the body has none)."""
    if error_type:
        call.error_type = error_type
    elif call.error_type is None:
        call.error_type = "_OTHER"
