"""psycopg 3 against the endpoint: types, both protocols, errors, lockdown, limits, cancel."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from tests.pgwire.conftest import (
    MODELS,
    SEED_SPANS,
    SLOW_SQL,
    TYPE_OIDS,
    TYPE_SQL,
    ServerThread,
)

EXPECTED: dict[str, Any] = {
    "i2": -7,
    "i4": 123456,
    "i8": 9007199254740993,
    "f4": 1.5,
    "f8": 0.1,
    "num": Decimal("12345.678"),
    "huge": Decimal("170141183460469231731687303715884105727"),
    "b": True,
    "txt": 'héllo, "world"',
    "bin": b"\xde\xad\xbe\xef",
    "d": dt.date(2026, 1, 2),
    "ts": dt.datetime(2026, 1, 2, 3, 4, 5, 123456),
    "tstz": dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC),
    "iv": dt.timedelta(days=3, hours=4, minutes=5, seconds=6.5),
    "js": {"a": [1, 2], "b": None},
    "st": {"k": "v", "n": 1},
    "mp": {"x": 1},
    "u": uuid.UUID("6f1c3c1e-2b0a-4c55-9a8e-0d5c9b1a2f3e"),
    "txt_arr": ["a", "b c", None, '"q"'],
    "i8_arr": [1, None, 3],
    "f8_arr": [1.5, 2.25],
    "i4_arr": [1, 2],
    "bool_arr": [True, False],
    "nul": None,
}


def _row_dict(cur: psycopg.Cursor[Any]) -> dict[str, Any]:
    row = cur.fetchone()
    assert row is not None
    assert cur.description is not None
    return {col.name: value for col, value in zip(cur.description, row, strict=True)}


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
@pytest.mark.parametrize("prepare", [False, True], ids=["once", "prepared"])
def test_every_type_decodes(server: ServerThread, binary: bool, prepare: bool) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        cur = conn.cursor(binary=binary)
        for _ in range(2):  # the second run reuses the server-side prepared statement
            cur.execute(TYPE_SQL, prepare=prepare)
            assert cur.description is not None
            assert {c.name: c.type_code for c in cur.description} == TYPE_OIDS
            assert _row_dict(cur) == EXPECTED


def test_simple_protocol_types_and_timestamptz_text(server: ServerThread) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        cur = psycopg.ClientCursor(conn)  # client-side binding: simple query protocol
        cur.execute(TYPE_SQL)
        assert _row_dict(cur) == EXPECTED
        # The exact text clients decode (pgx parses timestamptz with a zone offset).
        raw = conn.pgconn.exec_(
            b"SELECT TIMESTAMPTZ '2026-01-02 03:04:05.123456+00', true, "
            b"[1, 2], ['x y', NULL], INTERVAL '1 year 2 months 3 days 04:05:06'"
        )
        values = [raw.get_value(0, i) for i in range(raw.nfields)]
        assert values == [
            b"2026-01-02 03:04:05.123456+00",
            b"t",
            b"{1,2}",
            b'{"x y",NULL}',
            b"1 year 2 mons 3 days 04:05:06",
        ]


def test_store_tables_and_view(server: ServerThread) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT gen_ai_request_model, count(*), sum(gen_ai_usage_input_tokens), "
            "min(start_time), bool_or(gen_ai_request_stream) "
            "FROM spans WHERE service_name = %s GROUP BY 1 ORDER BY 1",
            ["checkout"],
        ).fetchall()
        half = SEED_SPANS // 2
        assert rows == [
            ("gpt-4o", half, sum(range(0, SEED_SPANS, 2)),
             dt.datetime(2026, 1, 2, tzinfo=dt.UTC), True),
            ("llama-3", half, sum(range(1, SEED_SPANS, 2)),
             dt.datetime(2026, 1, 2, 0, 1, tzinfo=dt.UTC), False),
        ]  # fmt: skip
        calls = conn.execute(
            "SELECT model, status, input_tokens, output_tokens FROM llm_calls "
            "WHERE service_name = 'checkout' ORDER BY start_time LIMIT 2"
        ).fetchall()
        assert calls == [(MODELS[0], "error", 0, 0), (MODELS[1], "ok", 1, 2)]
        reasons = conn.execute(
            "SELECT gen_ai_response_finish_reasons, attributes FROM spans WHERE span_id = %s",
            [f"{3:016x}"],
        ).fetchone()
        assert reasons == (["length", "stop"], {"i": 3})


def test_parameters_of_common_types(server: ServerThread) -> None:
    start = dt.datetime(2026, 1, 2, 1, 0, tzinfo=dt.UTC)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            cur.execute(
                "SELECT count(*) FROM spans WHERE service_name = %s AND start_time >= %s "
                "AND gen_ai_usage_input_tokens > %s AND duration_s > %s "
                "AND gen_ai_request_stream = %s",
                ["checkout", start, 100, 0.5, True],
            )
            # minutes 60..239 with input tokens > 100 (i >= 101) and even i (stream = true)
            assert cur.fetchone() == (len([i for i in range(101, SEED_SPANS) if i % 2 == 0]),)
            cur.execute(
                "SELECT %s::BIGINT[] AS a, %s::UUID AS u, %s::DECIMAL(10,2) AS n, %s::DATE AS d, "
                "%s::BLOB AS b, %s AS none",
                [[1, 2, None], uuid.UUID(int=5), Decimal("3.25"), dt.date(2026, 3, 4),
                 b"\x00\x01", None],
            )  # fmt: skip
            assert cur.fetchone() == (
                [1, 2, None], uuid.UUID(int=5), Decimal("3.25"), dt.date(2026, 3, 4),
                b"\x00\x01", None,
            )  # fmt: skip


def test_errors_carry_sqlstate_and_connection_recovers(server: ServerThread) -> None:
    cases = [
        ("SELEC 1", pg_errors.SyntaxError, "42601"),
        ("SELECT * FROM no_such_table", pg_errors.UndefinedTable, "42P01"),
        ("SELECT no_such_column FROM spans", pg_errors.UndefinedColumn, "42703"),
        ("SELECT no_such_function(1)", pg_errors.UndefinedFunction, "42883"),
    ]
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for prepare in (False, True):
            for sql, cls, state in cases:
                with pytest.raises(cls) as caught:
                    conn.execute(sql, prepare=prepare)
                assert caught.value.sqlstate == state
                assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
        # An error in the middle of a pipeline of extended-protocol messages skips to Sync.
        with pytest.raises(pg_errors.UndefinedTable):
            _pipeline(conn, ["SELECT 1", "SELECT * FROM nope", "SELECT 2"])
        assert conn.execute("SELECT 3").fetchone() == (3,)


def test_transactions_and_failed_transaction_state(server: ServerThread) -> None:
    with psycopg.connect(server.dsn()) as conn:  # not autocommit: psycopg sends BEGIN
        assert conn.execute("SELECT 1").fetchone() == (1,)
        statuses = [conn.info.transaction_status]
        conn.commit()
        statuses.append(conn.info.transaction_status)
        assert statuses == [psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.IDLE]
        with pytest.raises(pg_errors.UndefinedTable):
            conn.execute("SELECT * FROM nope")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(pg_errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_simple_protocol_details(server: ServerThread) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        pg = conn.pgconn
        empty = pg.exec_(b"-- ping")
        assert empty.status == psycopg.pq.ExecStatus.EMPTY_QUERY
        assert pg.exec_(b"").status == psycopg.pq.ExecStatus.EMPTY_QUERY
        # Several statements in one query string: libpq keeps the last result.
        last = pg.exec_(b"SELECT 1; SELECT 'two' AS t; -- trailing comment")
        assert last.status == psycopg.pq.ExecStatus.TUPLES_OK
        assert last.get_value(0, 0) == b"two"
        # A failing statement stops the rest of the string (libpq keeps the error result).
        failed = pg.exec_(b"SELECT 1; SELECT * FROM nope; SELECT 3")
        assert failed.status == psycopg.pq.ExecStatus.FATAL_ERROR
        assert failed.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42P01"
        cur = psycopg.ClientCursor(conn)
        cur.execute("SELECT 1 AS a; SELECT 2 AS b, 3 AS c")
        assert cur.fetchall() == [(1,)]
        assert cur.nextset()
        assert cur.fetchall() == [(2, 3)]
        for sql in ("SET extra_float_digits = 3", "SET application_name = 'grafana'",
                    "SET TimeZone = 'UTC'", "SET statement_timeout = 0", "RESET ALL",
                    "SET DateStyle = ISO, MDY", "BEGIN", "COMMIT", "DISCARD ALL"):  # fmt: skip
            conn.execute(sql)
        assert conn.execute("SHOW server_version").fetchone() == ("15.0",)
        assert conn.execute("SHOW application_name").fetchone() == ("grafana",)
        version = conn.execute("SELECT version()").fetchone()
        assert version is not None
        assert version[0].startswith("PostgreSQL 15.0")
        with pytest.raises(pg_errors.InvalidParameterValue):
            conn.execute("SET TimeZone = 'Europe/Paris'")


def test_duckdb_read_statements(server: ServerThread) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for prepare in (False, True):
            described = {
                r[0]: r[1] for r in conn.execute("DESCRIBE spans", prepare=prepare).fetchall()
            }
            assert described["start_time"] == "TIMESTAMP WITH TIME ZONE"
            tables = {r[0] for r in conn.execute("SHOW TABLES", prepare=prepare).fetchall()}
            assert {"spans", "llm_calls"} <= tables
            plan = conn.execute("EXPLAIN SELECT count(*) FROM spans", prepare=prepare).fetchall()
            assert any("spans" in str(row).lower() for row in plan)
            summary = conn.execute(
                "SUMMARIZE SELECT gen_ai_usage_input_tokens FROM spans "
                "WHERE service_name = 'checkout'",
                prepare=prepare,
            ).fetchall()
            assert summary[0][0] == "gen_ai_usage_input_tokens"
            assert summary[0][10] == SEED_SPANS  # count
            first = conn.execute(
                "FROM spans SELECT span_id WHERE service_name = 'checkout' "
                "ORDER BY start_time LIMIT 1",
                prepare=prepare,
            ).fetchone()
            assert first == (f"{0:016x}",)


LOCKDOWN = [
    "COPY spans TO '/tmp/pgwire-copy.csv'",
    "COPY (SELECT 1) TO STDOUT",
    "ATTACH '/tmp/pgwire-attach.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "CREATE TABLE t (a INTEGER)",
    "CREATE VIEW v AS SELECT 1",
    "INSERT INTO spans (trace_id, span_id) VALUES ('x', 'y')",
    "DELETE FROM spans",
    "UPDATE spans SET name = 'x'",
    "DROP TABLE spans",
    "ALTER TABLE spans ADD COLUMN x INTEGER",
    "SET threads = 1",
    "SET enable_external_access = true",
    "SET GLOBAL lock_configuration = false",
    "SET memory_limit = '1GB'",
    "PRAGMA threads = 1",
    "CHECKPOINT",
    "EXPORT DATABASE '/tmp/pgwire-export'",
    "USE memory",
    "DETACH infersight_pg",
    "PREPARE p AS SELECT 1",
]


@pytest.mark.parametrize("sql", LOCKDOWN)
def test_lockdown_refusals(server: ServerThread, sql: str) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM spans WHERE service_name = 'checkout'")
        assert before.fetchone() == (SEED_SPANS,)
        for prepare in (False, True):
            with pytest.raises(psycopg.Error) as caught:
                _run_either_protocol(conn, sql, prepare)
            assert caught.value.sqlstate in ("42501", "0A000"), (sql, caught.value)
        after = conn.execute("SELECT count(*) FROM spans WHERE service_name = 'checkout'")
        assert after.fetchone() == (SEED_SPANS,)
        assert conn.execute("SELECT current_setting('enable_external_access')").fetchone() == (
            False,
        )


def _pipeline(conn: psycopg.Connection[Any], statements: list[str]) -> None:
    with conn.pipeline():
        for sql in statements:
            conn.execute(sql)


def _run_either_protocol(conn: psycopg.Connection[Any], sql: str, prepare: bool) -> None:
    if prepare:
        conn.execute(sql, prepare=True)
    else:
        raise _last_error(conn.pgconn.exec_(sql.encode()))


def _last_error(res: psycopg.pq.abc.PGresult) -> psycopg.Error:
    assert res.status == psycopg.pq.ExecStatus.FATAL_ERROR, res.status
    state = (res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) or b"").decode()
    error = pg_errors.lookup(state)(res.error_message.decode())
    return error


def test_statement_timeout(server: ServerThread) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(pg_errors.QueryCanceled, match="statement timeout"):
            conn.execute(SLOW_SQL)
        elapsed = time.monotonic() - started
        assert 4.5 < elapsed < 25, elapsed  # the server's 5 s limit
        conn.execute("SET statement_timeout = '300ms'")
        started = time.monotonic()
        with pytest.raises(pg_errors.QueryCanceled, match="statement timeout"):
            conn.execute(SLOW_SQL)
        assert time.monotonic() - started < 4
        # A client may lower the limit, never raise it.
        conn.execute("SET statement_timeout = '1h'")
        assert conn.execute("SHOW statement_timeout").fetchone() == ("5000ms",)
        assert conn.execute("SELECT 1").fetchone() == (1,)


# psycopg's legacy cancel() calls libpq's blocking PQcancel without releasing the GIL, which
# would freeze this process's own server thread: that client runs in a child process.
_LEGACY_CANCEL = """
import json, sys, threading, time
import psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
out = {}
def run():
    try:
        conn.execute(sys.argv[2])
    except Exception as exc:
        out["type"], out["sqlstate"], out["message"] = type(exc).__name__, exc.sqlstate, str(exc)
