"""The collector's real API application over a store file, served in this process.

`serve_api(db_path, register)` opens the store, builds `CollectorState` and the FastAPI app
exactly as the collector process does, lets the caller register collectors on the registry
served at `/metrics`, and serves it with uvicorn on a free 127.0.0.1 port until the context
ends. Used to read `/metrics` with `DcgmCollector` registered on a store a collector filled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

from collector.api.app import CollectorState, build_api_app
from collector.api.sql import QueryRunner
from collector.selfmetrics import SelfMetrics
from store.database import Database
from store.writer import StoreWriter


class _Server(uvicorn.Server):
    """uvicorn without signal handlers (it runs off the main thread)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def serve_api(db: Database, register: Callable[[CollectorState], None]) -> Iterator[str]:
    """Serve the API app over `db`; yields its base URL."""
    # as in the collector: user SQL and scrapes run on a store locked against file access
    db.lock_down()
    metrics = SelfMetrics()
    state = CollectorState(
        db=db,
        writer=StoreWriter(db),
        runner=QueryRunner(db, 10_000, 30.0),
        registry=metrics.registry,
    )
    register(state)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = int(sock.getsockname()[1])
    server = _Server(
        uvicorn.Config(build_api_app(state), log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="api-under-test", daemon=True
    )
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        assert server.started, "the API did not start"
        state.ready.set()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
