"""Bind parameters from the wire to Python values DuckDB binds with the right type.

Takes a parameter's bytes, its type OID (0 when the client left it unspecified) and its format
code (0 text, 1 binary); gives an int, float, Decimal, bool, str, bytes, date, time, datetime,
timedelta, UUID or list. Unknown OIDs in text format stay strings, which DuckDB casts where the
query expects another type. Raises `PgError` 22P02 for a value that does not parse.
Must not: evaluate anything a client sends.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import struct
import uuid
from typing import Any

from collector.pgwire import types as t
from collector.pgwire.errors import INVALID_TEXT_REPRESENTATION, PgError

_PG_EPOCH_DATE = dt.date(2000, 1, 1)
_PG_EPOCH = dt.datetime(2000, 1, 1)
_TEXTUAL = {0, t.TEXT.oid, t.VARCHAR.oid, t.BPCHAR.oid, t.NAME.oid, t.UNKNOWN.oid, t.JSON.oid}
_TRUE = {"t", "true", "yes", "y", "on", "1"}
_FALSE = {"f", "false", "no", "n", "off", "0"}
_INTERVAL_RE = re.compile(
    r"^\s*(?:(?P<days>[+-]?\d+)\s+days?,?\s*)?"
    r"(?:(?P<sign>[+-])?(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d+)?))?\s*$"
)


def _bad(oid: int, raw: bytes | str, why: str = "") -> PgError:
    name = t.BY_OID[oid].name if oid in t.BY_OID else str(oid)
    shown = raw if isinstance(raw, str) else raw[:40].hex()
    return PgError(
        INVALID_TEXT_REPRESENTATION,
        f"invalid input syntax for type {name}: {shown!r}" + (f" ({why})" if why else ""),
    )


def _parse_timestamp(text: str, with_zone: bool) -> dt.datetime:
    cleaned = text.strip().replace("T", " ", 1)
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    # PostgreSQL prints zone offsets as +HH or +HH:MM; fromisoformat wants +HH:MM.
    match = re.search(r"([+-])(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?$", cleaned)
    if match and (":" in cleaned[: match.start()]):
        sign, hh, mm, ss = match.groups()
        offset = f"{sign}{hh}:{mm or '00'}" + (f":{ss}" if ss else "")
        cleaned = cleaned[: match.start()] + offset
    value = dt.datetime.fromisoformat(cleaned)
    if with_zone:
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return value.replace(tzinfo=None) if value.tzinfo is None else value


def _parse_interval(text: str) -> dt.timedelta | str:
    match = _INTERVAL_RE.match(text)
    if not match or not (match.group("days") or match.group("h")):
        return text  # DuckDB parses PostgreSQL's verbose interval text itself
    days = int(match.group("days") or 0)
    seconds = 0.0
    if match.group("h"):
        seconds = int(match.group("h")) * 3600 + int(match.group("m")) * 60
        seconds += float(match.group("s"))
        if match.group("sign") == "-":
            seconds = -seconds
    return dt.timedelta(days=days, seconds=seconds)


def _split_array(text: str) -> list[str | None]:
    """Elements of a one-dimensional PostgreSQL array literal `{a,"b c",NULL}`."""
    body = text.strip()
    if body.startswith("[") and "=" in body:
        body = body[body.index("=") + 1 :]
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError("array literal must be enclosed in braces")
    body = body[1:-1]
    items: list[str | None] = []
    if not body.strip():
        return items
    i = 0
    while i <= len(body):
        while i < len(body) and body[i].isspace():
            i += 1
        if i < len(body) and body[i] == '"':
            i += 1
            chunk: list[str] = []
            while i < len(body) and body[i] != '"':
                if body[i] == "\\" and i + 1 < len(body):
                    i += 1
                chunk.append(body[i])
                i += 1
            i += 1
            items.append("".join(chunk))
            while i < len(body) and body[i] != ",":
                i += 1
        else:
            end = body.find(",", i)
            end = len(body) if end < 0 else end
            raw = body[i:end].strip()
            if raw.startswith("{"):
                raise ValueError("multi-dimensional arrays are not supported")
            items.append(None if raw.upper() == "NULL" else raw)
            i = end
        i += 1
    return items


def decode_text(oid: int, text: str) -> Any:
    """A text-format parameter value."""
    if oid in _TEXTUAL or oid == t.JSONB.oid:
        return text
    try:
        if oid in (t.INT2.oid, t.INT4.oid, t.INT8.oid, t.OID.oid):
            return int(text.strip())
        if oid in (t.FLOAT4.oid, t.FLOAT8.oid):
            return float(text.strip())
        if oid == t.NUMERIC.oid:
            return decimal.Decimal(text.strip())
        if oid == t.BOOL.oid:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("not a boolean")
        if oid == t.BYTEA.oid:
            if text.startswith("\\x"):
                return bytes.fromhex(text[2:])
            return text.encode()
        if oid == t.DATE.oid:
            return dt.date.fromisoformat(text.strip())
        if oid == t.TIME.oid:
            return dt.time.fromisoformat(text.strip())
        if oid == t.TIMESTAMP.oid:
            return _parse_timestamp(text, False)
        if oid == t.TIMESTAMPTZ.oid:
            return _parse_timestamp(text, True)
        if oid == t.INTERVAL.oid:
            return _parse_interval(text)
        if oid == t.UUID.oid:
            return uuid.UUID(text.strip())
        element = t.ARRAY_ELEMENT.get(oid)
        if element is not None:
            return [None if e is None else decode_text(element.oid, e) for e in _split_array(text)]
    except (ValueError, decimal.InvalidOperation, ArithmeticError) as exc:
        raise _bad(oid, text, str(exc)) from None
    return text


def _numeric_from_binary(raw: bytes) -> decimal.Decimal:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHH", raw)
    if sign == 0xC000:
        return decimal.Decimal("NaN")
    if sign == 0xD000:
        return decimal.Decimal("Infinity")
    if sign == 0xF000:
        return decimal.Decimal("-Infinity")
    groups = struct.unpack_from(f"!{ndigits}H", raw, 8)
    # Built as text so no decimal context (precision, rounding) gets in the way.
    digits = "".join(f"{g:04d}" for g in groups)
    point = (weight + 1) * 4
    if point <= 0:
        whole, frac = "0", "0" * -point + digits
    elif point >= len(digits):
        whole, frac = digits + "0" * (point - len(digits)), ""
    else:
        whole, frac = digits[:point], digits[point:]
    text = whole.lstrip("0") or "0"
    if dscale:
        text += "." + (frac + "0" * dscale)[:dscale]
    return decimal.Decimal(("-" if sign == 0x4000 else "") + text)


def _array_from_binary(raw: bytes) -> list[Any]:
    ndim, _flags, element_oid = struct.unpack_from("!iiI", raw)
    if ndim == 0:
        return []
    if ndim != 1:
        raise ValueError("multi-dimensional arrays are not supported")
    length, _lower = struct.unpack_from("!ii", raw, 12)
    pos = 20
    items: list[Any] = []
    for _ in range(length):
        (size,) = struct.unpack_from("!i", raw, pos)
        pos += 4
        if size < 0:
            items.append(None)
            continue
        items.append(decode_binary(element_oid, raw[pos : pos + size]))
        pos += size
    return items


def decode_binary(oid: int, raw: bytes) -> Any:
    """A binary-format parameter value."""
    try:
        if oid in _TEXTUAL:
            return raw.decode("utf-8")
        if oid == t.JSONB.oid:
            return raw[1:].decode("utf-8")
        if oid == t.BOOL.oid:
            return raw != b"\x00"
        if oid == t.INT2.oid:
            return struct.unpack("!h", raw)[0]
        if oid == t.INT4.oid:
            return struct.unpack("!i", raw)[0]
        if oid == t.INT8.oid:
            return struct.unpack("!q", raw)[0]
        if oid == t.OID.oid:
            return struct.unpack("!I", raw)[0]
        if oid == t.FLOAT4.oid:
            return struct.unpack("!f", raw)[0]
        if oid == t.FLOAT8.oid:
            return struct.unpack("!d", raw)[0]
        if oid == t.BYTEA.oid:
            return bytes(raw)
        if oid == t.DATE.oid:
            return _PG_EPOCH_DATE + dt.timedelta(days=struct.unpack("!i", raw)[0])
        if oid == t.TIME.oid:
            micros = struct.unpack("!q", raw)[0]
            return (dt.datetime.min + dt.timedelta(microseconds=micros)).time()
        if oid in (t.TIMESTAMP.oid, t.TIMESTAMPTZ.oid):
            stamp = _PG_EPOCH + dt.timedelta(microseconds=struct.unpack("!q", raw)[0])
            return stamp.replace(tzinfo=dt.UTC) if oid == t.TIMESTAMPTZ.oid else stamp
        if oid == t.INTERVAL.oid:
            micros, days, months = struct.unpack("!qii", raw)
            if months:
                return f"{months} months {days} days {micros} microseconds"
            return dt.timedelta(days=days, microseconds=micros)
        if oid == t.UUID.oid:
            return uuid.UUID(bytes=bytes(raw))
        if oid == t.NUMERIC.oid:
            return _numeric_from_binary(raw)
        if oid in t.ARRAY_ELEMENT:
            return _array_from_binary(raw)
    except (struct.error, ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise _bad(oid, raw, str(exc)) from None
    raise PgError(
        INVALID_TEXT_REPRESENTATION,
        f"binary format for parameter type {oid} is not supported; send it as text",
    )


def decode(oid: int, fmt: int, raw: bytes | None) -> Any:
    """One Bind parameter (None for SQL NULL)."""
    if raw is None:
        return None
    if fmt == 1:
        return decode_binary(oid, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(oid, raw, "not UTF-8") from None
    return decode_text(oid, text)
