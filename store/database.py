"""The DuckDB database file: opening, tuning, migrations and the read-only lockdown.

Takes a path (or ":memory:"); gives a `Database` whose schema is at the newest version this
release knows, whose session settings are tuned for the collector's load, and which hands out
cursors for readers. A file written by a newer release is refused with `SchemaTooNewError`.
Only the collector process opens the file: DuckDB allows one writing process.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer infersight than this one."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema migration."""

    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """Return the migrations shipped in `store/migrations/`, in version order."""
    found: list[Migration] = []
    for entry in resources.files("store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"store migrations are not numbered 1..N without gaps: {versions}")
    return found


@dataclass(frozen=True, slots=True)
class DatabaseTuning:
    """DuckDB settings for an ingest-heavy file.

    A larger checkpoint threshold lets many group commits land in the WAL before DuckDB folds
    them into the main file, which keeps commit latency flat under sustained ingest.
    """

    checkpoint_threshold: str = "256MB"
    memory_limit: str | None = None
    threads: int | None = None


class Database:
    """An open infersight store."""

    def __init__(self, path: str | Path, tuning: DatabaseTuning | None = None) -> None:
        self.path = str(path)
        self.tuning = tuning or DatabaseTuning()
        self._lock = threading.Lock()
        self._locked_down = False
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(self.path, config=self._config())
        self._con.execute("SET TimeZone = 'UTC'")
        self.migrate()

    def _config(self) -> dict[str, str | bool | int | float | list[str]]:
        config: dict[str, str | bool | int | float | list[str]] = {
            "checkpoint_threshold": self.tuning.checkpoint_threshold,
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
            "preserve_insertion_order": "false",
        }
        if self.tuning.memory_limit:
            config["memory_limit"] = self.tuning.memory_limit
        if self.tuning.threads:
            config["threads"] = str(self.tuning.threads)
        return config

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The root connection; the writer thread owns it for inserts."""
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the same database, for one reader thread."""
        with self._lock:
            return self._con.cursor()

    def schema_version(self) -> int:
        """The newest migration applied to this file (0 for a new file)."""
        row = self._con.execute(
            "SELECT coalesce(max(version), 0) FROM infersight_schema"
        ).fetchone()
        return int(row[0]) if row else 0

    def migrate(self) -> int:
        """Apply every bundled migration the file lacks; return the resulting version."""
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS infersight_schema ("
            " version INTEGER PRIMARY KEY, name VARCHAR, applied_time TIMESTAMPTZ)"
        )
        migrations = bundled_migrations()
        newest_known = migrations[-1].version if migrations else 0
        current = self.schema_version()
        if current > newest_known:
            raise SchemaTooNewError(
                f"{self.path}: schema version {current} was written by a newer infersight; "
                f"this release knows versions up to {newest_known}. Upgrade infersight, or "
                "point --db at another file."
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            self._con.execute("BEGIN TRANSACTION")
            try:
                self._con.execute(migration.sql)
                self._con.execute(
                    "INSERT INTO infersight_schema VALUES (?, ?, now())",
                    [migration.version, migration.name],
                )
                self._con.execute("COMMIT")
            except Exception:
                self._con.execute("ROLLBACK")
                raise
        return self.schema_version()

    def lock_down(self, allowed_directories: list[str] | None = None) -> None:
        """Forbid file and network access and further SET statements for every cursor.

        DuckDB's own files (the database, its WAL and spill files) stay writable; no other
        path is reachable from SQL unless listed in `allowed_directories`.

        Called once at start, after migrations and extension loading: from then on a query can
        read only the tables, whatever a user sends through the SQL surfaces.
        """
        if self._locked_down:
            return
        dirs = allowed_directories or []
        if dirs:
            quoted = ", ".join("'" + d.replace("'", "''") + "'" for d in dirs)
            self._con.execute(f"SET allowed_directories = [{quoted}]")
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET lock_configuration = true")
        self._locked_down = True

    def checkpoint(self) -> None:
        """Fold the WAL into the main file."""
        self._con.execute("CHECKPOINT")

    def close(self) -> None:
        """Close the file; safe to call twice."""
        with contextlib.suppress(duckdb.Error):
            self._con.close()
