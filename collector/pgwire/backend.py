"""The query backend behind the PostgreSQL endpoint: DuckDB SQL in, typed Arrow batches out.

Takes DuckDB SQL (already rewritten by the endpoint), positional parameters and a timeout; gives
a `QueryResult` with the column names and DuckDB type names, then Arrow record batches on demand,
so a result is never materialised as Python rows. `QueryBackend` is the protocol the server uses;
`DuckDBBackend` implements it over `store.database.Database`, one fresh cursor per statement so
concurrent clients never share DuckDB state and a statement can be interrupted on its own.
Must not: run a statement without the server having checked its type, or outlive its timeout.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from collector.pgwire.errors import (
    QUERY_CANCELED,
    SYNTAX_ERROR,
    PgError,
    from_duckdb,
)
from collector.pgwire.shims import SHIM_SEARCH_PATH, shims_installed
from store.database import Database

log = logging.getLogger("infersight.pgwire")


@dataclass(frozen=True, slots=True)
class Column:
    """A result column: its name and DuckDB type name (`str(DuckDBPyType)`)."""

    name: str
    duckdb_type: str


class QueryResult(Protocol):
    """The rows of one running statement, fetched batch by batch."""

    @property
    def columns(self) -> Sequence[Column]: ...

    def fetch(self, max_rows: int) -> pa.RecordBatch | None:
        """Up to `max_rows` more rows; None when the result is exhausted. Blocking."""
        ...

    def close(self) -> None:
        """Release the statement (safe twice, safe from another thread)."""
        ...


class BackendSession(Protocol):
    """One client connection's view of the backend."""

    def statement_types(self, sql: str) -> list[str]:
        """DuckDB statement type names (`SELECT`, `INSERT`, ...) of each statement in `sql`."""
        ...

    def describe(self, sql: str) -> list[Column]:
        """The columns `sql` would return, without running it (parameters already replaced)."""
        ...

    def run(self, sql: str, params: Sequence[Any], timeout_s: float) -> QueryResult:
        """Start `sql`; the timeout covers execution and every later fetch. Blocking."""
        ...

    def cancel(self) -> None:
        """Interrupt whatever statement of this session is running (any thread)."""
        ...

    def close(self) -> None:
        """Cancel and release everything (safe twice)."""
        ...


class QueryBackend(Protocol):
    """Something that opens sessions."""

    def open_session(self, user: str) -> BackendSession: ...


class _DuckDBResult:
    def __init__(
        self,
        session: DuckDBSession,
        cursor: duckdb.DuckDBPyConnection,
        columns: list[Column],
        timer: threading.Timer,
        batch_rows: int,
    ) -> None:
        self._session = session
        self._cursor = cursor
        self._columns = columns
        self._timer = timer
        self._batch_rows = batch_rows
        self._reader: pa.RecordBatchReader | None = None
        self._pending: pa.RecordBatch | None = None
        self._done = False
        self._closed = False
        self._lock = threading.Lock()
        self.timed_out = False

    @property
    def columns(self) -> Sequence[Column]:
        return self._columns

    def fetch(self, max_rows: int) -> pa.RecordBatch | None:
        if self._done or self._closed:
            return None
        try:
            batch = self._pending
            self._pending = None
            if batch is None:
                if self._reader is None:
                    self._reader = self._cursor.to_arrow_reader(self._batch_rows)
                try:
                    batch = self._reader.read_next_batch()
                except StopIteration:
                    self._done = True
                    self.close()
                    return None
        except duckdb.Error as exc:
            self.close()
            raise self.translate(exc) from None
        if batch.num_rows > max_rows:
            self._pending = batch.slice(max_rows)
            batch = batch.slice(0, max_rows)
        return batch

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._timer.cancel()
        self._session.forget(self)
        with contextlib.suppress(duckdb.Error):
            self._cursor.close()

    def interrupt(self, timed_out: bool = False) -> None:
        if timed_out:
            self.timed_out = True
        with contextlib.suppress(duckdb.Error):
            self._cursor.interrupt()

    def translate(self, exc: duckdb.Error) -> PgError:
        """The PgError for `exc`, telling a timeout from a cancel."""
        if isinstance(exc, duckdb.InterruptException):
            if self.timed_out:
                return PgError(QUERY_CANCELED, "canceling statement due to statement timeout")
            return PgError(QUERY_CANCELED, "canceling statement due to user request")
        return from_duckdb(exc)


class DuckDBSession:
    """A client session over a `Database`: a parser cursor plus one cursor per statement."""

    def __init__(self, db: Database, search_path: str | None, batch_rows: int) -> None:
        self._db = db
        self._search_path = search_path
        self._batch_rows = batch_rows
        self._parser: duckdb.DuckDBPyConnection | None = None
        self._running: set[_DuckDBResult] = set()
        self._lock = threading.Lock()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._db.cursor()
        if self._search_path:
            cur.execute(f"SET search_path = '{self._search_path}'")
        return cur

    def statement_types(self, sql: str) -> list[str]:
        if self._parser is None:
            self._parser = self._cursor()
        try:
            statements = self._parser.extract_statements(sql)
        except duckdb.Error as exc:
            error = from_duckdb(exc)
            if error.sqlstate not in (SYNTAX_ERROR,):
                error = PgError(SYNTAX_ERROR, error.message, detail=error.detail)
            raise error from None
        return [s.type.name for s in statements]

    def describe(self, sql: str) -> list[Column]:
        cur = self._cursor()
        try:
            relation = cur.sql(sql)
            if relation is None:
                return []
            return [
                Column(name, str(kind))
                for name, kind in zip(relation.columns, relation.types, strict=True)
            ]
        except duckdb.Error as exc:
            raise from_duckdb(exc) from None
        finally:
            cur.close()

    def run(self, sql: str, params: Sequence[Any], timeout_s: float) -> QueryResult:
        cur = self._cursor()
        holder: list[_DuckDBResult] = []

        def on_timeout() -> None:
            if holder:
                holder[0].interrupt(timed_out=True)

        timer = threading.Timer(timeout_s, on_timeout)
        timer.daemon = True
        result = _DuckDBResult(self, cur, [], timer, self._batch_rows)
        holder.append(result)
        with self._lock:
            self._running.add(result)
        timer.start()
        try:
            cur.execute(sql, list(params))
            description = cur.description or []
            result._columns = [Column(d[0], str(d[1])) for d in description]
        except duckdb.Error as exc:
            result.close()
            raise result.translate(exc) from None
        except BaseException:
            result.close()
            raise
        return result

    def forget(self, result: _DuckDBResult) -> None:
        with self._lock:
            self._running.discard(result)

    def cancel(self) -> None:
        with self._lock:
            running = list(self._running)
        for result in running:
            result.interrupt()

    def close(self) -> None:
        self.cancel()
        with self._lock:
            running = list(self._running)
        for result in running:
            result.close()
        if self._parser is not None:
            with contextlib.suppress(duckdb.Error):
                self._parser.close()
            self._parser = None


class DuckDBBackend:
    """`QueryBackend` over the store's DuckDB database."""

    def __init__(self, db: Database, batch_rows: int = 32_768) -> None:
        self._db = db
        self._batch_rows = batch_rows
        self._search_path = SHIM_SEARCH_PATH if shims_installed(db) else None
        if self._search_path is None:
            log.warning(
                "pgwire: PostgreSQL shims are not installed (call install_shims(db) before "
                "lock_down()); Grafana's and psql's catalog queries will fail"
            )

    def open_session(self, user: str) -> DuckDBSession:
        return DuckDBSession(self._db, self._search_path, self._batch_rows)
