"""A Jaeger-compatible query API over the span store, for Grafana's built-in Jaeger data source.

Takes the collector's `CollectorState`; gives an `APIRouter` under `/jaeger/api`:
  * `GET /services`, `GET /services/{service}/operations`, `GET /operations?service=&spanKind=`;
  * `GET /traces?service=&operation=&tags=&start=&end=&lookback=&minDuration=&maxDuration=&limit=`
    finds traces holding a span that matches every given condition and returns them whole,
    most recent first. `tags` is a JSON object (as Grafana and the Jaeger UI send it) or
    logfmt; each tag matches a span attribute, a resource attribute, or the synthetic tags
    `error`, `span.kind` and `otel.status_code`. `start`/`end` are unix microseconds (Jaeger's
    unit; milliseconds and seconds are recognised by size); the default window is the last
    `lookback` (default 1h);
  * `GET /traces/{trace_id}`; `GET /dependencies?endTs=&lookback=` (service-to-service calls).
Answers use Jaeger's envelope `{"data", "total", "limit", "offset", "errors"}`; errors carry
`[{"code", "msg"}]` with the HTTP status.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from collector.analytics.params import BadParameterError, NotFoundError, parse_duration_s
from collector.analytics.query import fetch
from collector.api.sql import QueryRunner
from collector.jaeger.model import build_traces, parse_go_duration_s

if TYPE_CHECKING:
    from collector.api.app import CollectorState

DEFAULT_LIMIT = 20
MAX_LIMIT = 1500
_LOGFMT = re.compile(r'([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')
_HEX = re.compile(r"^[0-9a-fA-F]{1,32}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SPAN_COLUMNS = (
    "trace_id, span_id, parent_span_id, service_name, name, kind, start_time, start_unix_ns, "
    "end_unix_ns, duration_s, status_code, status_message, scope_name, scope_version, "
    "attributes, resource, events, links, source"
)
#: content that arrived as span attributes and is stored in genai_content only
CONTENT_COLUMN = (
    "(SELECT any_value({'input_messages': g.input_messages, 'output_messages': g.output_messages,"
    " 'system_instructions': g.system_instructions, 'tool_definitions': g.tool_definitions})"
    " FROM genai_content g WHERE g.trace_id = s.trace_id AND g.span_id = s.span_id"
    " AND g.origin = 'span_attributes') AS _content"
)


def _envelope(data: Any, *, total: int | None = None) -> dict[str, Any]:
    count = len(data) if isinstance(data, list) else 0
    return {
        "data": data,
        "total": count if total is None else total,
        "limit": 0,
        "offset": 0,
        "errors": None,
    }


async def _answer(fn: Callable[[], Any]) -> JSONResponse:
    try:
        return JSONResponse(await run_in_threadpool(fn))
    except (BadParameterError, NotFoundError) as exc:
        return JSONResponse(
            {
                "data": None,
                "total": 0,
                "limit": 0,
                "offset": 0,
                "errors": [{"code": exc.status, "msg": str(exc)}],
            },
            status_code=exc.status,
        )


def to_unix_us(text: str, name: str) -> int:
    """Jaeger times are unix microseconds; milliseconds, seconds and nanoseconds are told apart
    by size (valid for dates after 1973)."""
    try:
        value = float(text)
    except ValueError:
        raise BadParameterError(f"{name}: {text!r} is not a unix time in microseconds") from None
    if value >= 1e17:
        return int(value / 1000)
    if value >= 1e14:
        return int(value)
    if value >= 1e11:
        return int(value * 1000)
    return int(value * 1_000_000)


def us_to_datetime(unix_us: int) -> datetime:
    """An exact UTC datetime from unix microseconds."""
    try:
        return _EPOCH + timedelta(microseconds=unix_us)
    except OverflowError:
        raise BadParameterError(f"time {unix_us} us is out of range") from None


def parse_tags(tags: str | None, tag_list: list[str]) -> dict[str, str]:
    """Tag filters from `tags` (JSON object or logfmt) and repeated `tag=key:value`."""
    out: dict[str, str] = {}
    if tags and tags.strip():
        raw = tags.strip()
        if raw.startswith("{"):
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise BadParameterError(f"tags: {tags!r} is not a JSON object") from None
            if not isinstance(data, dict):
                raise BadParameterError("tags: expected a JSON object of key to value")
            for k, v in data.items():
                out[str(k)] = v if isinstance(v, str) else orjson.dumps(v).decode()
        else:
            pos = 0
            for match in _LOGFMT.finditer(raw):
                if raw[pos : match.start()].strip():
                    break
                value = match.group(2) if match.group(2) is not None else match.group(3)
                out[match.group(1)] = value.replace('\\"', '"')
                pos = match.end()
            if raw[pos:].strip():
                raise BadParameterError(f"tags: cannot read {tags!r} (use JSON or key=value pairs)")
    for item in tag_list:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise BadParameterError(f"tag: {item!r} is not key:value")
        out[key] = value
    return out


def _tag_condition(key: str, value: str, params: list[Any]) -> str:
    if key == "error":
        return (
            "status_code = 'error'"
            if value.lower() == "true"
            else "status_code IS DISTINCT FROM 'error'"
        )
    if key == "span.kind":
        params.append(value.lower())
        return "kind = ?"
    if key == "otel.status_code":
        params.append(value.lower())
        return "status_code = ?"
    path = '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    params.extend([path, value, path, value])
    return "(json_extract_string(attributes, ?) = ? OR json_extract_string(resource, ?) = ?)"


def search_traces(
    runner: QueryRunner,
    *,
    service: str | None,
    operation: str | None,
    tags: dict[str, str],
    start_us: int,
    end_us: int,
    min_duration_s: float | None,
    max_duration_s: float | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Whole traces holding a span that matches every condition, most recent first."""
    where = ["start_time >= ?", "start_time <= ?"]
    params: list[Any] = [us_to_datetime(start_us), us_to_datetime(end_us)]
    if service:
        where.append("service_name = ?")
        params.append(service)
    if operation:
        where.append("name = ?")
        params.append(operation)
    if min_duration_s is not None:
        where.append("duration_s >= ?")
        params.append(min_duration_s)
    if max_duration_s is not None:
        where.append("duration_s <= ?")
        params.append(max_duration_s)
    for key, value in tags.items():
        where.append(_tag_condition(key, value, params))
    params.append(limit)
    rows = fetch(
        runner,
        f"""
WITH matched AS (
    SELECT trace_id, max(start_time) AS latest
    FROM spans
    WHERE {" AND ".join(where)}
    GROUP BY trace_id
    ORDER BY latest DESC, trace_id
    LIMIT ?
)
SELECT {", ".join("s." + c.strip() for c in SPAN_COLUMNS.split(","))}, {CONTENT_COLUMN},
       m.latest AS _latest
FROM spans s JOIN matched m ON s.trace_id = m.trace_id
ORDER BY m.latest DESC, s.trace_id, s.start_unix_ns
""",
        params,
    )
    return build_traces(rows)


