"""Test helpers for the OTLP receivers: both receivers served for real on loopback.

`Receivers` opens a real DuckDB file, starts a real `StoreWriter`, and serves the OTLP/HTTP app
(uvicorn) and the OTLP/gRPC server (grpc.aio) on free 127.0.0.1 ports from one asyncio loop in
a background thread, as the collector process does. Tests talk to it with real clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from collector.otlp.grpc_server import build_grpc_server
from collector.otlp.http import build_http_app
from collector.otlp.limits import ReceiverLimits
from collector.otlp.pool import DecodePool
from store.database import Database
from store.writer import StoreWriter

TABLES = ("spans", "genai_content", "metric_points", "log_records")


class _Server(uvicorn.Server):
    """uvicorn without signal handlers (it runs off the main thread here)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Receivers:
    """Both OTLP receivers over one store, running until `stop()`."""

    def __init__(
        self,
        db_path: Path,
        limits: ReceiverLimits | None = None,
        *,
        start_writer: bool = True,
        max_queue_batches: int = 512,
    ) -> None:
        self.limits = limits or ReceiverLimits()
        self.db = Database(db_path)
        self.writer = StoreWriter(self.db, max_queue_batches=max_queue_batches)
        self._writer_started = False
        if start_writer:
            self.start_writer()
        self.registry = CollectorRegistry()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.http_port = int(self._sock.getsockname()[1])
        self.grpc_port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="otlp-receivers", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("receivers did not start")
        if self._error is not None:
            raise RuntimeError("receivers failed to start") from self._error

    def start_writer(self) -> None:
        """Start the store writer (for tests that build it stopped)."""
        if not self._writer_started:
            self._writer_started = True
            self.writer.start()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    #: decode pool for both servers (None: decoding on the event loop); subclasses set it
    pool: DecodePool | None = None

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        grpc_rx = build_grpc_server(
            self.writer, self.limits, "127.0.0.1", 0, registry=self.registry, pool=self.pool
        )
        self.grpc_port = grpc_rx.bound_port
        await grpc_rx.server.start()
        app = build_http_app(self.writer, self.limits, registry=self.registry, pool=self.pool)
        server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[self._sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        self._ready.set()
        await self._stop.wait()
        await grpc_rx.server.stop(grace=2)
        server.should_exit = True
        await task

    def stop(self) -> None:
        """Stop both servers, flush the writer and close the store (safe twice)."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        self._sock.close()
        self.start_writer()
        self.writer.stop()
        self.db.close()

    def alive(self) -> bool:
        """Both servers still running (the serving thread has not died)."""
        return self._thread.is_alive()

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query on a fresh cursor."""
        cur = self.db.cursor()
        try:
            return cur.execute(sql, params or []).fetchall()
        finally:
            cur.close()

    def count(self, table: str) -> int:
        return int(self.rows(f"SELECT count(*) FROM {table}")[0][0])

    def counts(self) -> dict[str, int]:
        """Row count of every table the receivers write."""
        return {t: self.count(t) for t in TABLES}

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A self-metric's current value on this instance's registry (0 when absent)."""
        value = self.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else float(value)


@contextlib.contextmanager
def running_receivers(
    db_path: Path, limits: ReceiverLimits | None = None, **kwargs: Any
) -> Iterator[Receivers]:
    """`Receivers` as a context manager."""
    rx = Receivers(db_path, limits, **kwargs)
    try:
        yield rx
    finally:
        rx.stop()
