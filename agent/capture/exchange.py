"""`HttpExchange`: one HTTP request and its response on one connection, as reassembled.

Produced by `agent.capture` from eBPF events; consumed by the provider parsers in
`agent.genai`. Times are CLOCK_MONOTONIC nanoseconds as the kernel stamped the events
(`*_mono_ns`); converting to wall time is the exporter's job. Bodies are already de-chunked and
decompressed; streamed responses also keep every event with its arrival time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """Which end of the connection this node's process is."""

    CLIENT = "client"  # the process connected: it sent the request
    SERVER = "server"  # the process accepted: it received the request


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One server-sent event (`data:` payload, with its `event:` name) or one NDJSON line."""

    arrival_mono_ns: int
    data: bytes
    event: str | None = None


@dataclass(slots=True)
class ConnectionInfo:
    """Who talked to whom."""

    pid: int
    tid: int = 0
    comm: str = ""
    role: Role = Role.CLIENT
    local_addr: str = ""
    local_port: int = 0
    peer_addr: str = ""
    peer_port: int = 0
    tls: bool = False
    cgroup_id: int = 0


@dataclass(slots=True)
class HttpExchange:
    """A request/response pair with wire timestamps.

    `start_mono_ns`: first byte of the request seen; `request_end_mono_ns`: last byte of the
    request; `first_byte_mono_ns`: first byte of the response; `end_mono_ns`: last byte of the
    response (or when the connection closed / the exchange was abandoned).
    Header names are lower-cased; repeated headers are joined with ", ".
    """

    conn: ConnectionInfo
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    start_mono_ns: int
    request_end_mono_ns: int
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    first_byte_mono_ns: int | None = None
    end_mono_ns: int | None = None
    stream_events: list[StreamEvent] = field(default_factory=list)
    request_truncated: bool = False
    response_truncated: bool = False
    response_missing: bool = False

    @property
    def host(self) -> str:
        """The Host header, or the peer address."""
        return self.request_headers.get("host", self.conn.peer_addr)

    @property
    def is_streaming(self) -> bool:
        """True when the response was SSE or NDJSON."""
        ctype = self.response_headers.get("content-type", "")
        return "text/event-stream" in ctype or "ndjson" in ctype or bool(self.stream_events)
