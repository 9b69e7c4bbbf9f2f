"""Grafana's SQL interpolation for the PostgreSQL data source, written out for the tests.

Order as in Grafana: template variables (frontend), then `$__interval_ms`, `$__interval`,
`$__unixEpochFrom()`, `$__unixEpochTo()` (sqleng.Interpolate), then the macro engine, whose
pattern is `$name(args)` and which refuses unknown macros.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def rfc3339nano(t: datetime) -> str:
    """Go's time.RFC3339Nano in UTC: trailing zeros of the fraction dropped."""
    t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += "." + f"{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def format_interval(seconds: float) -> str:
    """gtime.FormatInterval for whole units."""
    for unit, size in (
        ("y", 31536000),
        ("w", 604800),
        ("d", 86400),
        ("h", 3600),
        ("m", 60),
        ("s", 1),
    ):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def parse_interval(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", text.strip().strip("'"))
    if not match:
        raise ValueError(f"error parsing interval {text}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _go_number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def quote_values(values: list[str]) -> str:
    """How the SQL data sources format a multi-value variable."""
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


def interpolate_variables(sql: str, variables: dict[str, str]) -> str:
    """Replace `${name}`, `${name:raw}`, `$name` and `[[name]]` with already formatted values."""
    for name in sorted(variables, key=len, reverse=True):
        # a plain string as replacement would have its backslashes interpreted
        value = variables[name].replace("\\", "\\\\")
        sql = re.sub(r"\$\{" + re.escape(name) + r"(?::[a-z]+)?\}", value, sql)
        sql = re.sub(r"\[\[" + re.escape(name) + r"\]\]", value, sql)
        sql = re.sub(r"\$" + re.escape(name) + r"\b", value, sql)
    return sql


def expand(
    sql: str, start: datetime, end: datetime, interval_s: float, variables: dict[str, str]
) -> str:
    """The SQL Grafana sends for a panel query."""
    sql = interpolate_variables(sql, variables)
    sql = sql.replace("$__interval_ms", str(int(interval_s * 1000)))
    sql = sql.replace("$__interval", format_interval(interval_s))
    sql = sql.replace("$__unixEpochFrom()", str(int(start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(end.timestamp())))

    def macro(match: re.Match[str]) -> str:
        name = match.group(1)
        args = [a.strip() for a in match.group(2).split(",")]
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc3339nano(start)}' AND '{rfc3339nano(end)}'"
        if name == "__timeFrom":
            return f"'{rfc3339nano(start)}'"
        if name == "__timeTo":
            return f"'{rfc3339nano(end)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            secs = _go_number(parse_interval(args[1]))
            group = f"floor(extract(epoch from {args[0]})/{secs})*{secs}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}"
        raise ValueError(f'unknown macro "{name}"')

    return _MACRO.sub(macro, sql)


def window(start: datetime, seconds: float) -> tuple[datetime, datetime]:
    return start, start + timedelta(seconds=seconds)
