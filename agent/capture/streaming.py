"""Incremental decoders for HTTP bodies: content encodings, server-sent events and NDJSON.

Takes body bytes in arrival order, each chunk with the CLOCK_MONOTONIC time it arrived; gives
decoded bytes, and `StreamEvent`s stamped with the arrival time of the chunk that completed
them. Pure: no I/O, never raises on malformed input (a broken encoding stops decoding and is
reported through `failed`).
"""

from __future__ import annotations

import zlib
from typing import Protocol

from agent.capture.exchange import StreamEvent

SSE_TYPES = ("text/event-stream",)
NDJSON_TYPES = (
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/jsonlines",
    "application/json-seq",
)


class ContentDecoder:
    """Undoes `Content-Encoding` incrementally (gzip, x-gzip, deflate, identity).

    Unknown encodings (br, zstd) pass bytes through unchanged and set `undecoded`. Output is
    limited to `max_output_bytes` in total, past which `overflow` is set.
    """

    def __init__(self, encoding: str, max_output_bytes: int) -> None:
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        self.failed = False
        self.undecoded = False
        self.overflow = False
        self._left = max_output_bytes
        self._kind = ""
        self._obj: zlib._Decompress | None = None
        self._deflate_decided = True
        self._seen = b""
        if not codings:
            return
        if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
            self.undecoded = True
            return
        self._kind = codings[0]
        if self._kind == "deflate":
            self._obj = zlib.decompressobj(zlib.MAX_WBITS)
            self._deflate_decided = False
        else:
            self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def active(self) -> bool:
        """True when bytes are being transformed (not passed through)."""
        return self._obj is not None and not self.failed

    def feed(self, data: bytes) -> bytes:
        """Decoded bytes for `data` (possibly empty while the decoder needs more input)."""
        if not data or self.failed:
            return b""
        if self._obj is None:
            return self._limit(data)
        cap = max(self._left, 1)
        if not self._deflate_decided:
            # "deflate" is zlib-wrapped by the RFC and raw in some servers: the first two
            # bytes (the zlib header) tell which.
            self._seen += data
            try:
                out = self._obj.decompress(data, cap)
                if len(self._seen) >= 2:
                    self._deflate_decided, self._seen = True, b""
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                seen, self._seen, self._deflate_decided = self._seen, b"", True
                try:
                    out = self._obj.decompress(seen, cap)
                except zlib.error:
                    self.failed = True
                    return b""
        else:
            try:
                out = self._obj.decompress(data, cap)
            except zlib.error:
                self.failed = True
                return b""
        if self._obj.unconsumed_tail:
            self.overflow = True
        return self._limit(out)

    def _limit(self, out: bytes) -> bytes:
        if len(out) > self._left:
            out = out[: self._left]
            self.overflow = True
        self._left -= len(out)
        return out


class StreamDecoder(Protocol):
    """Turns decoded body bytes into stream events."""

    def feed(self, data: bytes, mono_ns: int) -> list[StreamEvent]:
        """Events completed by `data`."""
        ...

    def finish(self, mono_ns: int) -> list[StreamEvent]:
        """Events completed by the end of the body."""
        ...


class SseDecoder:
    """Server-sent events (the WHATWG event-stream format).

    Lines end with CRLF, LF or CR; `data:` lines accumulate (joined with LF), `event:` names the
    event, a blank line dispatches it. Comments (`:`), `id:` and `retry:` carry nothing we keep.
    An event with no data is not dispatched, and an event cut off by the end of the stream is
    dropped, as the format says.
    """

    def __init__(self, max_line_bytes: int = 1 << 20) -> None:
        self._line = bytearray()
        self._skip_lf = False
        self._data: list[bytes] = []
        self._event: str | None = None
        self._started = False
        self._max_line = max_line_bytes

    def feed(self, data: bytes, mono_ns: int) -> list[StreamEvent]:
        """Events whose terminating blank line is in `data`."""
        out: list[StreamEvent] = []
        if not self._started and data:
            self._started = True
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
        start = 0
        n = len(data)
        while start < n:
            if self._skip_lf:
                self._skip_lf = False
                if data[start] == 0x0A:
                    start += 1
                    continue
            cr = data.find(b"\r", start)
            lf = data.find(b"\n", start)
            if cr < 0 and lf < 0:
                self._line += data[start:]
                if len(self._line) > self._max_line:
                    self._line.clear()
                break
            end = lf if cr < 0 else cr if lf < 0 else min(cr, lf)
            self._line += data[start:end]
            if data[end] == 0x0D:
                if end + 1 < n:
                    start = end + 2 if data[end + 1] == 0x0A else end + 1
                else:
                    self._skip_lf = True
                    start = end + 1
            else:
                start = end + 1
            event = self._line_done(bytes(self._line), mono_ns)
            self._line.clear()
            if event is not None:
                out.append(event)
        return out

    def _line_done(self, line: bytes, mono_ns: int) -> StreamEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            event = StreamEvent(
                arrival_mono_ns=mono_ns, data=b"\n".join(self._data), event=self._event
            )
            self._data = []
            self._event = None
            return event
        if line.startswith(b":"):
            return None
        name, sep, value = line.partition(b":")
        if sep and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        return None

    def finish(self, mono_ns: int) -> list[StreamEvent]:
        """Nothing: an unterminated event is not dispatched."""
        return []


class NdjsonDecoder:
    """Newline-delimited JSON: every non-blank line is one event (a final line may lack LF)."""

    def __init__(self, max_line_bytes: int = 1 << 22) -> None:
        self._line = bytearray()
        self._max_line = max_line_bytes

    def feed(self, data: bytes, mono_ns: int) -> list[StreamEvent]:
        """Lines completed by `data`."""
        out: list[StreamEvent] = []
        start = 0
        while True:
            lf = data.find(b"\n", start)
            if lf < 0:
                self._line += data[start:]
                if len(self._line) > self._max_line:
                    self._line.clear()
                break
            self._line += data[start:lf]
            event = self._emit(mono_ns)
            if event is not None:
                out.append(event)
            start = lf + 1
        return out

    def _emit(self, mono_ns: int) -> StreamEvent | None:
        line = bytes(self._line).rstrip(b"\r").lstrip(b"\x1e")  # json-seq record separator
        self._line.clear()
        if not line.strip():
            return None
        return StreamEvent(arrival_mono_ns=mono_ns, data=line)

    def finish(self, mono_ns: int) -> list[StreamEvent]:
        """The last line, when the body did not end with a newline."""
        event = self._emit(mono_ns)
        return [event] if event is not None else []


def stream_decoder_for(content_type: str) -> StreamDecoder | None:
    """The decoder for a Content-Type, or None when the body is not a stream of events."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype in SSE_TYPES:
        return SseDecoder()
    if ctype in NDJSON_TYPES:
        return NdjsonDecoder()
    return None
