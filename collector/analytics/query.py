"""Running analytics SQL: statement and parameters in, JSON-ready rows out.

Takes a `QueryRunner` (row limit, timeout, read-only allow-list) and one SELECT with its
parameters; gives a list of dicts with datetimes as RFC3339 text, DuckDB maps as dicts,
decimals as numbers and non-finite floats as None. Raises `TooManyRowsError` when the runner
had to cut the result, since a silently cut aggregate would be a wrong figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from collector.analytics.params import BadParameterError, rfc3339
from collector.api.sql import QueryRunner


class TooManyRowsError(BadParameterError):
    """The answer would exceed the server's row limit; narrow the request."""


def jsonable(value: Any) -> Any:
    """A value of an Arrow row made fit for JSON."""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        # sums of BIGINT columns arrive as HUGEINT/DECIMAL
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): jsonable(v) for k, v in value}
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def fetch(
    runner: QueryRunner, sql: str, params: Sequence[Any] = (), *, limit: int | None = None
) -> list[dict[str, Any]]:
    """Rows of one read-only statement, converted by `jsonable`."""
    result = runner.run(sql, list(params), row_limit=limit)
    if result.truncated and limit is None:
        raise TooManyRowsError(
            f"the answer has more than {runner.row_limit} rows; narrow the time range, "
            "raise the step or filter"
        )
    return [{k: jsonable(v) for k, v in row.items()} for row in result.table.to_pylist()]


def fetch_columns(
    runner: QueryRunner, sql: str, params: Sequence[Any] = ()
) -> dict[str, list[Any]]:
    """The columns of one read-only statement as Python lists, unconverted (no `jsonable`):
    for large answers whose caller knows each column's type and converts only what needs it.
    Raises `TooManyRowsError` as `fetch` does."""
    result = runner.run(sql, list(params))
    if result.truncated:
        raise TooManyRowsError(
            f"the answer has more than {runner.row_limit} rows; narrow the time range, "
            "raise the step or filter"
        )
    return {name: result.table.column(name).to_pylist() for name in result.table.column_names}


def finite(value: float | None) -> float | None:
    """A float fit for JSON: None for NaN and infinities."""
    return value if value is None or math.isfinite(value) else None


def map_to_dict(value: Any) -> dict[str, Any]:
    """A DuckDB MAP (as Arrow gives it: a list of pairs, or a dict) as a plain dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return {str(k): v for k, v in value}
