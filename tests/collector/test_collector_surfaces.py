"""A running collector serves every surface it advertises: PostgreSQL wire, analytics routes,
the Jaeger API and the DCGM-named GPU series, from one process and one store."""

from __future__ import annotations

import subprocess

import httpx
import psycopg

from tests.collector.test_durability import exporter, make_spans
from tests.conftest import CollectorProcess


def test_postgres_endpoint_answers_psql_and_psycopg(collector_process: CollectorProcess) -> None:
    spans = make_spans(7, "pg")
    assert exporter(collector_process, "http").export(spans).name == "SUCCESS"
    dsn = f"host=127.0.0.1 port={collector_process.pg_port} user=grafana dbname=infersight"
    with psycopg.connect(dsn, sslmode="disable") as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT gen_ai_request_model) FROM spans"
        ).fetchone()
        assert row == (7, 3)
    collector_process.calls_settled()
    out = subprocess.run(
        ["psql", "-X", "-A", "-t", "-c", "SELECT count(*) FROM llm_calls", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "7"


def test_analytics_and_jaeger_routes_are_mounted(collector_process: CollectorProcess) -> None:
    spans = make_spans(5, "routes")
    assert exporter(collector_process, "grpc").export(spans).name == "SUCCESS"
    api = collector_process.api
    signals = httpx.get(f"{api}/api/v1/golden-signals", params={"group_by": "model"}, timeout=30)
    assert signals.status_code == 200, signals.text
    services = httpx.get(f"{api}/jaeger/api/services", timeout=30).json()
    assert "svc-routes" in services["data"]
    bad = httpx.get(f"{api}/api/v1/golden-signals", params={"group_by": "colour"}, timeout=30)
    assert bad.status_code == 400
