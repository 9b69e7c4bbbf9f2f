"""HTTP/1.x reassembly: the bytes of one connection, both ways, into `HttpExchange`s.

Takes, per connection, chunks of bytes in the order they moved, each with its direction
(egress/ingress as the traced process saw it), its CLOCK_MONOTONIC time and how many bytes were
lost right after it (the capture copies a bounded amount per call); and the connection's end.
Gives one `HttpExchange` per request and its response: headers, bodies with chunked transfer
coding and gzip/deflate content coding undone, and the events of streamed responses (SSE,
NDJSON) each stamped with the arrival of the chunk that completed it.

Handles keep-alive reuse and pipelining (responses are matched to requests in order), interim
1xx responses, HEAD and bodiless statuses, bodies delimited by the connection's end, messages
cut by lost bytes (marked truncated; parsing resumes at the next chunk that starts a message),
records lost whole (`lose()`: nothing is paired across the hole),
requests whose response never came (`response_missing`; a connection with more than
`MAX_PENDING_REQUESTS` of them waiting gives them all up and is ignored from then on). HTTP/2
(the connection preface) and protocol upgrades are detected and then ignored; bytes that are not
HTTP/1 are dropped.
Pure: no I/O, no clocks; never raises on malformed input.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from enum import Enum

from agent.capture.events import Direction
from agent.capture.exchange import ConnectionInfo, HttpExchange, Role, StreamEvent
from agent.capture.streaming import ContentDecoder, StreamDecoder, stream_decoder_for

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
KNOWN_METHODS = (
    b"GET",
    b"POST",
    b"PUT",
    b"DELETE",
    b"PATCH",
    b"HEAD",
    b"OPTIONS",
    b"CONNECT",
    b"TRACE",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"REPORT",
    b"SEARCH",
    b"PURGE",
)
_REQUEST_LINE = re.compile(rb"([A-Z][A-Z0-9_-]{0,19}) ([\x21-\x7e]+) HTTP/(1\.[01])")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([1-9][0-9]{2})(?: ([^\r\n]*))?")
_RESPONSE_PREFIX = b"HTTP/1."
_MAX_CHUNK_LINE = 4096
# Requests waiting for their responses on one connection. Real pipelines are a few deep; a
# connection past this is answered by nothing we can see, and following it would cost memory
# (and time) without bound.
MAX_PENDING_REQUESTS = 256


def looks_like_request_start(data: bytes) -> bool:
    """True when `data` begins with a known method and a space (or could, if it is short)."""
    head = data[:10]
    for m in KNOWN_METHODS:
        token = m + b" "
        if head.startswith(token) or (len(head) < len(token) and token.startswith(head)):
            return bool(head)
    return False


def looks_like_response_start(data: bytes) -> bool:
    """True when `data` begins with `HTTP/1.` (or could, if it is short)."""
    head = data[: len(_RESPONSE_PREFIX)]
    return bool(head) and _RESPONSE_PREFIX.startswith(head)


def _could_be_h2_preface(data: bytes) -> bool:
    head = data[: len(H2_PREFACE)]
    return bool(head) and H2_PREFACE.startswith(head)


def parse_headers(lines: list[bytes]) -> dict[str, str] | None:
    """Header lines as a dict with lower-cased names, repeats joined by ", "; None if invalid."""
    headers: dict[str, str] = {}
    for raw in lines:
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t"):
            # obsolete line folding: continues the previous value
            if not headers:
                return None
            last = next(reversed(headers))
            headers[last] += " " + raw.strip().decode("latin-1")
            continue
        name, sep, value = raw.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name:
            return None
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


class _State(Enum):
    HEAD = "head"  # waiting for / inside a start line and headers
    FIXED = "fixed"  # Content-Length body
    CHUNK_SIZE = "chunk_size"
    CHUNK_DATA = "chunk_data"
    CHUNK_DATA_END = "chunk_data_end"  # the CRLF after a chunk
    TRAILERS = "trailers"
    UNTIL_CLOSE = "until_close"
    DESYNC = "desync"  # lost our place: waiting for a chunk that starts a message
    OPAQUE = "opaque"  # HTTP/2, an upgrade, a tunnel, or not HTTP: ignored


class _Message:
    """One request or response being parsed, with its decoded body."""

    def __init__(self, start_mono_ns: int, max_body_bytes: int) -> None:
        self.start_mono_ns = start_mono_ns
        self.end_mono_ns: int | None = None
        self.last_mono_ns = start_mono_ns
        self.method = ""
        self.path = ""
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.truncated = False
        self.events: list[StreamEvent] = []
        self._max_body = max_body_bytes
        self._content: ContentDecoder | None = None
        self._stream: StreamDecoder | None = None

    def set_head(self, headers: dict[str, str], streaming: bool) -> None:
        self.headers = headers
        self._content = ContentDecoder(headers.get("content-encoding", ""), self._max_body)
        if streaming and not self._content.undecoded:
            self._stream = stream_decoder_for(headers.get("content-type", ""))

    def add_body(self, data: bytes, mono_ns: int) -> None:
        if not data:
            return
        self.last_mono_ns = mono_ns
        decoded = self._content.feed(data) if self._content is not None else data
        if self._content is not None and (self._content.failed or self._content.overflow):
            self.truncated = True
        room = self._max_body - len(self.body)
        if len(decoded) > room:
            self.truncated = True
        if room > 0:
            self.body += decoded[:room]
        if self._stream is not None and decoded:
            self.events.extend(self._stream.feed(decoded, mono_ns))

    def add_gap(self, mono_ns: int) -> None:
        """Body bytes went by uncopied: decoding after them is impossible or unreliable."""
        self.truncated = True
        self.last_mono_ns = mono_ns
        if self._content is not None and self._content.active:
            self._content.failed = True
        self._stream = None

    def finish(self, mono_ns: int, truncated: bool) -> None:
        if self.end_mono_ns is not None:
            return
        self.end_mono_ns = mono_ns
        self.last_mono_ns = mono_ns
        if truncated:
            self.truncated = True
        if self._stream is not None and not truncated:
            self.events.extend(self._stream.finish(mono_ns))


class _Side:
    """Parser for the messages one side sends (requests or responses)."""

    def __init__(self, conn: HttpConnection, is_request: bool) -> None:
        self.conn = conn
        self.is_request = is_request
        self.state = _State.HEAD
        self.buf = bytearray()
        self.buf_start_ns = 0
        self.msg: _Message | None = None
        self.remaining = 0  # bytes left in a fixed body or the current chunk
        self.parsed_any = False

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, data: bytes, mono_ns: int) -> None:
        if self.state is _State.OPAQUE or not data:
            return
        if self.state is _State.DESYNC:
            if not self._starts_message(data):
                return
            self.state = _State.HEAD
            self.buf.clear()
        pos = 0
        n = len(data)
        # Each pass consumes some of `data` or returns; the bound is only a safety net.
        for _ in range(4 * n + 16):
            if pos >= n or self.state in (_State.OPAQUE, _State.DESYNC):
                return
            if self.state is _State.HEAD:
                pos = self._feed_head(data, pos, mono_ns)
            elif self.state is _State.FIXED:
                take = min(self.remaining, n - pos)
                self._body(data[pos : pos + take], mono_ns)
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self._end(mono_ns, truncated=False)
            elif self.state is _State.UNTIL_CLOSE:
                self._body(data[pos:], mono_ns)
                return
            elif self.state is _State.CHUNK_DATA:
                take = min(self.remaining, n - pos)
                self._body(data[pos : pos + take], mono_ns)
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = _State.CHUNK_DATA_END
            else:
                pos = self._feed_chunk_lines(data, pos, mono_ns)
        self._desync(mono_ns)

    def gap(self, lost: int, mono_ns: int) -> None:
        """`lost` bytes went by without being seen."""
        if lost <= 0 or self.state in (_State.OPAQUE, _State.DESYNC):
            return
        if self.state in (_State.FIXED, _State.CHUNK_DATA):
            if self.msg is not None:
                self.msg.add_gap(mono_ns)
            take = min(lost, self.remaining)
            self.remaining -= take
            lost -= take
            if self.remaining == 0:
                if self.state is _State.FIXED:
                    self._end(mono_ns, truncated=True)
                else:
                    self.state = _State.CHUNK_DATA_END
            if lost > 0:
                self._desync(mono_ns)
            return
        if self.state is _State.UNTIL_CLOSE:
            if self.msg is not None:
                self.msg.add_gap(mono_ns)
            return
        self._desync(mono_ns)

    def close(self, mono_ns: int) -> None:
        """The connection ended: a body delimited by the close is complete, others are cut."""
        if self.state is _State.UNTIL_CLOSE:
            self._end(mono_ns, truncated=False)
        elif self.msg is not None:
            self._end(mono_ns, truncated=True)
        elif self.state is _State.HEAD and self.buf:
            # A message that never got past its headers.
            self.conn.side_lost_message(self, mono_ns)
        self.buf.clear()
        self.state = _State.OPAQUE

    # -- internals -------------------------------------------------------------------------

    def _starts_message(self, data: bytes) -> bool:
        if self.is_request:
            return looks_like_request_start(data) and len(data) >= 4
        return data.startswith(_RESPONSE_PREFIX)

    def _plausible_prefix(self, data: bytes) -> bool:
        if self.is_request:
            return looks_like_request_start(data) or _could_be_h2_preface(data)
        return looks_like_response_start(data)

    def _feed_head(self, data: bytes, pos: int, mono_ns: int) -> int:
        if not self.buf:
            # Stray line ends between messages are allowed and ignored.
            while pos < len(data) and data[pos] in (0x0D, 0x0A):
                pos += 1
            if pos >= len(data):
                return pos
            self.buf_start_ns = mono_ns
        self.buf += data[pos:]
        pos = len(data)
        if self.is_request and _could_be_h2_preface(bytes(self.buf[: len(H2_PREFACE)])):
            if len(self.buf) >= len(H2_PREFACE):
                self.conn.saw_http2()
            return pos
        if not self._plausible_prefix(bytes(self.buf[:24])):
            self._desync(mono_ns)
            return pos
        end = self.buf.find(b"\r\n\r\n")
        sep = 4
        lf_end = self.buf.find(b"\n\n")
        if lf_end >= 0 and (end < 0 or lf_end < end):
            end, sep = lf_end, 2
        if end < 0:
            if len(self.buf) > self.conn.max_header_bytes:
                self._desync(mono_ns)
            return pos
        head = bytes(self.buf[:end])
        rest = bytes(self.buf[end + sep :])
        self.buf.clear()
        if not self._start_message(head, mono_ns):
            self._desync(mono_ns)
            return pos
        # The header block cannot end inside bytes buffered earlier (we would have seen it),
        # so what follows it is a suffix of this chunk: hand it back to the main loop.
        return len(data) - len(rest)

    def _start_message(self, head: bytes, mono_ns: int) -> bool:
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        start, header_lines = lines[0], lines[1:]
        headers = parse_headers(header_lines)
        if headers is None:
            return False
        msg = _Message(self.buf_start_ns or mono_ns, self.conn.max_body_bytes)
        if self.is_request:
            m = _REQUEST_LINE.fullmatch(start)
            if m is None:
                return False
            msg.method = m.group(1).decode("ascii")
            msg.path = m.group(2).decode("latin-1")
        else:
            m = _STATUS_LINE.fullmatch(start)
            if m is None:
                return False
            msg.status = int(m.group(2))
        self.parsed_any = True
        msg.set_head(headers, streaming=not self.is_request)
        self.msg = msg
        self.conn.side_started(self, msg, mono_ns)
        if self.state is _State.OPAQUE:
            return True
        self._choose_framing(msg, mono_ns)
        return True

    def _choose_framing(self, msg: _Message, mono_ns: int) -> None:
        te = msg.headers.get("transfer-encoding", "").lower()
        cl = msg.headers.get("content-length")
        if not self.is_request:
            status = msg.status or 0
            method = self.conn.expected_response_method()
            if status < 200 or status in (204, 304) or method == "HEAD":
                self._end(mono_ns, truncated=False)
                return
        if "chunked" in te:
            self.state = _State.CHUNK_SIZE
            return
        if cl is not None:
            try:
                length = int(cl.split(",")[0].strip())
            except ValueError:
                length = -1
            if length < 0:
                self._desync(mono_ns)
                return
            if length == 0:
                self._end(mono_ns, truncated=False)
                return
            self.state = _State.FIXED
            self.remaining = length
            return
        if self.is_request:
            self._end(mono_ns, truncated=False)
        else:
            self.state = _State.UNTIL_CLOSE

    def _feed_chunk_lines(self, data: bytes, pos: int, mono_ns: int) -> int:
        nl = data.find(b"\n", pos)
        if nl < 0:
            self.buf += data[pos:]
            if len(self.buf) > _MAX_CHUNK_LINE:
                self._desync(mono_ns)
            return len(data)
        line = bytes(self.buf) + data[pos:nl]
        self.buf.clear()
        pos = nl + 1
        line = line.rstrip(b"\r")
        if self.state is _State.CHUNK_DATA_END:
            if line:
                self._desync(mono_ns)
                return pos
            self.state = _State.CHUNK_SIZE
        elif self.state is _State.CHUNK_SIZE:
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                self._desync(mono_ns)
                return pos
            if size < 0:
                self._desync(mono_ns)
                return pos
            if size == 0:
                self.state = _State.TRAILERS
            else:
                self.state = _State.CHUNK_DATA
                self.remaining = size
        elif self.state is _State.TRAILERS and not line:
            self._end(mono_ns, truncated=False)
        return pos

    def _body(self, data: bytes, mono_ns: int) -> None:
        if self.msg is not None and data:
            self.msg.add_body(data, mono_ns)

    def _end(self, mono_ns: int, truncated: bool) -> None:
        msg = self.msg
        self.msg = None
        self.remaining = 0
        self.buf.clear()
        if self.state is not _State.OPAQUE:
            self.state = _State.HEAD
        if msg is not None:
            msg.finish(mono_ns, truncated)
            self.conn.side_ended(self, msg)

    def _desync(self, mono_ns: int) -> None:
        if self.state is _State.OPAQUE:
            return
        lost_head = self.msg is None and bool(self.buf)
        if self.msg is not None:
            self._end(mono_ns, truncated=True)
        elif lost_head or self.parsed_any:
            self.conn.side_lost_message(self, mono_ns)
        self.buf.clear()
        self.remaining = 0
        self.state = _State.DESYNC
        self.conn.desyncs += 1


@dataclasses.dataclass
class _Pending:
    """A request waiting for its response (or a placeholder for one we could not read)."""

    msg: _Message | None
    complete: bool = False


class HttpConnection:
    """Reassembles the HTTP/1.x exchanges of one connection.

    `role` says which direction carries requests (a client sends them, a server receives
    them); when None it is inferred from the first bytes. `conn` is copied into every
    exchange, so later changes (a TLS binding that fills in addresses) apply to later ones.
    """

    def __init__(
        self,
        conn: ConnectionInfo,
        role: Role | None = None,
        *,
        max_body_bytes: int = 8 * 1024 * 1024,
        max_header_bytes: int = 64 * 1024,
        max_pending_requests: int = MAX_PENDING_REQUESTS,
    ) -> None:
        self.conn = conn
        self.role = role
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.max_pending_requests = max_pending_requests
        self.requests = _Side(self, is_request=True)
        self.responses = _Side(self, is_request=False)
        self.pending: deque[_Pending] = deque()
        self.http2 = False
        self.upgraded = False
        self.closed = False
        self.desyncs = 0
        self.orphan_responses = 0
        self.lost_requests = 0
        self.pending_overflow = False  # given up: too many requests without a response
        self.losses = 0  # times records went missing (see lose())
        self.last_mono_ns = 0
        self._out: list[HttpExchange] = []
        self._orphan: _Message | None = None

    # -- public ----------------------------------------------------------------------------

    @property
    def is_http(self) -> bool:
        """Whether any HTTP/1 message was recognized on this connection."""
        return self.requests.parsed_any or self.responses.parsed_any

    def feed(
        self, direction: Direction, data: bytes, mono_ns: int, lost_bytes: int = 0
    ) -> list[HttpExchange]:
        """Bytes that moved in `direction`, then `lost_bytes` that moved uncopied."""
        if self.closed:
            return []
        self.last_mono_ns = max(self.last_mono_ns, mono_ns)
        if self.role is None:
            self._infer_role(direction, data)
            if self.role is None:
                return []
        side = self._side_for(direction)
        if data:
            side.feed(data, mono_ns)
        if lost_bytes > 0:
            side.gap(lost_bytes, mono_ns)
        return self._take()

    def close(self, mono_ns: int) -> list[HttpExchange]:
        """The connection ended: finish what can be finished, give up the rest."""
        if self.closed:
            return []
        self.responses.close(mono_ns)
        self.requests.close(mono_ns)
        while self.pending:
            pend = self.pending.popleft()
            if pend.msg is not None:
                self._emit(pend, None, mono_ns)
        self.closed = True
        return self._take()

    def lose(self, mono_ns: int) -> list[HttpExchange]:
        """Some of this connection's bytes went missing, how many and which way unknown (the
        capture dropped whole records). Pairing a later response with a waiting request would
        be a guess: a response in progress ends cut (with its request), requests still waiting
        are given up (response missing), and each side resumes at its next message start."""
        if self.closed or self.role is None:
            return []
        self.losses += 1
        for side in (self.responses, self.requests):
            if side.state is _State.OPAQUE:
                continue
            if side.msg is not None:
                side._end(mono_ns, truncated=True)
            side.buf.clear()
            side.remaining = 0
            side.state = _State.DESYNC
        while self.pending:
            pend = self.pending.popleft()
            if pend.msg is not None:
                self._emit(pend, None, mono_ns)
        self._orphan = None
        return self._take()

    def expire(self, now_mono_ns: int, idle_ns: int) -> list[HttpExchange]:
        """Give up on requests when nothing moved for `idle_ns`; the connection stays open."""
        if self.closed or not self.pending or now_mono_ns - self.last_mono_ns < idle_ns:
            return []
        if self.responses.msg is not None:
            self.responses._end(now_mono_ns, truncated=True)
        while self.pending:
            pend = self.pending.popleft()
            if pend.msg is not None:
                self._emit(pend, None, now_mono_ns)
        return self._take()

    # -- callbacks from the sides ----------------------------------------------------------

    def saw_http2(self) -> None:
        self.http2 = True
        self._go_opaque()

    def expected_response_method(self) -> str | None:
        for pend in self.pending:
            return pend.msg.method if pend.msg is not None else None
        return None

    def side_started(self, side: _Side, msg: _Message, mono_ns: int) -> None:
        if side.is_request:
            self.pending.append(_Pending(msg))
            if len(self.pending) > self.max_pending_requests:
                # Give every waiting request up (response missing) and ignore the rest of the
                # connection: pairing later responses with the right requests is lost anyway.
                self.pending_overflow = True
                while self.pending:
                    self._emit(self.pending.popleft(), None, mono_ns)
                self._go_opaque()
            return
        status = msg.status or 0
        if status == 101:
            # Switching protocols (WebSocket, h2c): the exchange ends here, the rest is not
            # HTTP/1.
            if self.pending and self.pending[0].msg is not None:
                msg.finish(mono_ns, truncated=False)
                self._emit(self.pending.popleft(), msg, mono_ns)
            self.upgraded = True
            self._go_opaque()
            return
        if not self.pending and status >= 200:
            self.orphan_responses += 1
            self._orphan = msg
        if (
            200 <= status < 300
            and self.pending
            and self.pending[0].msg is not None
            and self.pending[0].msg.method == "CONNECT"
        ):
            # A tunnel: what follows is someone else's protocol (often TLS).
            self._emit(self.pending.popleft(), msg, mono_ns)
            self.upgraded = True
            self._go_opaque()

    def side_ended(self, side: _Side, msg: _Message) -> None:
        if side.is_request:
            # The request ending is nearly always the newest one: look from that end.
            for pend in reversed(self.pending):
                if pend.msg is msg:
                    pend.complete = True
                    break
            return
        if msg is self._orphan:
            self._orphan = None
            return
        if (msg.status or 0) < 200:
            return  # interim response: the final one follows
        if not self.pending:
            return
        pend = self.pending.popleft()
        if pend.msg is None:
            self.lost_requests += 1
            return
        self._emit(pend, msg, msg.end_mono_ns or msg.last_mono_ns)

    def side_lost_message(self, side: _Side, mono_ns: int) -> None:
        """A message whose start was not readable (lost bytes, or garbage after a message)."""
        if side.is_request:
            # Its response will come: let it pair with a placeholder, not the next request.
            self.pending.append(_Pending(None, complete=True))
        elif self.pending and self.responses.msg is None:
            pend = self.pending.popleft()
            if pend.msg is not None:
                self._emit(pend, None, mono_ns, response_cut=True)

    # -- internals -------------------------------------------------------------------------

    def _infer_role(self, direction: Direction, data: bytes) -> None:
        if looks_like_request_start(data) or _could_be_h2_preface(data):
            requests_dir = direction
        elif looks_like_response_start(data):
            requests_dir = Direction.INGRESS if direction is Direction.EGRESS else Direction.EGRESS
        else:
            return
        self.role = Role.CLIENT if requests_dir is Direction.EGRESS else Role.SERVER
        self.conn.role = self.role

    def _side_for(self, direction: Direction) -> _Side:
        egress_is_request = self.role is Role.CLIENT
        if (direction is Direction.EGRESS) == egress_is_request:
            return self.requests
        return self.responses

    def _go_opaque(self) -> None:
        self.requests.state = _State.OPAQUE
        self.responses.state = _State.OPAQUE
        self.requests.buf.clear()
        self.responses.buf.clear()

    def _emit(
        self,
        pend: _Pending,
        resp: _Message | None,
        mono_ns: int,
        *,
        response_cut: bool = False,
    ) -> None:
        req = pend.msg
        if req is None:
            return
        ex = HttpExchange(
            conn=dataclasses.replace(self.conn),
            method=req.method,
            path=req.path,
            request_headers=req.headers,
            request_body=bytes(req.body),
            start_mono_ns=req.start_mono_ns,
            request_end_mono_ns=req.end_mono_ns or req.last_mono_ns,
            request_truncated=req.truncated or not pend.complete,
        )
        if resp is not None:
            ex.status = resp.status
            ex.response_headers = resp.headers
            ex.response_body = bytes(resp.body)
            ex.first_byte_mono_ns = resp.start_mono_ns
            ex.end_mono_ns = resp.end_mono_ns or resp.last_mono_ns
            ex.stream_events = resp.events
            ex.response_truncated = resp.truncated
        else:
            ex.end_mono_ns = mono_ns
            ex.response_missing = not response_cut
            ex.response_truncated = response_cut
        self._out.append(ex)

    def _take(self) -> list[HttpExchange]:
        out, self._out = self._out, []
        return out
