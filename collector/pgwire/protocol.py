"""PostgreSQL frontend/backend protocol 3.0 framing: messages in, messages out.

Takes bytes from an asyncio stream; gives (type, payload) frames and a `Payload` reader for their
fields. Builds every backend message the endpoint sends (authentication requests, ParameterStatus,
RowDescription, CommandComplete, ErrorResponse, ...). Pure functions; no state, no I/O besides
`read_frame` / `read_startup`. Must not: accept a frame longer than the configured limit.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3_0 = 196608

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_U32 = struct.Struct("!I")


class ProtocolError(Exception):
    """The client broke the protocol; the connection is closed after telling it why."""


def message(kind: bytes, payload: bytes = b"") -> bytes:
    """One backend message: type byte, length (including itself), payload."""
    return kind + _I32.pack(len(payload) + 4) + payload


def cstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


class Payload:
    """Sequential reader over one message's payload."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _unpack(self, layout: struct.Struct) -> int:
        try:
            value: int = layout.unpack_from(self._data, self._pos)[0]
        except struct.error:
            raise ProtocolError("message too short") from None
        self._pos += layout.size
        return value

    def int16(self) -> int:
        return self._unpack(_I16)

    def int32(self) -> int:
        return self._unpack(_I32)

    def uint32(self) -> int:
        return self._unpack(_U32)

    def byte(self) -> bytes:
        if self._pos >= len(self._data):
            raise ProtocolError("message too short")
        value = self._data[self._pos : self._pos + 1]
        self._pos += 1
        return value

    def cstring(self) -> str:
        end = self._data.find(b"\x00", self._pos)
        if end < 0:
            raise ProtocolError("missing string terminator")
        text = self._data[self._pos : end].decode("utf-8", errors="replace")
        self._pos = end + 1
        return text

    def take(self, size: int) -> bytes:
        if size < 0 or self._pos + size > len(self._data):
            raise ProtocolError("message too short")
        value = self._data[self._pos : self._pos + size]
        self._pos += size
        return value

    def rest(self) -> bytes:
        value = self._data[self._pos :]
        self._pos = len(self._data)
        return value


async def read_startup(reader: asyncio.StreamReader, limit: int) -> tuple[int, bytes]:
    """A startup-phase packet (no type byte): (code, rest of payload)."""
    head = await reader.readexactly(4)
    (length,) = _I32.unpack(head)
    if length < 8 or length > min(limit, 10_000):
        raise ProtocolError(f"invalid startup packet length {length}")
    body = await reader.readexactly(length - 4)
    (code,) = _I32.unpack_from(body)
    return code, body[4:]


async def read_frame(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bytes]:
    """One regular message: (type byte, payload)."""
    head = await reader.readexactly(5)
    kind = head[:1]
    (length,) = _I32.unpack_from(head, 1)
    if length < 4 or length > limit:
        raise ProtocolError(f"invalid message length {length}")
    payload = await reader.readexactly(length - 4) if length > 4 else b""
    return kind, payload


def parse_startup_parameters(data: bytes) -> dict[str, str]:
    """The key/value pairs of a StartupMessage."""
    params: dict[str, str] = {}
    parts = data.split(b"\x00")
    for i in range(0, len(parts) - 1, 2):
        key = parts[i].decode("utf-8", errors="replace")
        if not key:
            break
        params[key] = parts[i + 1].decode("utf-8", errors="replace")
    return params


# -- backend messages ------------------------------------------------------------------------------


def auth_ok() -> bytes:
    return message(b"R", _I32.pack(0))


def auth_cleartext() -> bytes:
    return message(b"R", _I32.pack(3))


def auth_md5(salt: bytes) -> bytes:
    return message(b"R", _I32.pack(5) + salt)


def auth_sasl(mechanisms: Iterable[str]) -> bytes:
    return message(b"R", _I32.pack(10) + b"".join(cstr(m) for m in mechanisms) + b"\x00")


def auth_sasl_continue(data: bytes) -> bytes:
    return message(b"R", _I32.pack(11) + data)


def auth_sasl_final(data: bytes) -> bytes:
    return message(b"R", _I32.pack(12) + data)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", struct.pack("!iI", pid, secret))


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode())


def negotiate_protocol_version(newest_minor: int, unsupported: Sequence[str]) -> bytes:
    body = _I32.pack(newest_minor) + _I32.pack(len(unsupported))
    return message(b"v", body + b"".join(cstr(o) for o in unsupported))


@dataclass(frozen=True, slots=True)
class FieldDescription:
    """One column of a RowDescription."""

    name: str
    type_oid: int
    type_size: int
    format_code: int = 0
    type_modifier: int = -1
    table_oid: int = 0
    column_number: int = 0


def row_description(fields: Sequence[FieldDescription]) -> bytes:
    out = [_I16.pack(len(fields))]
    for f in fields:
        out.append(cstr(f.name))
        out.append(
            struct.pack(
                "!IhIhih",
                f.table_oid,
                f.column_number,
                f.type_oid,
                f.type_size,
                f.type_modifier,
                f.format_code,
            )
        )
    return message(b"T", b"".join(out))


def parameter_description(oids: Sequence[int]) -> bytes:
    return message(b"t", _I16.pack(len(oids)) + b"".join(struct.pack("!I", o) for o in oids))


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def empty_query_response() -> bytes:
    return message(b"I")


def parse_complete() -> bytes:
    return message(b"1")


def bind_complete() -> bytes:
    return message(b"2")


def close_complete() -> bytes:
    return message(b"3")


def no_data() -> bytes:
    return message(b"n")


def portal_suspended() -> bytes:
    return message(b"s")


def _fields(severity: str, code: str, text: str, detail: str | None, hint: str | None) -> bytes:
    out = [b"S" + cstr(severity), b"V" + cstr(severity), b"C" + cstr(code), b"M" + cstr(text)]
    if detail:
        out.append(b"D" + cstr(detail))
    if hint:
        out.append(b"H" + cstr(hint))
    return b"".join(out) + b"\x00"


def error_response(
    code: str,
    text: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    return message(b"E", _fields(severity, code, text, detail, hint))


def notice_response(
    code: str, text: str, *, severity: str = "WARNING", detail: str | None = None
) -> bytes:
    return message(b"N", _fields(severity, code, text, detail, None))