worker = threading.Thread(target=run)
started = time.monotonic()
worker.start()
time.sleep(0.5)
conn.cancel()
worker.join(10)
out["elapsed_s"] = time.monotonic() - started
out["after"] = conn.execute("SELECT 5").fetchone()[0]
print(json.dumps(out))
"""


def test_cancel_request_legacy(server: ServerThread) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LEGACY_CANCEL, server.dsn(), SLOW_SQL],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    out = json.loads(done.stdout)
    assert out["type"] == "QueryCanceled", out
    assert out["sqlstate"] == "57014"
    assert "user request" in out["message"]
    assert out["elapsed_s"] < 4  # well before the server's 5 s statement timeout
    assert out["after"] == 5


def test_cancel_request_over_tls(server: ServerThread) -> None:
    with psycopg.connect(server.dsn(sslmode="require"), autocommit=True) as conn:
        outcome: dict[str, BaseException] = {}

        def run() -> None:
            try:
                conn.execute(SLOW_SQL)
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=run)
        started = time.monotonic()
        worker.start()
        time.sleep(0.5)
        conn.cancel_safe()
        worker.join(10)
        assert not worker.is_alive()
        assert time.monotonic() - started < 4
        error = outcome.get("error")
        assert isinstance(error, pg_errors.QueryCanceled), error
        assert "user request" in str(error)
        assert conn.execute("SELECT 5").fetchone() == (5,)


def test_twenty_concurrent_clients(server: ServerThread) -> None:
    def client(index: int) -> tuple[int, int]:
        with psycopg.connect(server.dsn(application_name=f"c{index}"), autocommit=True) as conn:
            total = 0
            for _ in range(5):
                row = conn.execute(
                    "SELECT count(*) FROM spans WHERE service_name = 'checkout' "
                    "AND gen_ai_usage_input_tokens >= %s",
                    [index],
                ).fetchone()
                assert row is not None
                total += row[0]
            conn.execute("SELECT count(*) FROM spans WHERE service_name = 'background'")
            return index, total

    with ThreadPoolExecutor(20) as pool:
        results = sorted(pool.map(client, range(20)))
    assert results == [(i, 5 * (SEED_SPANS - i)) for i in range(20)]


def test_new_rows_are_visible_between_queries(server: ServerThread) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        sql = "SELECT count(*) FROM spans WHERE service_name = 'background'"
        first = conn.execute(sql).fetchone()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            later = conn.execute(sql).fetchone()
            if later and first and later[0] > first[0]:
                return
            time.sleep(0.05)
        pytest.fail("rows written by the writer never showed up")


def test_large_result_streams_in_order(server: ServerThread) -> None:
    n = 300_000
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        for binary in (False, True):
            cur = conn.cursor(binary=binary)
            cur.execute(
                "SELECT range AS i, range * 0.5 AS half, 'row ' || range AS label, "
                "TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(range) AS t FROM range(%s)",
                [n],
            )
            seen = 0
            base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
            for i, half, label, stamp in cur:
                assert (i, half, label) == (seen, seen * 0.5, f"row {seen}")
                if seen % 50_000 == 0:
                    assert stamp == base + dt.timedelta(seconds=seen)
                seen += 1
            assert seen == n


def test_row_limit_cuts_with_a_warning(make_server: Any) -> None:
    limited = make_server(row_limit=1000, batch_rows=300)
    notices: list[str] = []
    with psycopg.connect(limited.dsn(), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        rows = conn.execute("SELECT range FROM range(5000)").fetchall()
        assert [r[0] for r in rows] == list(range(1000))
        assert any("1000 rows" in n for n in notices), notices
        notices.clear()
        assert len(conn.execute("SELECT range FROM range(1000)").fetchall()) == 1000
        assert notices == []


def test_connection_limit(make_server: Any) -> None:
    small = make_server(max_connections=2)
    first = psycopg.connect(small.dsn(), autocommit=True)
    second = psycopg.connect(small.dsn(), autocommit=True)
    try:
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            psycopg.connect(small.dsn())
    finally:
        first.close()
        second.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            with psycopg.connect(small.dsn(), autocommit=True) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
