"""The project's own Grafana dashboards, queried through the PostgreSQL endpoint.

Every SQL target of every dashboard in `dashboards/grafana/` is expanded the way Grafana expands
it (tests/analytics/grafana.py), sent on the simple query protocol as Grafana's data source does,
decoded by type OID (psycopg), and compared with what DuckDB returns for the same SQL directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from collector.analytics.cost import PRICES_ENV, load_prices
from collector.api.sql import QueryRunner
from collector.pgwire import PgWireSettings, install_shims
from dashboards.build import GROUP_OPTIONS
from store.database import Database
from tests.analytics import grafana, synth
from tests.pgwire.conftest import PASSWORD, USER, ServerThread

ROOT = Path(__file__).resolve().parents[2] / "dashboards" / "grafana"
FILES = sorted(ROOT.glob("*.json"))
START, END = grafana.window(synth.BASE, synth.WINDOW_S)
INTERVAL_S = 60.0


@pytest.fixture(scope="module")
def seeded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Database, str]]:
    folder = tmp_path_factory.mktemp("dash")
    db = Database(folder / "store.duckdb")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(PRICES_ENV, raising=False)
        load_prices(db)
    synth.seed(db, synth.make_calls(), synth.make_points())
    install_shims(db)
    db.lock_down()
    server = ServerThread(db, PgWireSettings(users={USER: PASSWORD}))
    yield db, server.dsn()
    server.stop()
    db.close()


def _targets(doc: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            out.extend(
                (panel["title"], t["rawSql"]) for t in panel.get("targets", []) if "rawSql" in t
            )
            walk(panel.get("panels", []))

    walk(doc["panels"])
    return out


def _defaults(doc: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for var in doc.get("templating", {}).get("list", []):
        if var["type"] == "query":
            values[var["name"]] = var["allValue"]
        elif var["type"] == "custom":
            values[var["name"]] = GROUP_OPTIONS[0]
    return values


def _normal(value: Any) -> Any:
    """One comparable form for DuckDB's Python values and the endpoint's decoded values."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, Decimal):
        return float(value)
    return value


def _sort_key(row: tuple[Any, ...]) -> str:
    # Floats are rounded for ordering only: DuckDB sums floats in parallel, so the last digit
    # of an aggregate can differ between two runs of the same query.
    return repr(tuple(f"{v:.9g}" if isinstance(v, float) else v for v in row))


def _rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    normal = [tuple(_normal(v) for v in row) for row in rows]
    return sorted(normal, key=_sort_key)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_dashboard_queries_match_duckdb(seeded_server: tuple[Database, str], path: Path) -> None:
    db, dsn = seeded_server
    doc = json.loads(path.read_text())
    runner = QueryRunner(db, 100_000, 30)
    variables = _defaults(doc)
    targets = _targets(doc)
    assert targets
    with psycopg.connect(dsn, autocommit=True) as conn:
        for title, raw_sql in targets:
            sql = grafana.expand(raw_sql, START, END, INTERVAL_S, variables)
            direct = runner.run(sql).table
            cur = psycopg.ClientCursor(conn)  # simple query protocol, text results
            cur.execute(sql)
            assert cur.description is not None
            assert [c.name for c in cur.description] == direct.column_names, title
            wire_rows = _rows(cur.fetchall())
            direct_rows = _rows([tuple(r.values()) for r in direct.to_pylist()])
            assert len(wire_rows) == len(direct_rows), title
            assert wire_rows, title
            for want, got in zip(direct_rows, wire_rows, strict=True):
                assert len(want) == len(got), title
                for w, g in zip(want, got, strict=True):
                    if isinstance(w, float) and isinstance(g, float):
                        assert g == pytest.approx(w, rel=1e-9, nan_ok=True), (title, want, got)
                    else:
                        assert g == w, (title, want, got)
