"""Arrow record batches to PostgreSQL DataRow messages, in text or binary format.

Takes one Arrow record batch, the `ColumnType` of each column and a format code per column
(0 text, 1 binary); gives the bytes of one DataRow message per row, concatenated, ready for the
socket. Flat columns are converted with Arrow compute kernels and the messages are assembled with
one element-wise binary join, so no Python object is created per row for the common types; only
lists, nested values, intervals, UUIDs and numerics in binary format go through per-value Python.

Text output follows PostgreSQL's output functions: `t`/`f` booleans, `2026-01-02 03:04:05.123456+00`
timestamptz (UTC), `{a,"b c",NULL}` arrays, `\\x..` bytea, `1 day 02:00:00` intervals.
Binary output follows the `*send` functions (big-endian integers, microseconds since 2000-01-01).
Must not: hold more than one batch, or raise on any value DuckDB can produce.
"""

from __future__ import annotations

import array
import datetime as dt
import decimal
import math
import struct
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from collector.pgwire.types import ColumnType

_LITTLE = sys.byteorder == "little"
_PG_EPOCH_US = 946_684_800_000_000
_PG_EPOCH_DAYS = 10_957
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_LB = pa.large_binary()
_NULL_LB = pa.scalar(None, _LB)
_D = pa.scalar(b"D", _LB)
_EMPTY = pa.scalar(b"", _LB)


# -- small Arrow helpers ---------------------------------------------------------------------------


def _big_endian(values: pa.Array, typecode: str, width: int) -> pa.Array:
    """Fixed-width integers/floats (no nulls) as big-endian large_binary values."""
    n = len(values)
    buf = values.buffers()[1]
    start = values.offset * width
    raw = array.array(typecode)
    if buf is not None and n:
        raw.frombytes(memoryview(buf)[start : start + n * width])
    if _LITTLE and width > 1:
        raw.byteswap()
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(raw.tobytes())]
    )
    return fixed.cast(_LB)


def _trim_fraction(values: pa.Array) -> pa.Array:
    """Microsecond times/timestamps as text, fraction trimmed like PostgreSQL (`.5`, none)."""
    # Arrow always prints six fractional digits for microsecond units, so trimming zeros and
    # then a bare dot never eats into the seconds.
    text = values.cast(pa.string())
    return pc.utf8_rtrim(pc.utf8_rtrim(text, characters="0"), characters=".")


def _with_nulls(source: pa.Array, encoded: pa.Array) -> pa.Array:
    """`encoded` with the nulls of `source` put back."""
    if source.null_count == 0:
        return encoded
    return pc.if_else(pc.is_valid(source), encoded, _NULL_LB)


def _fixed(source: pa.Array, arrow_type: pa.DataType, typecode: str, width: int) -> pa.Array:
    cast = (
        pc.fill_null(source.cast(arrow_type), 0) if source.null_count else source.cast(arrow_type)
    )
    return _with_nulls(source, _big_endian(cast, typecode, width))


