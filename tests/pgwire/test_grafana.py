"""Grafana's PostgreSQL data source, reproduced: its catalog probes and macro-expanded queries.

The Go client (tests/pgwire/go/grafana_client) uses the same library family Grafana's data
source is built on (pgconn Exec on the simple protocol, values decoded by type OID with pgtype),
built offline from Debian's golang-github-jackc-* packages. The catalog probes also run through
psycopg so they are covered where Go is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.pgwire.conftest import SEED_SPANS, TYPE_SQL, ServerThread

REPO = Path(__file__).resolve().parents[2]
GO_SOURCE = REPO / "tests" / "pgwire" / "go" / "grafana_client"
GOCODE = Path("/usr/share/gocode")

# Grafana's front-end probes (postgresMetaQuery.ts), verbatim in shape.
_SEARCH_PATH_SCHEMAS = """
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"""
VERSION_SQL = "SELECT current_setting('server_version_num')::int/100 as version"
TIMESCALE_SQL = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
TABLES_SQL = f"""SELECT
    CASE WHEN {_SEARCH_PATH_SCHEMAS}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {_SEARCH_PATH_SCHEMAS} THEN 0 ELSE 1 END, 1"""


def columns_sql(table: str) -> str:
    quoted = "'" + table.replace("'", "''") + "'"
    return f"""SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident({quoted}),1) = 2
        THEN quote_ident(table_schema) = (parse_ident({quoted}))[1]
          AND quote_ident(table_name) = (parse_ident({quoted}))[2]
        ELSE quote_ident(table_name) = {quoted}
          AND {_SEARCH_PATH_SCHEMAS}
      END"""


# Macros as Grafana expands them for a 10-minute range starting at the seed's first span.
TIME_FILTER = "start_time BETWEEN '2026-01-02T00:00:00Z' AND '2026-01-02T00:09:59.999999999Z'"
TIME_GROUP_ALIAS_1M = 'floor(extract(epoch from start_time)/60)*60 AS "time"'
TIMESCALE_GROUP_ALIAS_1M = "time_bucket('60.000s',start_time) AS \"time\""
SERIES_SQL = (
    f"SELECT {TIME_GROUP_ALIAS_1M}, gen_ai_request_model AS metric, count(*) AS calls "
    f"FROM spans WHERE {TIME_FILTER} AND service_name = 'checkout' GROUP BY 1, 2 ORDER BY 1"
)
TIMESCALE_SQL_SERIES = (
    f"SELECT {TIMESCALE_GROUP_ALIAS_1M}, sum(gen_ai_usage_input_tokens) AS tokens "
    f"FROM spans WHERE {TIME_FILTER} AND service_name = 'checkout' GROUP BY 1 ORDER BY 1"
)
P95_SQL = (
    'SELECT floor(extract(epoch from start_time)/300)*300 AS "time", '
    "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_s) AS p95 "
    f"FROM llm_calls WHERE {TIME_FILTER} AND service_name = 'checkout' GROUP BY 1 ORDER BY 1"
)
TABLE_PANEL_SQL = (
    'SELECT start_time AS "time", trace_id, gen_ai_request_model, gen_ai_usage_input_tokens, '
    "duration_s, gen_ai_response_finish_reasons, attributes, gen_ai_request_stream, status_code "
    f"FROM spans WHERE {TIME_FILTER} AND service_name = 'checkout' ORDER BY start_time LIMIT 3"
)


def test_catalog_probes_with_psycopg(server: ServerThread) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.pgconn.exec_(b"-- ping").status == psycopg.pq.ExecStatus.EMPTY_QUERY
        version = conn.execute(VERSION_SQL).fetchone()
        assert version is not None
        assert int(version[0]) == 1500
        assert conn.execute(TIMESCALE_SQL).fetchall() == []
        tables = [r[0] for r in conn.execute(TABLES_SQL).fetchall()]
        assert {"spans", "llm_calls", "log_records", "metric_points"} <= set(tables)
        # Tables on the search path come first and unqualified; shims come last, qualified.
        first_qualified = next(i for i, t in enumerate(tables) if "." in t)
        assert all("." not in t for t in tables[:first_qualified])
        cols: dict[str, str] = dict(conn.execute(columns_sql("spans")).fetchall())
        assert cols["start_time"] == "TIMESTAMP WITH TIME ZONE"
        assert cols["duration_s"] == "DOUBLE"
        assert dict(conn.execute(columns_sql("main.spans")).fetchall()) == cols
        view_cols: dict[str, str] = dict(conn.execute(columns_sql("llm_calls")).fetchall())
        assert view_cols["ttft_s"] == "DOUBLE"


def _go_available() -> str | None:
    if shutil.which("go") is None:
        return "go not installed (Debian package golang-go)"
    if not (GOCODE / "src" / "github.com" / "jackc" / "pgconn").is_dir():
        return "pgx not installed (Debian package golang-github-jackc-pgx-v4-dev)"
    return None


@pytest.fixture(scope="module")
def grafana_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _go_available()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("go")
    binary = folder / "grafana_client"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{folder / 'gopath'}:{GOCODE}",
        "GOCACHE": str(folder / "cache"),
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    done = subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=GO_SOURCE, env=env, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return binary


def run_go(binary: Path, dsn: str, queries: list[dict[str, Any]], tmp_path: Path) -> list[Any]:
    spec = tmp_path / "queries.json"
    spec.write_text(json.dumps(queries))
    done = subprocess.run(
        [str(binary), dsn, str(spec)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return [json.loads(line) for line in done.stdout.splitlines()]


def _rows(answer: dict[str, Any], index: int = 0) -> list[list[Any]]:
    assert "error" not in answer, answer
    rows: list[list[Any]] = answer["results"][index]["rows"]
    return rows


def test_grafana_pgx_client(
    server: ServerThread, grafana_client: Path, tmp_path: Path, store: Any
) -> None:
    dsn = (
        f"host=localhost hostaddr=127.0.0.1 port={server.port} user=grafana "
        f"password=s3cret-pass dbname=traces sslmode=verify-full sslrootcert={store.tls.ca}"
    )
    queries: list[dict[str, Any]] = [
        {"sql": "-- ping"},
        {"sql": VERSION_SQL},
        {"sql": TIMESCALE_SQL},
        {"sql": TABLES_SQL},
        {"sql": columns_sql("spans")},
        {"sql": SERIES_SQL},
        {"sql": TIMESCALE_SQL_SERIES},
        {"sql": P95_SQL},
        {"sql": TABLE_PANEL_SQL},
        {"sql": TYPE_SQL},
        {"sql": "SELECT * FROM no_such_table"},
        {"sql": "COPY spans TO '/tmp/grafana-copy.csv'"},
        {"sql": "SELECT 1 AS a; SELECT 'b' AS b"},
        {
            "sql": "SELECT count(*) AS n, avg(duration_s) AS avg_s, min(start_time) AS first, "
            "bool_or(gen_ai_request_stream) AS streamed, max(service_name) AS service "
            "FROM spans WHERE service_name = $1 AND start_time >= $2",
            "params": ["checkout", "2026-01-02T01:00:00Z"],
            "param_oids": [25, 1184],
            "result_formats": [1],
        },
    ]
    answers = run_go(grafana_client, dsn, queries, tmp_path)
    assert len(answers) == len(queries)
    ping, version, timescale, tables, columns, series, bucketed, p95, panel, types = answers[:10]
    missing, copy, multi, params = answers[10:]

    assert ping == {}  # EmptyQueryResponse: the health check passes
    assert _rows(version) == [[1500]]
    assert _rows(timescale) == []
    names = [r[0] for r in _rows(tables)]
    assert "spans" in names
    assert "llm_calls" in names
    cols = {r[0]: r[1] for r in _rows(columns)}
    assert cols["start_time"] == "TIMESTAMP WITH TIME ZONE"

    series_rows = _rows(series)
    assert series["results"][0]["columns"][0] == {"name": "time", "oid": 701}
    assert len(series_rows) == 10  # one span a minute for 10 minutes, one model each
    assert series_rows[0] == [1767312000, "gpt-4o", 1]  # 2026-01-02T00:00:00Z
    assert series_rows[1] == [1767312060, "llama-3", 1]

    assert bucketed["results"][0]["columns"][0] == {"name": "time", "oid": 1184}
    assert _rows(bucketed)[:2] == [["2026-01-02T00:00:00Z", 0], ["2026-01-02T00:01:00Z", 1]]

    p95_rows = _rows(p95)
    assert [r[0] for r in p95_rows] == [1767312000, 1767312300]
    assert p95_rows[0][1] == pytest.approx(0.48)  # percentile of 0.1 .. 0.5

    panel_rows = _rows(panel)
    assert [c["oid"] for c in panel["results"][0]["columns"]] == [
        1184, 25, 25, 20, 701, 1009, 114, 16, 25,
    ]  # fmt: skip
    assert panel_rows[0] == [
        "2026-01-02T00:00:00Z", "0" * 32, "gpt-4o", 0, 0.1, ["length", "stop"], {"i": 0},
        True, "error",
    ]  # fmt: skip

    row = dict(zip([c["name"] for c in types["results"][0]["columns"]], _rows(types)[0],
                   strict=True))  # fmt: skip
    assert not any(isinstance(v, str) and "DECODE ERROR" in v for v in row.values()), row
    assert row["i2"] == -7
    assert row["i4"] == 123456
    assert row["i8"] == 9007199254740993
    assert row["f4"] == 1.5
    assert row["f8"] == 0.1
    assert row["num"] == 12345.678
    assert row["b"] is True
    assert row["txt"] == 'héllo, "world"'
    assert row["bin"] == "deadbeef"
    assert row["d"] == "2026-01-02"
    assert row["ts"] == "2026-01-02T03:04:05.123456"
    assert row["tstz"] == "2026-01-02T03:04:05.123456Z"
    assert row["iv"] == {"months": 0, "days": 3, "microseconds": 14_706_500_000}
    assert row["js"] == {"a": [1, 2], "b": None}
    assert row["st"] == {"k": "v", "n": 1}
    assert row["u"] == "6f1c3c1e-2b0a-4c55-9a8e-0d5c9b1a2f3e"
    assert row["txt_arr"] == ["a", "b c", None, '"q"']
    assert row["i8_arr"] == [1, None, 3]
    assert row["f8_arr"] == [1.5, 2.25]
    assert row["i4_arr"] == [1, 2]
    assert row["nul"] is None

    assert missing["error"]["code"] == "42P01"
    assert copy["error"]["code"] == "42501"
    assert [_rows(multi, 0), _rows(multi, 1)] == [[[1]], [["b"]]]
    assert [c["oid"] for c in params["results"][0]["columns"]] == [20, 701, 1184, 16, 25]
    after_first_hour = SEED_SPANS - 60
    avg = sum(0.1 * (i + 1) for i in range(60, SEED_SPANS)) / after_first_hour
    assert _rows(params)[0][0] == after_first_hour
    assert _rows(params)[0][1] == pytest.approx(avg)
    assert _rows(params)[0][2:] == ["2026-01-02T01:00:00Z", True, "checkout"]
