"""Fixtures: a store seeded with synthetic calls, served by the real API app on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from collector.analytics.cost import PRICES_ENV, load_prices
from collector.analytics.search import load_fts
from collector.api.app import CollectorState, build_api_app
from collector.api.sql import QueryRunner
from collector.prom.genai import GenAIStoreCollector
from store.database import Database
from store.writer import StoreWriter
from tests.analytics import synth
from tests.conftest import free_port


class ServedApp:
    """A FastAPI app served by uvicorn on a loopback port, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def make_state(db: Database) -> CollectorState:
    return CollectorState(
        db=db,
        writer=StoreWriter(db),
        runner=QueryRunner(db, 100_000, 30),
        registry=CollectorRegistry(),
    )


def make_app(state: CollectorState) -> FastAPI:
    """The collector's own API app with the analytics and Jaeger routers included."""
    app = build_api_app(state, search_refresh_interval_s=3600)
    return app


@dataclass
class Seeded:
    """A locked-down store holding the synthetic calls, and the API serving it."""

    db: Database
    state: CollectorState
    calls: list[synth.Call]
    points: list[synth.Point]
    api: str
    fts: bool

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.api + path, params=params, timeout=60)


@pytest.fixture(scope="package")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    path: Path = tmp_path_factory.mktemp("analytics") / "store.duckdb"
    db = Database(path)
    fts = load_fts(db)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(PRICES_ENV, raising=False)
        load_prices(db)
    calls = synth.make_calls()
    points = synth.make_points()
    synth.seed(db, calls, points)
    db.lock_down()
    state = make_state(db)
    state.registry.register(GenAIStoreCollector(db))
    with ServedApp(make_app(state)) as served:
        yield Seeded(db, state, calls, points, served.url, fts)
    db.close()


def window(**extra: Any) -> dict[str, Any]:
    """Query parameters for the synthetic window."""
    return {"start": synth.BASE.isoformat(), "end": synth.ts(synth.WINDOW_S).isoformat(), **extra}
