"""Row encoding and parameter decoding against PostgreSQL's wire formats."""

from __future__ import annotations

import datetime as dt
import math
import struct
import uuid
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.pgwire import params
from collector.pgwire.encode import (
    array_text,
    binary_column,
    data_rows,
    interval_text,
    numeric_binary,
    text_column,
)
from collector.pgwire.types import ColumnType, column_type


def parse_rows(raw: bytes) -> list[list[bytes | None]]:
    """Split concatenated DataRow messages back into field values."""
    rows: list[list[bytes | None]] = []
    pos = 0
    while pos < len(raw):
        assert raw[pos : pos + 1] == b"D"
        (length,) = struct.unpack_from("!i", raw, pos + 1)
        (count,) = struct.unpack_from("!h", raw, pos + 5)
        field_pos = pos + 7
        row: list[bytes | None] = []
        for _ in range(count):
            (size,) = struct.unpack_from("!i", raw, field_pos)
            field_pos += 4
            if size < 0:
                row.append(None)
            else:
                row.append(raw[field_pos : field_pos + size])
                field_pos += size
        assert field_pos == pos + 1 + length
        rows.append(row)
        pos = field_pos
    return rows


def test_column_types() -> None:
    assert column_type("TIMESTAMP WITH TIME ZONE").oid == 1184
    assert column_type("TIMESTAMP_NS").oid == 1114
    assert column_type("DECIMAL(10,2)").oid == 1700
    assert column_type("VARCHAR[]").oid == 1009
    assert column_type("BIGINT[]").oid == 1016
    assert column_type("DOUBLE[]").oid == 1022
    assert column_type("INTEGER[3]").oid == 1007
    assert column_type("INTEGER[][]").oid == 114
    assert column_type("STRUCT(a INTEGER, b VARCHAR)").oid == 114
    assert column_type("MAP(VARCHAR, INTEGER)").oid == 114
    assert column_type("ENUM('a', 'b')").oid == 25
    assert column_type("UUID").oid == 2950
    assert column_type("JSON").oid == 114
    assert column_type("SOMETHING_NEW").oid == 25


def test_interval_text() -> None:
    micros = (4 * 3600 + 5 * 60 + 6) * 1_000_000
    assert interval_text(14, 3, micros) == "1 year 2 mons 3 days 04:05:06"
    assert interval_text(0, 0, 0) == "00:00:00"
    assert interval_text(0, 1, 0) == "1 day"
    assert interval_text(0, -1, 2 * 3600 * 1_000_000) == "-1 days +02:00:00"
    assert interval_text(0, 0, -1_500_000) == "-00:00:01.5"
    assert interval_text(-25, 0, 0) == "-2 years -1 mons"


def test_numeric_binary_layout() -> None:
    # numeric_send(12345.678): 3 base-10000 digits [1, 2345, 6780], weight 1, dscale 3.
    assert numeric_binary(Decimal("12345.678")) == struct.pack("!hhHH3H", 3, 1, 0, 3, 1, 2345,
                                                               6780)  # fmt: skip
    assert numeric_binary(Decimal("-0.0001")) == struct.pack("!hhHHH", 1, -1, 0x4000, 4, 1)
    assert numeric_binary(Decimal(0)) == struct.pack("!hhHH", 0, 0, 0, 0)
    for text in ("0", "1", "-1", "10000", "0.5", "123456789012345678901234567890.123",
                 "-98765.4321", "1E+10", "0.000001"):  # fmt: skip
        value = Decimal(text)
        back = params.decode_binary(1700, numeric_binary(value))
        assert back == value, text


def test_array_text_quoting() -> None:
    text = ColumnType(column_type("VARCHAR").pg, "text")
    assert array_text(["a", "b c", None, "", "null", 'q"x', "a\\b", "{}"], text) == (
        '{a,"b c",NULL,"","null","q\\"x","a\\\\b","{}"}'
    )
    assert params.decode_text(1009, '{a,"b c",NULL,"","null","q\\"x","a\\\\b","{}"}') == [
        "a", "b c", None, "", "null", 'q"x', "a\\b", "{}",
    ]  # fmt: skip


