"""Query results to bytes: Arrow table in; JSON, CSV, Arrow IPC or Parquet out.

Takes a `QueryResult`; gives a body and its media type. JSON keeps DuckDB's column names and
types and writes timestamps as ISO 8601, decimals as numbers, bytes as base64; CSV writes nested
values as JSON text. Must not: lose precision of 64-bit integers in JSON (they stay integers).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import uuid
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from collector.api.sql import QueryResult

FORMATS = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
}


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list | tuple | set):
        return list(value) if not isinstance(value, dict) else value
    return str(value)


def to_json(result: QueryResult) -> bytes:
    """`{"columns", "types", "rows", "row_count", "truncated", "elapsed_s"}` as JSON."""
    table = result.table
    columns = [col.to_pylist() for col in table.columns]
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else []
    body = {
        "columns": table.column_names,
        "types": [str(f.type) for f in table.schema],
        "rows": rows,
        "row_count": len(rows),
        "truncated": result.truncated,
        "elapsed_s": round(result.elapsed_s, 6),
    }
    return orjson.dumps(body, default=_default, option=orjson.OPT_NON_STR_KEYS)


def _flatten_nested(table: pa.Table) -> pa.Table:
    """CSV has no nesting: lists, structs and maps become JSON text."""
    out = table
    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            values = [
                None if v is None else orjson.dumps(v, default=_default).decode()
                for v in table.column(i).to_pylist()
            ]
            out = out.set_column(i, field.name, pa.array(values, pa.string()))
    return out


def to_csv(result: QueryResult) -> bytes:
    """RFC 4180 CSV with a header row."""
    sink = io.BytesIO()
    pa_csv.write_csv(_flatten_nested(result.table), sink)
    return sink.getvalue()


def to_arrow(result: QueryResult) -> bytes:
    """An Arrow IPC stream."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, result.table.schema) as writer:
        writer.write_table(result.table)
    return sink.getvalue()


def to_parquet(result: QueryResult) -> bytes:
    """One Parquet file (zstd)."""
    sink = io.BytesIO()
    pq.write_table(result.table, sink, compression="zstd")
    return sink.getvalue()


ENCODERS = {"json": to_json, "csv": to_csv, "arrow": to_arrow, "parquet": to_parquet}


def encode(result: QueryResult, fmt: str) -> tuple[bytes, str]:
    """Return the body and media type for `fmt` (one of `FORMATS`)."""
    return ENCODERS[fmt](result), FORMATS[fmt]
