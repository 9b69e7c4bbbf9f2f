"""Reading an HTTP request body under a size limit, inflating gzip or deflate on the fly.

Takes the body as an async stream of chunks, its `Content-Encoding` and the limit; gives the
decoded bytes. The limit applies to the decoded size: inflation proceeds chunk by chunk with
zlib's `max_length`, so a compression bomb is refused after at most `limit` bytes of output,
never inflated whole. Raises `BodyTooLargeError` past the limit and `BadEncodingError` for a
corrupt or truncated compressed stream. Supported codings: identity, gzip (also x-gzip, and several
concatenated gzip members), deflate (zlib-wrapped, or raw as some clients send it).
`body_format(content_type, content_encoding)` checks both headers before any byte is read and
gives the OTLP encoding, or raises `UnsupportedFormatError` with the message for a 415.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Literal

#: Content-Encoding values this module reads, lower-case.
SUPPORTED_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})

Encoding = Literal["protobuf", "json"]
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MEDIA_TYPES: dict[str, Encoding] = {
    PROTOBUF: "protobuf",
    "application/protobuf": "protobuf",
    JSON: "json",
}


class UnsupportedFormatError(Exception):
    """The Content-Type or Content-Encoding is not one OTLP/HTTP receivers read."""


def media_encoding(content_type: str) -> Encoding | None:
    """The OTLP encoding a Content-Type names (parameters ignored), if any."""
    return _MEDIA_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def body_format(content_type: str, content_encoding: str) -> tuple[Encoding, str]:
    """The OTLP encoding and the lower-case Content-Encoding of a request, both supported."""
    encoding = media_encoding(content_type)
    if encoding is None:
        shown = content_type[:100] or "none"
        raise UnsupportedFormatError(
            f"unsupported Content-Type {shown!r}; use {PROTOBUF} or {JSON}"
        )
    coding = content_encoding.strip().lower()
    if coding not in SUPPORTED_ENCODINGS:
        raise UnsupportedFormatError(
            f"unsupported Content-Encoding {coding[:100]!r}; use gzip, deflate or none"
        )
    return encoding, coding


class BodyTooLargeError(Exception):
    """The (decoded) body is larger than the limit."""


class BadEncodingError(Exception):
    """The body is not valid in the Content-Encoding it declares."""


class _Inflater:
    """Incremental inflation with a ceiling on the total output."""

    def __init__(self, encoding: str, limit: int) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._raw_deflate = False
        self._limit = limit
        self._out = bytearray()
        self._d = self._new()
        self._started = False

    def _new(self) -> zlib._Decompress:
        if self._gzip:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(-zlib.MAX_WBITS if self._raw_deflate else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if not self._started:
            self._started = True
            # 'deflate' should be zlib-wrapped, but raw deflate is common; a zlib header has 8
            # (deflate) in the low nibble of its first byte and is a multiple of 31.
            if not self._gzip and not (
                len(data) >= 2 and data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            ):
                self._raw_deflate = True
                self._d = self._new()
        while data:
            if self._d.eof:
                # Another gzip member follows the first (allowed by RFC 1952).
                if not self._gzip:
                    raise BadEncodingError("data after the end of the deflate stream")
                self._d = self._new()
            room = self._limit - len(self._out) + 1
            try:
                chunk = self._d.decompress(data, room)
            except zlib.error as exc:
                raise BadEncodingError(f"corrupt compressed body: {exc}") from None
            self._out += chunk
            if len(self._out) > self._limit:
                raise BodyTooLargeError
            rest = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
            if not chunk and len(rest) == len(data) and not self._d.eof:
                raise BadEncodingError("corrupt compressed body: no progress")
            data = rest

    def finish(self) -> bytes:
        if not self._started:
            return b""
        if not self._d.eof:
            raise BadEncodingError("truncated compressed body")
        return bytes(self._out)


async def read_body(chunks: AsyncIterator[bytes], encoding: str, limit: int) -> bytes:
    """Read and decode the whole body; see the module docstring for the errors raised."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        buf = bytearray()
        async for chunk in chunks:
            buf += chunk
            if len(buf) > limit:
                raise BodyTooLargeError
        return bytes(buf)
    inflater = _Inflater(encoding, limit)
    wire = 0
    async for chunk in chunks:
        wire += len(chunk)
        # Compressed input can be slightly larger than its output; allow a margin on the wire.
        if wire > limit + 65536:
            raise BodyTooLargeError
        inflater.feed(chunk)
    return inflater.finish()
