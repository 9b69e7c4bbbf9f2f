"""The analytics HTTP API (`/api/v1/...`): golden signals, prompts, calls, search, cost.

Takes the collector's `CollectorState` (database, query runner); gives a FastAPI `APIRouter`
that the API app includes. Every query runs on a worker thread through the state's
`QueryRunner` (row limit, timeout, read-only allow-list). Bad parameters are answered with 400,
unknown ids with 404, both as `{"error": "..."}` like the SQL endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from collector.analytics.cost import cost_breakdown
from collector.analytics.golden import golden_signals
from collector.analytics.params import (
    BadParameterError,
    NotFoundError,
    parse_limit,
    parse_range,
    parse_time,
    parse_time_range,
    rfc3339,
)
from collector.analytics.prompts import (
    TOP_PROMPTS,
    call_detail,
    check_fingerprint,
    input_size_distribution,
    prompt_stats,
    top_calls,
)
from collector.analytics.query import fetch
from collector.analytics.search import ContentSearch

if TYPE_CHECKING:
    from collector.api.app import CollectorState

DAY_S = 86400.0

Start = Annotated[str | None, Query(description="RFC3339 time or unix seconds.")]
End = Annotated[str | None, Query(description="RFC3339 time or unix seconds (default: now).")]


def _now() -> datetime:
    return datetime.now(UTC)


def _encoded(fn: Callable[[], Any]) -> bytes:
    # A day of 5-minute buckets per pod is megabytes of JSON: encoded here, on the worker
    # thread, with orjson (a tenth of the standard library's time), not on the event loop.
    return orjson.dumps(fn(), option=orjson.OPT_NON_STR_KEYS)


async def _answer(fn: Callable[[], Any]) -> Response:
    try:
        body = await run_in_threadpool(_encoded, fn)
    except (BadParameterError, NotFoundError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    return Response(body, media_type="application/json")


def build_analytics_router(
    state: CollectorState,
    *,
    search: ContentSearch | None = None,
    search_refresh_interval_s: float = 60.0,
) -> APIRouter:
    """The analytics routes over `state`'s store. `search` is the owner of the content index
    (one per database); by default one is made with `search_refresh_interval_s`."""
    router = APIRouter(prefix="/api/v1", tags=["analytics"])
    runner = state.runner
    content = search or ContentSearch(state.db, refresh_interval_s=search_refresh_interval_s)

    @router.get("/golden-signals", summary="Rate, errors, latency, tokens and saturation")
    async def golden(
        start: Start = None,
        end: End = None,
        step: Annotated[str | None, Query(description="Bucket width: 60, 30s, 5m, 1h.")] = None,
        group_by: Annotated[
            str, Query(description="model, provider, service, namespace, pod or operation.")
        ] = "model",
    ) -> Response:
        def work() -> Any:
            tr = parse_time_range(start, end, step, _now())
            return golden_signals(runner, tr, group_by)

        return await _answer(work)

    @router.get("/prompts", summary="Calls, tokens, cost, latency and errors per prompt")
    async def prompts(
        start: Start = None,
        end: End = None,
        sort: Annotated[
            str,
            Query(description="calls, cost, latency, errors, error_ratio, tokens, last_seen."),
        ] = "calls",
        limit: int | None = None,
        model: str | None = None,
        service: str | None = None,
    ) -> Response:
        def work() -> Any:
            s, e = parse_range(start, end, _now(), default_range_s=DAY_S)
            n = parse_limit(limit, 50, 1000)
            rows = prompt_stats(runner, s, e, order=sort, limit=n, model=model, service=service)
            return {"start": rfc3339(s), "end": rfc3339(e), "prompts": rows}

        return await _answer(work)

    @router.get("/prompts/top", summary="Slowest, costliest or most erroring prompts")
    async def prompts_top(
        by: Annotated[str, Query(description="slowest, costliest or erroring.")],
        start: Start = None,
        end: End = None,
        limit: int | None = None,
    ) -> Response:
        def work() -> Any:
            order = TOP_PROMPTS.get(by)
            if order is None:
                raise BadParameterError(
                    f"by: unknown ranking {by!r}; use one of {', '.join(TOP_PROMPTS)}"
                )
            s, e = parse_range(start, end, _now(), default_range_s=DAY_S)
            n = parse_limit(limit, 10, 1000)
            rows = prompt_stats(runner, s, e, order=order, limit=n)
            return {"by": by, "start": rfc3339(s), "end": rfc3339(e), "prompts": rows}

        return await _answer(work)

    @router.get("/prompts/input-size", summary="Calls and latency by input-token bucket")
    async def input_size(
        start: Start = None,
        end: End = None,
        model: str | None = None,
        service: str | None = None,
    ) -> Response:
        def work() -> Any:
            s, e = parse_range(start, end, _now(), default_range_s=DAY_S)
            out = input_size_distribution(runner, s, e, model=model, service=service)
            return {"start": rfc3339(s), "end": rfc3339(e), **out}

        return await _answer(work)

    @router.get("/prompts/{fingerprint}", summary="One prompt fingerprint with an example")
    async def prompt_one(fingerprint: str, start: Start = None, end: End = None) -> Response:
        def work() -> Any:
            fp = check_fingerprint(fingerprint)
            s, e = parse_range(start, end, _now(), default_range_s=DAY_S)
            rows = prompt_stats(runner, s, e, fingerprint=fp, limit=1)
            if not rows:
                raise NotFoundError(f"no call with prompt fingerprint {fp} between {s} and {e}")
            return rows[0]

        return await _answer(work)

    @router.get("/calls/top", summary="Slowest or costliest single calls")
    async def calls_top(
        by: Annotated[
            str, Query(description="slowest, costliest, most_tokens, slowest_first_token.")
        ],
        start: Start = None,
        end: End = None,
        limit: int | None = None,
        model: str | None = None,
        service: str | None = None,
    ) -> Response:
        def work() -> Any:
            s, e = parse_range(start, end, _now(), default_range_s=DAY_S)
            n = parse_limit(limit, 10, 1000)
            rows = top_calls(runner, s, e, by, n, model=model, service=service)
            return {"by": by, "start": rfc3339(s), "end": rfc3339(e), "calls": rows}

        return await _answer(work)

    @router.get("/calls/{trace_id}/{span_id}", summary="One call: content, timings, trace")
    async def call_one(trace_id: str, span_id: str) -> Response:
        return await _answer(lambda: call_detail(runner, trace_id, span_id))

    @router.get("/search", summary="Full-text search over captured prompts and responses")
    async def search_content(
        q: Annotated[str, Query(description="Words that must all appear.")],
        limit: int | None = None,
        start: Start = None,
        end: End = None,
    ) -> Response:
        def work() -> Any:
            now = _now()
            s = parse_time(start, "start", now)
            e = parse_time(end, "end", now)
            if s is not None and e is not None and e <= s:
                raise BadParameterError("end must be after start")
            n = parse_limit(limit, 50, 1000)
            return content.search(runner, q, limit=n, start=s, end=e)

        return await _answer(work)

    @router.get("/cost", summary="Spend per model, provider, service, namespace, ...")
    async def cost(
        by: Annotated[
            str,
            Query(description="model, provider, service, namespace, pod, operation, fingerprint."),
        ] = "model",
        start: Start = None,
        end: End = None,
        limit: int | None = None,
    ) -> Response:
        def work() -> Any:
            s, e = parse_range(start, end, _now(), default_range_s=DAY_S)
            n = parse_limit(limit, 1000, 10000)
            out = cost_breakdown(runner, s, e, by, limit=n)
            return {"start": rfc3339(s), "end": rfc3339(e), **out}

        return await _answer(work)

    @router.get("/cost/prices", summary="The price table in force")
    async def prices() -> Response:
        def work() -> Any:
            settings = fetch(runner, "SELECT * EXCLUDE (id) FROM cost_settings WHERE id = 1")
            return {
                "settings": settings[0] if settings else None,
                "models": fetch(runner, "SELECT * FROM model_prices ORDER BY model, provider"),
                "gpu_usd_per_hour": {
                    r["gpu_type"]: r["usd_per_gpu_hour"]
                    for r in fetch(runner, "SELECT * FROM gpu_prices ORDER BY gpu_type")
                },
            }

        return await _answer(work)

    return router