SAMPLES: list[tuple[str, pa.Array, list[Any]]] = [
    ("SMALLINT", pa.array([1, -2, None], pa.int16()), [1, -2, None]),
    ("INTEGER", pa.array([2**31 - 1, None], pa.int32()), [2**31 - 1, None]),
    ("BIGINT", pa.array([-(2**63), 5], pa.int64()), [-(2**63), 5]),
    ("DOUBLE", pa.array([0.1, float("inf"), None]), [0.1, float("inf"), None]),
    ("FLOAT", pa.array([1.5, -2.25], pa.float32()), [1.5, -2.25]),
    ("BOOLEAN", pa.array([True, None, False]), [True, None, False]),
    ("VARCHAR", pa.array(["é", "", None]), ["é", "", None]),
    ("BLOB", pa.array([b"\x00\xff", None]), [b"\x00\xff", None]),
    ("DATE", pa.array([dt.date(2000, 1, 1), dt.date(1999, 12, 31)]),
     [dt.date(2000, 1, 1), dt.date(1999, 12, 31)]),
    ("TIME", pa.array([dt.time(3, 4, 5, 6)]), [dt.time(3, 4, 5, 6)]),
    ("TIMESTAMP", pa.array([dt.datetime(1970, 1, 1, 0, 0, 0, 1)], pa.timestamp("us")),
     [dt.datetime(1970, 1, 1, 0, 0, 0, 1)]),
    ("TIMESTAMP WITH TIME ZONE",
     pa.array([dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC), None],
              pa.timestamp("ns", "UTC")),
     [dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC), None]),
    ("DECIMAL(10,2)", pa.array([Decimal("1.25"), Decimal("-0.50")], pa.decimal128(10, 2)),
     [Decimal("1.25"), Decimal("-0.50")]),
    ("UUID", pa.array(["6f1c3c1e-2b0a-4c55-9a8e-0d5c9b1a2f3e"]),
     [uuid.UUID("6f1c3c1e-2b0a-4c55-9a8e-0d5c9b1a2f3e")]),
    ("BIGINT[]", pa.array([[1, None], [], None], pa.list_(pa.int64())), [[1, None], [], None]),
    ("VARCHAR[]", pa.array([["a b", None]], pa.list_(pa.string())), [["a b", None]]),
]  # fmt: skip


@pytest.mark.parametrize(("duck_type", "values", "expected"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_binary_and_text_round_trip(duck_type: str, values: pa.Array, expected: list[Any]) -> None:
    ct = column_type(duck_type)
    oid = ct.oid
    for fmt, encode in ((1, binary_column), (0, text_column)):
        encoded = encode(values, ct).to_pylist()
        decoded = [None if raw is None else params.decode(oid, fmt, raw) for raw in encoded]
        assert decoded == expected, (fmt, encoded)


def test_data_rows_layout_with_nulls_and_slices() -> None:
    batch = pa.record_batch(
        [pa.array([1, None, 3], pa.int64()), pa.array(["a", "bb", None])], names=["i", "s"]
    ).slice(1)
    types = [column_type("BIGINT"), column_type("VARCHAR")]
    raw = bytes(data_rows(batch.columns, types, [0, 0]))
    assert parse_rows(raw) == [[None, b"bb"], [b"3", None]]
    raw = bytes(data_rows(batch.columns, types, [1, 0]))
    assert parse_rows(raw) == [[None, b"bb"], [struct.pack("!q", 3), None]]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
            st.one_of(st.none(), st.text()),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_text_rows_match_python_values(rows: list[tuple[Any, Any, Any]]) -> None:
    ints, floats, texts = (list(col) for col in zip(*rows, strict=True))
    batch = [pa.array(ints, pa.int64()), pa.array(floats, pa.float64()), pa.array(texts)]
    types = [column_type("BIGINT"), column_type("DOUBLE"), column_type("VARCHAR")]
    parsed = parse_rows(bytes(data_rows(batch, types, [0, 0, 0])))
    assert len(parsed) == len(rows)
    for (i, f, s), (ri, rf, rs) in zip(rows, parsed, strict=True):
        assert (None if ri is None else int(ri)) == i
        if f is None:
            assert rf is None
        else:
            assert rf is not None
            back = float(rf.decode())
            assert back == f or (math.isnan(back) and math.isnan(f))
        assert (None if rs is None else rs.decode()) == s
