"""The store: migrations, refusal of newer files, lockdown, and the group-commit writer."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from store.database import Database, SchemaTooNewError, bundled_migrations
from store.schema import SPANS, TABLES
from store.writer import QueueFullError, StoreWriter, WriterClosedError


def span_rows(n: int, prefix: str = "a") -> pa.Table:
    cols = {f.name: pa.nulls(n, f.type) for f in SPANS}
    cols["trace_id"] = pa.array([prefix * 32] * n)
    cols["span_id"] = pa.array([f"{i:016x}" for i in range(n)])
    cols["name"] = pa.array([f"span {i}" for i in range(n)])
    return pa.table(cols, schema=SPANS)


def test_new_file_gets_every_migration(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    assert db.schema_version() == len(bundled_migrations()) >= 1
    tables = {r[0] for r in db.cursor().execute("SHOW TABLES").fetchall()}
    assert set(TABLES) <= tables
    assert "llm_calls" in tables
    db.close()


def test_arrow_schemas_match_the_tables(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    for name, schema in TABLES.items():
        cols = [r[0] for r in db.cursor().execute(f"DESCRIBE {name}").fetchall()]
        assert cols == schema.names, name
    db.close()


def test_reopen_is_idempotent_and_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Database(path).close()
    db = Database(path)
    version = db.schema_version()
    db.connection.execute(
        "INSERT INTO infersight_schema VALUES (?, 'future.sql', now())", [version + 5]
    )
    db.close()
    with pytest.raises(SchemaTooNewError, match="newer infersight"):
        Database(path)


def test_lockdown_blocks_files_and_settings(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    db.lock_down()
    cur = db.cursor()
    with pytest.raises(duckdb.Error):
        cur.execute("SELECT * FROM read_text('/etc/passwd')").fetchall()
    with pytest.raises(duckdb.Error):
        cur.execute("SET enable_external_access = true")
    with pytest.raises(duckdb.Error):
        cur.execute(f"COPY spans TO '{tmp_path}/x.csv'")
    db.close()


def test_writer_groups_and_acknowledges_after_commit(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    db = Database(path)
    commits: list[tuple[float, int, int]] = []
    writer = StoreWriter(db, on_commit=lambda s, b, r: commits.append((s, b, r)))
    futures = [writer.submit({"spans": span_rows(100, "b")}) for _ in range(50)]
    writer.start()
    assert sum(f.result(30) for f in futures) == 5000
    assert sum(b for _, b, _ in commits) == 50
    assert len(commits) < 50, "concurrent batches should share commits"
    writer.stop()
    writer.stop()
    db.close()
    reopened = duckdb.connect(str(path), read_only=True)
    assert reopened.execute("SELECT count(*) FROM spans").fetchone() == (5000,)
    reopened.close()


def test_one_bad_batch_does_not_sink_its_group(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    writer = StoreWriter(db)
    bad = span_rows(3)
    # NOT NULL on trace_id: this batch must fail alone.
    bad = bad.set_column(0, "trace_id", pa.nulls(3, pa.string()))
    good = [writer.submit({"spans": span_rows(10)}) for _ in range(5)]
    failing = writer.submit({"spans": bad})
    writer.start()
    assert [f.result(30) for f in good] == [10] * 5
    with pytest.raises(duckdb.Error):
        failing.result(30)
    assert db.cursor().execute("SELECT count(*) FROM spans").fetchone() == (50,)
    assert writer.stats.batches_failed == 1
    writer.stop()
    db.close()


def test_full_queue_refuses_instead_of_blocking(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    writer = StoreWriter(db, max_queue_batches=2)
    writer.submit({"spans": span_rows(1)})
    writer.submit({"spans": span_rows(1)})
    with pytest.raises(QueueFullError):
        writer.submit({"spans": span_rows(1)})
    writer.start()
    writer.stop()
    with pytest.raises(WriterClosedError):
        writer.submit({"spans": span_rows(1)})
    assert db.cursor().execute("SELECT count(*) FROM spans").fetchone() == (2,)
    db.close()


def test_unknown_table_is_refused(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    writer = StoreWriter(db)
    with pytest.raises(ValueError, match="unknown table"):
        writer.submit({"users; DROP TABLE spans": span_rows(1)})
    db.close()


def test_stop_flushes_batches_submitted_concurrently(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    writer = StoreWriter(db, max_queue_batches=10_000)
    writer.start()
    accepted: list[int] = []

    def produce() -> None:
        for _ in range(200):
            try:
                fut = writer.submit({"spans": span_rows(5)})
            except WriterClosedError:
                return
            accepted.append(fut.result(30))

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.stop()
    stored = db.cursor().execute("SELECT count(*) FROM spans").fetchone()
    assert stored == (sum(accepted),)
    db.close()
