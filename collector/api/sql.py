"""Read-only SQL over the trace store: one statement in, an Arrow table out.

Takes SQL text, positional parameters, a row limit and a timeout; gives a `QueryResult` (Arrow
table of at most `row_limit` rows, a truncation flag, the elapsed time) or raises `SqlError`
carrying DuckDB's own message. Only reading statements pass the allow-list; file and network
access are already switched off for the whole database (`Database.lock_down`), so the allow-list
is a second wall, not the only one. Must not: run more than one statement, or outlive its timeout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from store.database import Database

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_BATCH_ROWS = 65_536


class SqlError(Exception):
    """A query was refused or failed; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The rows of one query and how they were cut."""

    table: pa.Table
    truncated: bool
    elapsed_s: float


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise `SqlError` unless `sql` is exactly one reading statement."""
    if not sql.strip():
        raise SqlError("empty query")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlError(str(exc)) from None
    if len(statements) != 1:
        raise SqlError(f"send exactly one statement per request (got {len(statements)})")
    kind = statements[0].type
    if kind not in _ALLOWED:
        raise SqlError(
            f"only SELECT, WITH, EXPLAIN, DESCRIBE, SHOW and SUMMARIZE are allowed "
            f"(got {kind.name})",
            status=403,
        )


class QueryRunner:
    """Runs read-only queries on their own cursors, with a row limit and a timeout."""

    def __init__(self, db: Database, row_limit: int, timeout_s: float) -> None:
        self._db = db
        self.row_limit = row_limit
        self.timeout_s = timeout_s

    def run(
        self,
        sql: str,
        params: list[Any] | None = None,
        *,
        row_limit: int | None = None,
        timeout_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> QueryResult:
        """Execute `sql` and collect up to `row_limit` rows; `cancel` interrupts it early."""
        limit = min(row_limit or self.row_limit, self.row_limit)
        timeout = min(timeout_s or self.timeout_s, self.timeout_s)
        started = time.monotonic()
        cur = self._db.cursor()
        timed_out = threading.Event()

        def interrupt() -> None:
            timed_out.set()
            cur.interrupt()

        timer = threading.Timer(timeout, interrupt)
        timer.daemon = True
        stop_watch = threading.Event()
        watcher: threading.Thread | None = None
        if cancel is not None:

            def watch() -> None:
                while not stop_watch.wait(0.05):
                    if cancel.is_set():
                        cur.interrupt()
                        return

            watcher = threading.Thread(target=watch, daemon=True)
        try:
            check_read_only(cur, sql)
            timer.start()
            if watcher is not None:
                watcher.start()
            cur.execute(sql, params or [])
            if cur.description is None:
                return QueryResult(pa.table({}), False, time.monotonic() - started)
            reader = cur.to_arrow_reader(_BATCH_ROWS)
            batches: list[pa.RecordBatch] = []
            rows = 0
            truncated = False
            for batch in reader:
                if rows + batch.num_rows > limit:
                    batches.append(batch.slice(0, limit - rows))
                    truncated = True
                    break
                batches.append(batch)
                rows += batch.num_rows
            table = pa.Table.from_batches(batches, schema=reader.schema)
            return QueryResult(table, truncated, time.monotonic() - started)
        except duckdb.InterruptException:
            if timed_out.is_set():
                raise SqlError(f"statement timeout: the query ran past {timeout:g} s") from None
            raise SqlError("query cancelled", status=499) from None
        except duckdb.Error as exc:
            raise SqlError(str(exc)) from None
        finally:
            timer.cancel()
            stop_watch.set()
            cur.close()
