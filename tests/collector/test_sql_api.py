"""`POST /api/v1/sql` on a running collector: formats, parameters, limits and the lockdown."""

from __future__ import annotations

import io
import time

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import CollectorProcess


def post(cp: CollectorProcess, body: dict[str, object], fmt: str = "json") -> httpx.Response:
    return httpx.post(f"{cp.api}/api/v1/sql", params={"format": fmt}, json=body, timeout=60)


def test_json_answer_has_columns_rows_and_types(collector_process: CollectorProcess) -> None:
    resp = post(
        collector_process,
        {
            "sql": "SELECT 42::BIGINT AS answer, 'x' AS s, "
            "TIMESTAMPTZ '2026-01-02 03:04:05+00' AS t, "
            "[1, 2] AS l, 9007199254740993::BIGINT AS big"
        },
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["columns"] == ["answer", "s", "t", "l", "big"]
    assert body["rows"] == [[42, "x", "2026-01-02T03:04:05+00:00", [1, 2], 9007199254740993]]
    assert body["truncated"] is False


def test_parameters_are_bound_not_interpolated(collector_process: CollectorProcess) -> None:
    resp = post(
        collector_process,
        {
            "sql": "SELECT ? || '!' AS v, $2::INT + 1 AS n",
            "params": ["a'); DROP TABLE spans; --", 41],
        },
    )
    assert resp.status_code == 200
    assert resp.json()["rows"] == [["a'); DROP TABLE spans; --!", 42]]
    assert collector_process.sql("SELECT count(*) FROM spans") == [[0]]


@pytest.mark.parametrize("fmt", ["csv", "arrow", "parquet"])
def test_other_formats(collector_process: CollectorProcess, fmt: str) -> None:
    resp = post(collector_process, {"sql": "SELECT range AS i, [range] AS l FROM range(5)"}, fmt)
    assert resp.status_code == 200
    if fmt == "csv":
        lines = resp.text.strip().splitlines()
        assert lines[0] == '"i","l"'
        assert lines[1:] == [f'{i},"[{i}]"' for i in range(5)]
        return
    if fmt == "arrow":
        table = pa.ipc.open_stream(resp.content).read_all()
    else:
        table = pq.read_table(io.BytesIO(resp.content))
    assert table.column("i").to_pylist() == list(range(5))
    assert table.column("l").to_pylist() == [[i] for i in range(5)]


def test_row_limit_truncates_and_says_so(collector_process: CollectorProcess) -> None:
    resp = post(collector_process, {"sql": "SELECT * FROM range(1000)", "row_limit": 10})
    body = resp.json()
    assert len(body["rows"]) == 10
    assert body["truncated"] is True
    assert resp.headers["X-Infersight-Truncated"] == "true"


def test_timeout_interrupts_a_long_query(collector_process: CollectorProcess) -> None:
    started = time.monotonic()
    resp = post(
        collector_process,
        {
            "sql": (
                "SELECT count(*) FROM range(100000000) a, range(100000) b "
                "WHERE a.range % 7 = b.range"
            ),
            "timeout_s": 0.5,
        },
    )
    assert resp.status_code == 400
    assert "timeout" in resp.json()["error"]
    assert time.monotonic() - started < 20
    assert collector_process.sql("SELECT 1") == [[1]]


@pytest.mark.parametrize(
    ("sql", "status", "needle"),
    [
        ("INSERT INTO spans (trace_id, span_id) VALUES ('a', 'b')", 403, "INSERT"),
        ("DELETE FROM spans", 403, "DELETE"),
        ("DROP TABLE spans", 403, "DROP"),
        ("CREATE TABLE x (a INT)", 403, "CREATE"),
        ("ATTACH '/tmp/other.duckdb' AS o", 403, "ATTACH"),
        ("INSTALL httpfs", 403, ""),
        ("LOAD httpfs", 403, "LOAD"),
        ("SET enable_external_access = true", 403, "SET"),
        ("COPY spans TO '/tmp/leak.csv'", 403, "COPY"),
        ("SELECT * FROM read_text('/etc/passwd')", 400, "disabled"),
        ("SELECT * FROM read_csv('http://127.0.0.1:1/x.csv')", 400, ""),
        ("SELECT 1; SELECT 2", 400, "exactly one statement"),
        ("SELEC 1", 400, "syntax error"),
        ("SELECT * FROM no_such_table", 400, "no_such_table"),
        ("", 400, "empty"),
    ],
)
def test_lockdown_and_errors(
    collector_process: CollectorProcess, sql: str, status: int, needle: str
) -> None:
    resp = post(collector_process, {"sql": sql})
    assert resp.status_code == status, resp.text
    assert needle.lower() in resp.json()["error"].lower()
    assert collector_process.sql("SELECT count(*) FROM spans") == [[0]]


def test_health_readiness_and_metrics(collector_process: CollectorProcess) -> None:
    assert httpx.get(f"{collector_process.api}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{collector_process.api}/readyz").status_code == 200
    text = httpx.get(f"{collector_process.api}/metrics").text
    assert "infersight_writer_queue_depth" in text
    assert "infersight_writer_commit_seconds_bucket" in text


def test_bad_request_body_is_a_clear_422(collector_process: CollectorProcess) -> None:
    resp = httpx.post(f"{collector_process.api}/api/v1/sql", content=b"not json", timeout=10)
    assert resp.status_code == 422
    resp = post(collector_process, {"sql": "SELECT 1", "unknown": 1})
    assert resp.status_code == 422