def build_jaeger_router(state: CollectorState) -> APIRouter:
    """The Jaeger query API under `/jaeger/api` over `state`'s store."""
    router = APIRouter(prefix="/jaeger/api", tags=["jaeger"])
    runner = state.runner

    @router.get("/services", summary="Service names")
    async def services() -> JSONResponse:
        def work() -> Any:
            rows = fetch(
                runner,
                "SELECT DISTINCT service_name AS s FROM spans "
                "WHERE service_name IS NOT NULL ORDER BY 1",
            )
            return _envelope([r["s"] for r in rows])

        return await _answer(work)

    @router.get("/services/{service}/operations", summary="Span names of one service")
    async def service_operations(service: str) -> JSONResponse:
        def work() -> Any:
            rows = fetch(
                runner,
                "SELECT DISTINCT name AS n FROM spans WHERE service_name = ? "
                "AND name IS NOT NULL ORDER BY 1",
                [service],
            )
            return _envelope([r["n"] for r in rows])

        return await _answer(work)

    @router.get("/operations", summary="Span names and kinds of one service")
    async def operations(
        service: Annotated[str, Query(description="Service name.")],
        spanKind: Annotated[str | None, Query()] = None,  # noqa: N803 - Jaeger's parameter
    ) -> JSONResponse:
        def work() -> Any:
            params: list[Any] = [service]
            kind_sql = ""
            if spanKind:
                kind_sql = " AND kind = ?"
                params.append(spanKind.lower())
            rows = fetch(
                runner,
                "SELECT DISTINCT name, kind FROM spans WHERE service_name = ? "
                f"AND name IS NOT NULL{kind_sql} ORDER BY name, kind",
                params,
            )
            return _envelope([{"name": r["name"], "spanKind": r["kind"] or ""} for r in rows])

        return await _answer(work)

    @router.get("/traces", summary="Find traces")
    async def traces(
        service: str | None = None,
        operation: str | None = None,
        tags: str | None = None,
        tag: Annotated[list[str] | None, Query()] = None,
        start: str | None = None,
        end: str | None = None,
        lookback: str | None = None,
        minDuration: str | None = None,  # noqa: N803 - Jaeger's parameter
        maxDuration: str | None = None,  # noqa: N803 - Jaeger's parameter
        limit: str | None = None,
    ) -> JSONResponse:
        def work() -> Any:
            end_us = to_unix_us(end, "end") if end else int(time.time() * 1_000_000)
            if start:
                start_us = to_unix_us(start, "start")
            else:
                window_s = 3600.0
                if lookback and lookback != "custom":
                    window_s = parse_duration_s(lookback, "lookback")
                start_us = end_us - int(window_s * 1_000_000)
            if end_us < start_us:
                raise BadParameterError("end must not be before start")
            min_s = parse_go_duration_s(minDuration, "minDuration") if minDuration else None
            max_s = parse_go_duration_s(maxDuration, "maxDuration") if maxDuration else None
            if min_s is not None and max_s is not None and max_s < min_s:
                raise BadParameterError("maxDuration must not be below minDuration")
            n = DEFAULT_LIMIT
            if limit:
                try:
                    n = int(limit)
                except ValueError:
                    raise BadParameterError(f"limit: {limit!r} is not a number") from None
                if n < 1 or n > MAX_LIMIT:
                    raise BadParameterError(f"limit: {n} is outside 1..{MAX_LIMIT}")
            found = search_traces(
                runner,
                service=service or None,
                operation=operation or None,
                tags=parse_tags(tags, tag or []),
                start_us=start_us,
                end_us=end_us,
                min_duration_s=min_s,
                max_duration_s=max_s,
                limit=n,
            )
            return _envelope(found)

        return await _answer(work)

    @router.get("/traces/{trace_id}", summary="One trace by id")
    async def trace(trace_id: str) -> JSONResponse:
        def work() -> Any:
            if not _HEX.match(trace_id):
                raise BadParameterError(f"trace id {trace_id!r} is not hexadecimal")
            # Jaeger ids may come without leading zeros
            full = trace_id.lower().rjust(32, "0")
            rows = fetch(
                runner,
                f"SELECT {SPAN_COLUMNS}, {CONTENT_COLUMN} FROM spans s WHERE trace_id = ?"
                " ORDER BY start_unix_ns",
                [full],
            )
            if not rows:
                raise NotFoundError(f"trace not found: {trace_id}")
            return _envelope(build_traces(rows))

        return await _answer(work)

    @router.get("/dependencies", summary="Calls between services")
    async def dependencies(
        endTs: str | None = None,  # noqa: N803 - Jaeger's parameter
        lookback: str | None = None,
    ) -> JSONResponse:
        def work() -> Any:
            # Jaeger gives both in milliseconds
            end_ms = int(endTs) if endTs and endTs.isdigit() else int(time.time() * 1000)
            back_ms = int(lookback) if lookback and lookback.isdigit() else 3_600_000
            rows = fetch(
                runner,
                """
SELECT p.service_name AS parent, c.service_name AS child, count(*) AS "callCount"
FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
WHERE c.start_time >= ? AND c.start_time <= ?
  AND p.service_name IS DISTINCT FROM c.service_name
  AND p.service_name IS NOT NULL AND c.service_name IS NOT NULL
GROUP BY 1, 2 ORDER BY 1, 2
""",
                [us_to_datetime((end_ms - back_ms) * 1000), us_to_datetime(end_ms * 1000)],
            )
            return _envelope(rows)

        return await _answer(work)

    return router