def _as_large_binary(values: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if values.type == _LB:
        return values
    return values.cast(_LB)


def _from_python(values: Sequence[bytes | None]) -> pa.Array:
    return pa.array(values, type=_LB)


def _micros(values: pa.Array) -> pa.Array:
    """Timestamps of any unit and zone as int64 microseconds since the Unix epoch (UTC)."""
    unit_type = pa.timestamp("us", values.type.tz) if values.type.tz else pa.timestamp("us")
    return values.cast(unit_type, safe=False).cast(pa.int64())


# -- Python-level value formatting (nested values, fallbacks) --------------------------------------


def _float_text(value: float, single: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if single:
        for digits in range(6, 10):
            text = f"{value:.{digits}g}"
            if (
                struct.unpack("f", struct.pack("f", float(text)))[0]
                == struct.unpack("f", struct.pack("f", value))[0]
            ):
                return text
    return repr(value)


def _interval_parts(value: Any) -> tuple[int, int, int]:
    """(months, days, microseconds) of an Arrow MonthDayNano value or a timedelta."""
    if isinstance(value, dt.timedelta):
        return 0, value.days, value.seconds * 1_000_000 + value.microseconds
    months, days, nanos = value.months, value.days, value.nanoseconds
    return int(months), int(days), int(nanos) // 1000


def interval_text(months: int, days: int, micros: int) -> str:
    """PostgreSQL's `IntervalStyle = postgres` text of an interval."""
    parts: list[str] = []
    years = int(months / 12)
    mons = months - years * 12
    if years:
        parts.append(f"{years} year" + ("" if years == 1 else "s"))
    if mons:
        parts.append(f"{mons} mon" + ("" if mons == 1 else "s"))
    if days:
        parts.append(f"{days} day" + ("" if days == 1 else "s"))
    if micros or not parts:
        sign = ""
        if micros < 0:
            sign = "-"
        elif parts and (months < 0 or days < 0):
            sign = "+"
        rest = abs(micros)
        hours, rest = divmod(rest, 3_600_000_000)
        minutes, rest = divmod(rest, 60_000_000)
        seconds, frac = divmod(rest, 1_000_000)
        clock = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
        if frac:
            clock += f".{frac:06d}".rstrip("0")
        parts.append(clock)
    return " ".join(parts)


def _clock_text(value: dt.datetime | dt.time) -> str:
    text = (
        value.replace(tzinfo=None).isoformat(sep=" ")
        if isinstance(value, dt.datetime)
        else (value.replace(tzinfo=None).isoformat())
    )
    return text.rstrip("0").rstrip(".") if "." in text else text


def _timestamp_text(value: dt.datetime, with_zone: bool) -> str:
    if with_zone and value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return _clock_text(value) + ("+00" if with_zone else "")


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dt.timedelta):
        return interval_text(*_interval_parts(value))
    if hasattr(value, "months") and hasattr(value, "nanoseconds"):
        return interval_text(*_interval_parts(value))
    if isinstance(value, dt.time | dt.date):
        return value.isoformat()
    return str(value)


def _jsonable(value: Any) -> Any:
    """Arrow's Python form of nested values, made JSON-friendly (maps become objects)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):
            return {str(k): _jsonable(v) for k, v in value}
        return [_jsonable(v) for v in value]
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _json_bytes(value: Any) -> bytes:
    return orjson.dumps(_jsonable(value), default=_json_default)


def scalar_text(value: Any, ct: ColumnType) -> str:
    """PostgreSQL text of one non-null Python value of column type `ct` (arrays: the element)."""
    family = ct.family
    if family == "bool":
        return "t" if value else "f"
    if family == "float":
        return _float_text(float(value), ct.pg.size == 4)
    if family == "decimal":
        if isinstance(value, decimal.Decimal):
            return format(value, "f")
        return str(value)
    if family == "bytea":
        return "\\x" + bytes(value).hex()
    if family == "timestamp":
        return _timestamp_text(value, False)
    if family == "timestamptz":
        return _timestamp_text(value, True)
    if family == "date":
        return str(value.isoformat())
    if family == "time":
        return _clock_text(value)
    if family == "interval":
        return interval_text(*_interval_parts(value))
    if family == "nested":
        return _json_bytes(value).decode()
    return str(value)


_ARRAY_SPECIAL = frozenset('{}",\\')


def _array_element_text(text: str) -> str:
    if (
        text == ""
        or text.upper() == "NULL"
        or any(c in _ARRAY_SPECIAL or c.isspace() for c in text)
    ):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def array_text(values: Sequence[Any], element: ColumnType) -> str:
    """`{a,b,NULL}` text of a one-dimensional array."""
    items = ["NULL" if v is None else _array_element_text(scalar_text(v, element)) for v in values]
    return "{" + ",".join(items) + "}"


# -- binary send functions for single values -------------------------------------------------------


def numeric_binary(value: decimal.Decimal | int) -> bytes:
    """PostgreSQL `numeric_send` of a Decimal or int."""
    dec = value if isinstance(value, decimal.Decimal) else decimal.Decimal(value)
    if dec.is_nan():
        return struct.pack("!hhHH", 0, 0, 0xC000, 0)
    if dec.is_infinite():
        return struct.pack("!hhHH", 0, 0, 0xD000 if dec > 0 else 0xF000, 0)
    sign, digit_tuple, exponent = dec.as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    dscale = max(0, -exponent)
    if exponent >= 0:
        int_part, frac_part = digits + "0" * exponent, ""
    else:
        cut = len(digits) + exponent
        int_part = digits[:cut] if cut > 0 else ""
        frac_part = ("0" * -cut + digits) if cut < 0 else digits[cut:]
    int_part = int_part.lstrip("0")
    int_part = "0" * (-len(int_part) % 4) + int_part
    frac_part = frac_part + "0" * (-len(frac_part) % 4)
    groups = [int(int_part[i : i + 4]) for i in range(0, len(int_part), 4)]
    weight = len(groups) - 1
    groups += [int(frac_part[i : i + 4]) for i in range(0, len(frac_part), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    head = struct.pack("!hhHH", len(groups), weight, 0x4000 if sign else 0, dscale)
    return head + struct.pack(f"!{len(groups)}H", *groups)


def scalar_binary(value: Any, ct: ColumnType) -> bytes:
    """PostgreSQL binary form of one non-null Python value of column type `ct`."""
    family = ct.family
    if family == "int":
        return int(value).to_bytes(ct.pg.size, "big", signed=True)
    if family == "float":
        return struct.pack("!f" if ct.pg.size == 4 else "!d", float(value))
    if family == "bool":
        return b"\x01" if value else b"\x00"
    if family == "decimal":
        return numeric_binary(value)
    if family == "bytea":
        return bytes(value)
    if family == "date":
        return struct.pack("!i", value.toordinal() - dt.date(2000, 1, 1).toordinal())
    if family == "time":
        micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
        return struct.pack("!q", micros + value.microsecond)
    if family in ("timestamp", "timestamptz"):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        delta = stamp - _PG_EPOCH
        return struct.pack(
            "!q", (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        )
    if family == "interval":
        months, days, micros = _interval_parts(value)
        return struct.pack("!qii", micros, days, months)
    if family == "uuid":
        return uuid.UUID(str(value)).bytes
    if family == "nested":
        return _json_bytes(value)
    return scalar_text(value, ct).encode()


def array_binary(values: Sequence[Any], element: ColumnType) -> bytes:
    """PostgreSQL `array_send` of a one-dimensional array."""
    oid = element.pg.oid
    if not values:
        return struct.pack("!iii", 0, 0, oid)
    has_null = any(v is None for v in values)
    out = [struct.pack("!iiiii", 1, 1 if has_null else 0, oid, len(values), 1)]
    for v in values:
        if v is None:
            out.append(b"\xff\xff\xff\xff")
        else:
            body = scalar_binary(v, element)
            out.append(struct.pack("!i", len(body)) + body)
    return b"".join(out)


# -- whole columns ---------------------------------------------------------------------------------


def _per_value(values: pa.Array, convert: Callable[[Any], bytes]) -> pa.Array:
    return _from_python([None if v is None else convert(v) for v in values.to_pylist()])


def _float_text_column(values: pa.Array, single: bool) -> pa.Array:
    text = values.cast(pa.string())
    if pc.any(pc.is_nan(values)).as_py() or pc.any(pc.is_inf(values)).as_py():
        return _per_value(values, lambda v: _float_text(v, single).encode())
    return text


def text_column(values: pa.Array, ct: ColumnType) -> pa.Array:
    """One column in PostgreSQL text format, as large_binary values (nulls stay null)."""
    family = ct.family
    kind = values.type
    if family == "null" or pa.types.is_null(kind):
        return pa.nulls(len(values), _LB)
    if family in ("text", "json", "uuid") and (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_dictionary(kind)
    ):
        return _as_large_binary(values)
    if family == "int" and pa.types.is_integer(kind):
        return _as_large_binary(values.cast(pa.string()))
    if family == "decimal" and (pa.types.is_decimal(kind) or pa.types.is_integer(kind)):
        return _as_large_binary(values.cast(pa.string()))
    if family == "float" and pa.types.is_floating(kind):
        return _as_large_binary(_float_text_column(values, ct.pg.size == 4))
    if family == "bool" and pa.types.is_boolean(kind):
        return pc.if_else(values, pa.scalar(b"t", _LB), pa.scalar(b"f", _LB))
    if family == "date" and pa.types.is_date(kind):
        return _as_large_binary(values.cast(pa.string()))
    if family == "time" and pa.types.is_time(kind):
        return _as_large_binary(_trim_fraction(values.cast(pa.time64("us"), safe=False)))
    if family == "timestamp" and pa.types.is_timestamp(kind) and kind.tz is None:
        micros = values.cast(pa.timestamp("us"), safe=False)
        return _as_large_binary(_trim_fraction(micros))
    if family == "timestamptz" and pa.types.is_timestamp(kind):
        micros = _micros(values).cast(pa.timestamp("us"))
        text = _as_large_binary(_trim_fraction(micros))
        return pc.binary_join_element_wise(text, pa.scalar(b"+00", _LB), _EMPTY)
    if family == "array":
        element = ct.element
        assert element is not None
        return _per_value(values, lambda v: array_text(v, element).encode())
    return _per_value(values, lambda v: scalar_text(v, ct).encode())


def binary_column(values: pa.Array, ct: ColumnType) -> pa.Array:
    """One column in PostgreSQL binary format, as large_binary values (nulls stay null)."""
    family = ct.family
    kind = values.type
    if family == "null" or pa.types.is_null(kind):
        return pa.nulls(len(values), _LB)
    if family in ("text", "json") and not pa.types.is_binary(kind):
        return text_column(values, ct)
    if family == "bytea" and (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)):
        return _as_large_binary(values)
    if family == "int" and pa.types.is_integer(kind):
        size = ct.pg.size
        arrow_type = {2: pa.int16(), 4: pa.int32(), 8: pa.int64()}[size]
        code = {2: "h", 4: "i", 8: "q"}[size]
        return _fixed(values, arrow_type, code, size)
    if family == "float" and pa.types.is_floating(kind):
        if ct.pg.size == 4:
            return _fixed(values, pa.float32(), "f", 4)
        return _fixed(values, pa.float64(), "d", 8)
    if family == "bool" and pa.types.is_boolean(kind):
        return pc.if_else(values, pa.scalar(b"\x01", _LB), pa.scalar(b"\x00", _LB))
    if family == "date" and pa.types.is_date32(kind):
        days = pc.subtract(values.cast(pa.int32()), pa.scalar(_PG_EPOCH_DAYS, pa.int32()))
        return _fixed(days, pa.int32(), "i", 4)
    if family == "time" and pa.types.is_time(kind):
        micros = values.cast(pa.time64("us"), safe=False).cast(pa.int64())
        return _fixed(micros, pa.int64(), "q", 8)
    if family in ("timestamp", "timestamptz") and pa.types.is_timestamp(kind):
        since_2000 = pc.subtract(_micros(values), pa.scalar(_PG_EPOCH_US, pa.int64()))
        return _fixed(since_2000, pa.int64(), "q", 8)
    if family == "array":
        element = ct.element
        assert element is not None
        return _per_value(values, lambda v: array_binary(v, element))
    return _per_value(values, lambda v: scalar_binary(v, ct))


def data_rows(
    columns: Sequence[pa.Array], types: Sequence[ColumnType], formats: Sequence[int]
) -> bytes | memoryview:
    """DataRow messages for every row of a batch, concatenated."""
    if not columns:
        return b""
    n = len(columns[0])
    if n == 0:
        return b""
    parts: list[pa.Array | pa.Scalar] = [
        _D,
        _EMPTY,
        pa.scalar(len(columns).to_bytes(2, "big"), _LB),
    ]
    total: pa.Array | None = None
    for values, ct, fmt in zip(columns, types, formats, strict=True):
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        field = binary_column(values, ct) if fmt == 1 else text_column(values, ct)
        lengths = pc.binary_length(field)
        prefix = _big_endian(pc.fill_null(lengths, -1).cast(pa.int32()), "i", 4)
        parts.append(prefix)
        parts.append(field)
        row_part = pc.add(pc.fill_null(lengths, 0), 4)
        total = row_part if total is None else pc.add(total, row_part)
    assert total is not None
    parts[1] = _big_endian(pc.add(total, 6).cast(pa.int32()), "i", 4)
    joined = pc.binary_join_element_wise(
        *parts, _EMPTY, null_handling="replace", null_replacement=b""
    )
    bufs = joined.buffers()
    data = bufs[2]
    if data is None or bufs[1] is None:
        return b""
    start = struct.unpack_from("=q", bufs[1], joined.offset * 8)[0]
    end = struct.unpack_from("=q", bufs[1], (joined.offset + n) * 8)[0]
    return memoryview(data)[start:end]


def text_row(values: Sequence[str | None]) -> bytes:
    """One DataRow of already formatted text values (for answers the endpoint makes itself)."""
    out = [struct.pack("!h", len(values))]
    for v in values:
        if v is None:
            out.append(b"\xff\xff\xff\xff")
        else:
            raw = v.encode()
            out.append(struct.pack("!i", len(raw)) + raw)
    body = b"".join(out)
    return b"D" + struct.pack("!i", len(body) + 4) + body
