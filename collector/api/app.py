"""The collector's HTTP API on port 7070: SQL, health, readiness and Prometheus metrics.

Takes the shared `CollectorState` (database, writer, query runner, metrics registry); gives a
FastAPI application. Queries run on worker threads so the event loop never waits on DuckDB,
and a client that disconnects cancels its query.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from collector.analytics.router import build_analytics_router
from collector.analytics.search import ContentSearch
from collector.api.encode import encode
from collector.api.sql import QueryResult, QueryRunner, SqlError
from collector.jaeger.router import build_jaeger_router
from store.database import Database
from store.writer import StoreWriter


@dataclass(slots=True)
class CollectorState:
    """What every HTTP handler may read."""

    db: Database
    writer: StoreWriter
    runner: QueryRunner
    registry: CollectorRegistry
    ready: threading.Event = field(default_factory=threading.Event)


class SqlRequest(BaseModel):
    """Body of `POST /api/v1/sql`."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(..., description="One read-only statement: SELECT, WITH, EXPLAIN, ...")
    params: list[Any] = Field(default_factory=list, description="Values for ? or $n.")
    row_limit: int | None = Field(None, ge=1, description="At most the server's row limit.")
    timeout_s: float | None = Field(None, gt=0, description="At most the server's timeout.")


async def _run_cancellable(
    state: CollectorState, body: SqlRequest, request: Request
) -> QueryResult:
    cancel = threading.Event()

    async def watch_disconnect() -> None:
        while not cancel.is_set():
            if await request.is_disconnected():
                cancel.set()
                return
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch_disconnect())
    try:
        return await run_in_threadpool(
            state.runner.run,
            body.sql,
            body.params,
            row_limit=body.row_limit,
            timeout_s=body.timeout_s,
            cancel=cancel,
        )
    finally:
        cancel.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def build_api_app(
    state: CollectorState,
    *,
    search: ContentSearch | None = None,
    search_refresh_interval_s: float = 60.0,
) -> FastAPI:
    """The FastAPI application served on the API port: SQL, health, metrics, the analytics
    API (`/api/v1/...`) and the Jaeger-compatible query API (`/jaeger/api/...`)."""

    app = FastAPI(
        title="infersight collector",
        summary="GenAI traces, metrics and GPU telemetry in DuckDB: SQL and analytics.",
        version="0.1.0",
    )

    @app.exception_handler(SqlError)
    async def sql_error(_: Request, exc: SqlError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.post("/api/v1/sql", summary="Run one read-only SQL statement on the trace store")
    async def sql(
        body: SqlRequest,
        request: Request,
        format: Annotated[
            Literal["json", "csv", "arrow", "parquet"], Query(description="Result encoding.")
        ] = "json",
    ) -> Response:
        result = await _run_cancellable(state, body, request)
        payload, media_type = await run_in_threadpool(encode, result, format)
        headers = {"X-Infersight-Truncated": "true" if result.truncated else "false"}
        return Response(payload, media_type=media_type, headers=headers)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: receivers listening and the writer running")
    async def readyz() -> JSONResponse:
        if state.ready.is_set():
            return JSONResponse({"status": "ready", "queue_depth": state.writer.queue_depth})
        return JSONResponse({"status": "starting"}, status_code=503)

    @app.get("/metrics", summary="Prometheus exposition of the collector's own metrics")
    async def metrics() -> Response:
        # Some collectors query DuckDB at scrape time: keep them off the event loop.
        body = await run_in_threadpool(generate_latest, state.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(
        build_analytics_router(
            state, search=search, search_refresh_interval_s=search_refresh_interval_s
        )
    )
    app.include_router(build_jaeger_router(state))
    return app
