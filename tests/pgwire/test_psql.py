"""psql (Debian's postgresql-client) against the endpoint, as a person would use it."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.pgwire.conftest import PASSWORD, SEED_SPANS, USER, ServerThread

PSQL = shutil.which("psql")
pytestmark = pytest.mark.skipif(
    PSQL is None, reason="psql not installed (Debian package postgresql-client)"
)


def psql(server: ServerThread, *args: str, password: str = PASSWORD, **conn: Any) -> Any:
    assert PSQL is not None
    values = {"host": "127.0.0.1", "port": server.port, "user": USER, "dbname": "traces",
              "sslmode": "require", "connect_timeout": 10}  # fmt: skip
    values.update(conn)
    dsn = " ".join(f"{k}={v}" for k, v in values.items())
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(
        [PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-d", dsn, *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_queries_in_postgresql_text_format(server: ServerThread) -> None:
    done = psql(
        server, "-A", "-t", "-F", "|", "-c",
        "SELECT count(*), min(start_time), max(gen_ai_usage_input_tokens), "
        "bool_or(gen_ai_request_stream), any_value(gen_ai_response_finish_reasons) "
        "FILTER (WHERE span_id = '0000000000000003') "
        "FROM spans WHERE service_name = 'checkout'",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{SEED_SPANS}|2026-01-02 00:00:00+00|{SEED_SPANS - 1}|t|{{length,stop}}"
    )
    done = psql(server, "-A", "-t", "-c", "SELECT 1 AS a; SELECT 'two' AS b")
    assert done.stdout.split() == ["1", "two"]


def test_meta_commands(server: ServerThread) -> None:
    tables = psql(server, "-c", r"\dt")
    assert tables.returncode == 0, tables.stderr
    assert " spans " in tables.stdout
    assert " log_records " in tables.stdout
    views = psql(server, "-c", r"\dv")
    assert " llm_calls " in views.stdout, views.stderr
    described = psql(server, "-c", r"\d spans")
    assert described.returncode == 0, described.stderr
    assert 'Table "main.spans"' in described.stdout
    lines = {line.split("|")[0].strip(): line for line in described.stdout.splitlines()}
    assert "timestamptz" in lines["start_time"]
    assert "int8" in lines["gen_ai_usage_input_tokens"]
    databases = psql(server, "-c", r"\l")
    assert databases.returncode == 0, databases.stderr
    assert "store" in databases.stdout
    assert "UTF8" in databases.stdout


def test_errors_with_sqlstate_and_refusals(server: ServerThread) -> None:
    done = psql(server, "-c", r"\set VERBOSITY verbose", "-c", "SELECT * FROM no_such_table")
    assert done.returncode == 1
    assert "ERROR:  42P01" in done.stderr
    done = psql(server, "-c", r"\set VERBOSITY verbose", "-c", "DROP TABLE spans")
    assert "ERROR:  42501" in done.stderr
    done = psql(server, "-c", r"\copy (SELECT 1) TO STDOUT")
    assert done.returncode != 0
    assert "not allowed" in done.stderr
    count = psql(server, "-A", "-t", "-c",
                 "SELECT count(*) FROM spans WHERE service_name = 'checkout'")  # fmt: skip
    assert count.stdout.strip() == str(SEED_SPANS)


def test_verify_full_tls_and_wrong_password(server: ServerThread, store: Any) -> None:
    done = psql(
        server, "-A", "-t", "-c", "SELECT 'verified'",
        host="localhost", hostaddr="127.0.0.1", sslmode="verify-full", sslrootcert=store.tls.ca,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "verified"
    done = psql(server, "-c", "SELECT 1", password="wrong")
    assert done.returncode == 2
    assert "password authentication failed" in done.stderr
