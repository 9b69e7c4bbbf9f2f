"""The shim catalog: installed before lockdown, idempotent, never written to the store file."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.pgwire.shims import SHIM_SEARCH_PATH, install_shims, shims_installed
from store.database import Database


def _user_objects(db: Database) -> set[str]:
    cur = db.cursor()
    try:
        rows = cur.execute(
            "SELECT function_name FROM duckdb_functions() WHERE NOT internal "
            "UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal "
            "UNION ALL SELECT table_name FROM duckdb_tables()"
        ).fetchall()
    finally:
        cur.close()
    return {r[0] for r in rows}


def test_shims_live_in_memory_only(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    db = Database(path)
    before = _user_objects(db)
    install_shims(db)
    install_shims(db)  # idempotent
    assert shims_installed(db)
    cur = db.cursor()
    cur.execute(f"SET search_path = '{SHIM_SEARCH_PATH}'")
    assert cur.execute("SELECT quote_ident('Mixed Case'), quote_ident('plain')").fetchone() == (
        '"Mixed Case"',
        "plain",
    )
    assert cur.execute("SELECT parse_ident('main.\"My Table\"')").fetchone() == (
        ["main", "My Table"],
    )
    assert cur.execute("SELECT array_upper(['a', 'b'], 1), array_lower([], 1)").fetchone() == (
        2,
        None,
    )
    assert cur.execute("SELECT typname FROM pg_type WHERE oid = 1016").fetchone() == ("_int8",)
    assert cur.execute("SELECT current_setting('TimeZone')").fetchone() == ("UTC",)
    cur.close()
    db.close()
    reopened = Database(path)
    assert not shims_installed(reopened)
    assert _user_objects(reopened) == before
    reopened.close()


def test_shims_after_lockdown_are_refused(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.duckdb")
    db.lock_down()
    with pytest.raises(RuntimeError, match=r"before Database\.lock_down"):
        install_shims(db)
    db.close()
