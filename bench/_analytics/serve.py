"""The collector's two read surfaces, started in this process on loopback for measuring.

Takes an open `Database` (migrated, priced, shims installed, locked down); gives `ApiServer`, a
real uvicorn server running `build_api_app` on 127.0.0.1 in a thread, and `PgServer`, the
PostgreSQL wire endpoint on its own event-loop thread in trust mode (loopback only, no
passwords). Both pick a free port and are stopped by leaving their `with` block.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from collector.api.app import CollectorState, build_api_app
from collector.api.sql import QueryRunner
from collector.pgwire import DuckDBBackend, PgWireServer, PgWireSettings
from store.database import Database
from store.writer import StoreWriter


class ApiServer:
    """`build_api_app` under uvicorn on 127.0.0.1, in a background thread."""

    def __init__(self, db: Database, runner: QueryRunner) -> None:
        state = CollectorState(
            db=db, writer=StoreWriter(db), runner=runner, registry=CollectorRegistry()
        )
        state.ready.set()
        app = build_api_app(state, search_refresh_interval_s=3600.0)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="bench-api", daemon=True)
        self.port = 0

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        sockets = self.server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class PgServer:
    """The PostgreSQL wire endpoint on 127.0.0.1 in trust mode, on its own loop thread."""

    def __init__(self, db: Database) -> None:
        self.settings = PgWireSettings(host="127.0.0.1", statement_timeout_s=600.0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-pg", daemon=True)
        self.server = PgWireServer(DuckDBBackend(db, self.settings.batch_rows), self.settings)
        self.port = 0

    def __enter__(self) -> PgServer:
        self.thread.start()
        started = asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop)
        self.port = int(started.result(15))
        return self

    def dsn(self, **extra: Any) -> str:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": "bench",
            "dbname": "infersight",
            "sslmode": "disable",
        }
        values.update(extra)
        return " ".join(f"{k}={v}" for k, v in values.items())

    def __exit__(self, *exc: object) -> None:
        stopped = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
        stopped.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(15)
        self.loop.close()
