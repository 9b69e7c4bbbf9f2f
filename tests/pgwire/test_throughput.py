"""Throughput of a one-million-row result to psycopg, next to DuckDB's own Python fetch.

Prints rows/s for: DuckDB `fetchall()` in-process, psycopg over the endpoint (text and binary),
and libpq alone (rows parsed by libpq, no Python objects). The assertion is deliberately loose
(the endpoint must not be slower than half of DuckDB's own Python fetch, and every row must
arrive intact): this machine is shared, so timings are reported, not gated tightly.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.pgwire.conftest import ServerThread, Store

ROWS = 1_000_000
QUERY = (
    "SELECT range AS i, range * 0.5::DOUBLE AS x, 'row ' || range AS s, "
    f"TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_microseconds(range) AS t FROM range({ROWS})"
)


@pytest.mark.slow
def test_million_rows_to_psycopg(server: ServerThread, store: Store) -> None:
    cursor = store.db.cursor()
    try:
        started = time.perf_counter()
        rows = cursor.execute(QUERY).fetchall()
        duckdb_s = time.perf_counter() - started
    finally:
        cursor.close()
    assert len(rows) == ROWS
    del rows
    timings: dict[str, float] = {"duckdb fetchall (in process)": duckdb_s}
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            started = time.perf_counter()
            cur.execute(QUERY)
            fetched = cur.fetchall()
            timings[f"psycopg {'binary' if binary else 'text'}"] = time.perf_counter() - started
            assert len(fetched) == ROWS
            assert fetched[-1][:3] == (ROWS - 1, (ROWS - 1) * 0.5, f"row {ROWS - 1}")
            del fetched
        started = time.perf_counter()
        result = conn.pgconn.exec_(QUERY.encode())
        timings["libpq only"] = time.perf_counter() - started
        assert result.ntuples == ROWS
    for name, seconds in timings.items():
        print(f"{name:32s} {ROWS / seconds:>12,.0f} rows/s  ({seconds:.2f} s)")
    assert timings["psycopg text"] < 2 * duckdb_s
