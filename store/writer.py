"""The single DuckDB writer: Arrow batches in, group commits out, acknowledgement after commit.

Takes `submit({table_name: pyarrow.Table, ...})` calls from any thread; gives each a
`concurrent.futures.Future` that resolves with the number of rows once the transaction holding
them has committed (DuckDB syncs its WAL on commit, so a resolved future survives `kill -9`).
Concurrent submissions are grouped into one transaction. The queue is bounded: `submit` raises
`QueueFullError` instead of blocking, so receivers can answer 503 and let clients retry.
Columns the store declares as JSON must hold valid JSON text (the decoders write them with
orjson): the writer hands them to DuckDB marked as Arrow JSON, which DuckDB stores as they are
instead of parsing every value again to check it.
Must not: insert row by row, block a caller, or acknowledge anything before its commit.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from store.database import Database
from store.schema import TABLES

log = logging.getLogger(__name__)

#: Field metadata of the canonical Arrow JSON extension type; DuckDB reads such a string column
#: as its JSON type directly (a plain string column is cast to JSON, which validates each value).
_ARROW_JSON = {b"ARROW:extension:name": b"arrow.json", b"ARROW:extension:metadata": b""}


class QueueFullError(Exception):
    """The write queue is full; the caller should ask its client to retry later."""


class WriterClosedError(Exception):
    """The writer has been stopped and takes no more batches."""


@dataclass(slots=True)
class _Pending:
    tables: dict[str, pa.Table]
    rows: int
    future: Future[int]
    enqueued_mono_s: float


@dataclass(slots=True)
class WriterStats:
    """Counters the collector exports on /metrics. Written by the writer thread only."""

    commits: int = 0
    failed_commits: int = 0
    batches_committed: int = 0
    batches_failed: int = 0
    rows_committed: dict[str, int] = field(default_factory=dict)
    last_commit_s: float = 0.0
    last_group_batches: int = 0
    last_group_rows: int = 0
    commit_seconds_total: float = 0.0


class StoreWriter:
    """One thread that owns all inserts into a `Database`."""

    def __init__(
        self,
        db: Database,
        *,
        max_queue_batches: int = 512,
        max_group_rows: int = 100_000,
        on_commit: Callable[[float, int, int], None] | None = None,
    ) -> None:
        """`on_commit(seconds, batches, rows)` is called on the writer thread after each commit."""
        self._db = db
        self._con = db.cursor()
        self._insert_schemas = _json_marked_schemas(self._con)
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_queue_batches)
        self._max_group_rows = max_group_rows
        self._thread = threading.Thread(target=self._run, name="infersight-writer", daemon=True)
        self._closed = threading.Event()
        self._started = False
        self.stats = WriterStats()
        self.max_queue_batches = max_queue_batches
        self._on_commit = on_commit

    # -- producer side -------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if not self._started:
            self._started = True
            self._thread.start()

    @property
    def queue_depth(self) -> int:
        """Batches waiting to be written."""
        return self._queue.qsize()

    def submit(self, tables: Mapping[str, pa.Table]) -> Future[int]:
        """Queue tables for the next commit; the future resolves after that commit."""
        if self._closed.is_set():
            raise WriterClosedError("the store writer is stopped")
        checked: dict[str, pa.Table] = {}
        rows = 0
        for name, table in tables.items():
            schema = TABLES.get(name)
            if schema is None:
                raise ValueError(f"unknown table {name!r}")
            if table.num_rows == 0:
                continue
            if not table.schema.equals(schema):
                table = table.select(schema.names).cast(schema)
            checked[name] = table
            rows += table.num_rows
        future: Future[int] = Future()
        if rows == 0:
            future.set_result(0)
            return future
        try:
            self._queue.put_nowait(_Pending(checked, rows, future, time.monotonic()))
        except queue.Full:
            raise QueueFullError(
                f"write queue full ({self.max_queue_batches} batches waiting)"
            ) from None
        return future

    def stop(self, timeout_s: float = 60.0) -> None:
        """Write everything queued, then stop the thread. Safe to call twice."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout_s)
        with contextlib.suppress(duckdb.Error):
            self._con.close()

    # -- writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            rows = first.rows
            while rows < self._max_group_rows:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
                rows += nxt.rows
            self._write_group(group)
        # Drain anything that raced with stop(): nothing acknowledged may be lost.
        rest: list[_Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                rest.append(item)
        if rest:
            self._write_group(rest)

    def _write_group(self, group: list[_Pending]) -> None:
        started = time.monotonic()
        try:
            self._commit(group)
        except Exception as exc:
            self.stats.failed_commits += 1
            log.warning(
                "group commit of %d batches failed (%s); retrying one by one", len(group), exc
            )
            if len(group) == 1:
                self.stats.batches_failed += 1
                group[0].future.set_exception(exc)
                return
            for pending in group:
                self._write_group([pending])
            return
        elapsed = time.monotonic() - started
        stats = self.stats
        stats.commits += 1
        stats.batches_committed += len(group)
        stats.last_commit_s = elapsed
        stats.commit_seconds_total += elapsed
        stats.last_group_batches = len(group)
        stats.last_group_rows = sum(p.rows for p in group)
        if self._on_commit is not None:
            self._on_commit(elapsed, len(group), stats.last_group_rows)
        for pending in group:
            for name, table in pending.tables.items():
                stats.rows_committed[name] = stats.rows_committed.get(name, 0) + table.num_rows
            pending.future.set_result(pending.rows)

    def _commit(self, group: list[_Pending]) -> None:
        by_table: dict[str, list[pa.Table]] = {}
        for pending in group:
            for name, table in pending.tables.items():
                by_table.setdefault(name, []).append(table)
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            for name, parts in by_table.items():
                combined = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
                marked = self._insert_schemas.get(name)
                if marked is not None:
                    combined = pa.Table.from_arrays(combined.columns, schema=marked)
                con.register("_infersight_batch", combined)
                try:
                    con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _infersight_batch")
                finally:
                    con.unregister("_infersight_batch")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise


def _json_marked_schemas(con: duckdb.DuckDBPyConnection) -> dict[str, pa.Schema]:
    """The writable tables' Arrow schemas with their JSON columns (as the store declares them)
    marked as Arrow JSON; tables without JSON columns are left out."""
    rows = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE data_type = 'JSON' AND table_schema = 'main'"
    ).fetchall()
    json_columns: dict[str, set[str]] = {}
    for table, column in rows:
        json_columns.setdefault(str(table), set()).add(str(column))
    out: dict[str, pa.Schema] = {}
    for name, schema in TABLES.items():
        marked = json_columns.get(name, set())
        if marked & set(schema.names):
            out[name] = pa.schema(
                [f.with_metadata(_ARROW_JSON) if f.name in marked else f for f in schema]
            )
    return out
