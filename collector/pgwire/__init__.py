"""PostgreSQL wire-protocol endpoint over the store, for Grafana, psql, BI tools and drivers.

`install_shims(db)` (before `db.lock_down()`), then
`PgWireServer(DuckDBBackend(db), PgWireSettings(...))` with `await start()` / `await stop()`.
"""

from collector.pgwire.backend import (
    BackendSession,
    Column,
    DuckDBBackend,
    QueryBackend,
    QueryResult,
)
from collector.pgwire.server import PgWireServer
from collector.pgwire.settings import PgWireSettings
from collector.pgwire.shims import install_shims

__all__ = [
    "BackendSession",
    "Column",
    "DuckDBBackend",
    "PgWireServer",
    "PgWireSettings",
    "QueryBackend",
    "QueryResult",
    "install_shims",
]
