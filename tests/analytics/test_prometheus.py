"""GenAI metrics on /metrics, scraped by a real Prometheus and read back through its HTTP API."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.analytics.cost import PRICES_ENV, load_prices
from collector.api.app import build_api_app
from collector.prom.genai import GenAIStoreCollector
from store.database import Database
from tests.analytics import synth
from tests.analytics.conftest import ServedApp, make_state
from tests.analytics.test_prompts import expected_cost
from tests.conftest import free_port

PROMETHEUS = "/usr/bin/prometheus"


def expected(calls: list[synth.Call]) -> dict[str, dict[str, float]]:
    """Per model: the figures Prometheus must report."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in calls:
        m = out[c.model]
        m["requests"] += 1
        m["errors"] += c.errored
        m["duration_count"] += 1
        m["duration_sum"] += c.duration_s
        m["duration_le_1.28"] += c.duration_s <= 1.28
        m["input_sum"] += c.input_tokens or 0
        m["input_count"] += c.input_tokens is not None
        m["output_sum"] += c.output_tokens or 0
        m["output_count"] += c.output_tokens is not None
        m["ttfc_count"] += c.ttft_s is not None
        m["cost"] += expected_cost(c) or 0.0
    return out


#: series that exist only when the model had such values (no token counts, no series)
PRESENT_IF = {
    "input_sum": "input_count",
    "input_count": "input_count",
    "output_sum": "output_count",
    "ttfc_count": "ttfc_count",
}


def want_for(figures: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    gate = PRESENT_IF.get(name)
    return {m: v[name] for m, v in figures.items() if gate is None or v[gate] > 0}


QUERIES = {
    "requests": "sum by (gen_ai_request_model) (infersight_gen_ai_requests_total)",
    "errors": "sum by (gen_ai_request_model) (infersight_gen_ai_errors_total)",
    "duration_count": "sum by (gen_ai_request_model) "
    "(gen_ai_client_operation_duration_seconds_count)",
    "duration_sum": "sum by (gen_ai_request_model) (gen_ai_client_operation_duration_seconds_sum)",
    "duration_le_1.28": "sum by (gen_ai_request_model) "
    '(gen_ai_client_operation_duration_seconds_bucket{le="1.28"})',
    "input_sum": "sum by (gen_ai_request_model) "
    '(gen_ai_client_token_usage_sum{gen_ai_token_type="input"})',
    "input_count": "sum by (gen_ai_request_model) "
    '(gen_ai_client_token_usage_count{gen_ai_token_type="input"})',
    "output_sum": "sum by (gen_ai_request_model) "
    '(gen_ai_client_token_usage_sum{gen_ai_token_type="output"})',
    "ttfc_count": "sum by (gen_ai_request_model) "
    "(gen_ai_client_operation_time_to_first_chunk_seconds_count)",
    "cost": "sum by (gen_ai_request_model) (infersight_gen_ai_cost_usd_total)",
}


class Prometheus:
    """Debian's Prometheus scraping one target every second, on loopback, data in tmp."""

    def __init__(self, tmp: Path, target_port: int) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: infersight\n"
            "    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def query(self, expr: str) -> dict[str, float]:
        resp = httpx.get(
            f"http://127.0.0.1:{self.port}/api/v1/query", params={"query": expr}, timeout=10
        )
        resp.raise_for_status()
        body = resp.json()
        assert body["status"] == "success", body
        return {
            r["metric"].get("gen_ai_request_model", ""): float(r["value"][1])
            for r in body["data"]["result"]
        }

    def wait_for(self, expr: str, want: dict[str, float], timeout_s: float = 45.0) -> None:
        deadline = time.monotonic() + timeout_s
        got: dict[str, float] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
            try:
                got = self.query(expr)
            except httpx.HTTPError:
                got = {}
            if set(got) == set(want) and all(
                got[k] == pytest.approx(v, rel=1e-9, abs=1e-12) for k, v in want.items()
            ):
                return
            time.sleep(0.5)
        raise AssertionError(f"{expr}: Prometheus says {got}, expected {want}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    monkeypatch.delenv(PRICES_ENV, raising=False)
    db = Database(tmp_path / "prom.duckdb")
    load_prices(db)
    db.lock_down()
    yield db
    db.close()


@pytest.mark.slow
def test_real_prometheus_reads_the_genai_metrics(store: Database, tmp_path: Path) -> None:
    if not shutil.which(PROMETHEUS):
        pytest.skip("Debian package 'prometheus' is not installed (/usr/bin/prometheus)")
    calls = synth.make_calls(seed=21, n=150)
    first, second = calls[:100], calls[100:]
    synth.seed(store, first, received=datetime.now(UTC))
    state = make_state(store)
    collector = GenAIStoreCollector(store)
    state.registry.register(collector)
    with ServedApp(build_api_app(state)) as served:
        prom = Prometheus(tmp_path, served.port)
        try:
            want = expected(first)
            for name, expr in QUERIES.items():
                prom.wait_for(expr, want_for(want, name))
            # more calls arrive: the next scrapes add them, each exactly once
            synth.seed(store, second, received=datetime.now(UTC))
            want = expected(calls)
            for name, expr in QUERIES.items():
                prom.wait_for(expr, want_for(want, name))
            assert collector.updates >= 2
            assert collector.failures == 0
            # p95 from the histogram lies within the bucket that holds the true p95
            p95 = prom.query(
                "histogram_quantile(0.95, sum by (le, gen_ai_request_model) "
                "(gen_ai_client_operation_duration_seconds_bucket))"
            )
            bounds = [
                0.0,
                0.01,
                0.02,
                0.04,
                0.08,
                0.16,
                0.32,
                0.64,
                1.28,
                2.56,
                5.12,
                10.24,
                20.48,
                40.96,
                81.92,
            ]
            for model, value in p95.items():
                true = synth.percentile([c.duration_s for c in calls if c.model == model], 0.95)
                assert true is not None
                hi = next(b for b in bounds if b >= true)
                lo = bounds[bounds.index(hi) - 1]
                assert lo - 1e-9 <= value <= hi + 1e-9, (model, value, true)
        finally:
            prom.stop()


def _scrape(collector: GenAIStoreCollector) -> dict[str, float]:
    """Requests per model from one exposition."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    registry.unregister(collector)
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        if family.name == "infersight_gen_ai_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    totals[sample.labels["gen_ai_request_model"]] += sample.value
    return dict(totals)


def _counts(calls: list[synth.Call]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for c in calls:
        out[c.model] += 1
    return dict(out)


def test_incremental_updates_count_each_call_once(store: Database) -> None:
    calls = synth.make_calls(seed=5, n=90)
    now = datetime.now(UTC)
    synth.seed(store, calls[:30], received=now - timedelta(hours=2))
    collector = GenAIStoreCollector(store, overlap_s=60.0, min_interval_s=0.0)
    assert _scrape(collector) == _counts(calls[:30])
    # committed late but received inside the overlap: counted once, on the next scrape
    synth.seed(store, calls[30:60], received=datetime.now(UTC) - timedelta(seconds=20))
    assert _scrape(collector) == _counts(calls[:60])
    assert _scrape(collector) == _counts(calls[:60])
    # received before the overlap and committed only now: missed, as documented
    synth.seed(store, calls[60:70], received=datetime.now(UTC) - timedelta(seconds=600))
    synth.seed(store, calls[70:], received=datetime.now(UTC))
    assert _scrape(collector) == _counts(calls[:60] + calls[70:])


def test_exposition_names_and_labels(store: Database) -> None:
    synth.seed(store, synth.make_calls(seed=2, n=20), received=datetime.now(UTC))
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(GenAIStoreCollector(store))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert families["gen_ai_client_operation_duration_seconds"].type == "histogram"
    assert families["gen_ai_client_token_usage"].type == "histogram"
    assert families["gen_ai_client_operation_time_to_first_chunk_seconds"].type == "histogram"
    assert families["infersight_gen_ai_requests"].type == "counter"
    sample: Any = next(
        s for s in families["gen_ai_client_token_usage"].samples if s.name.endswith("_bucket")
    )
    assert set(sample.labels) == {
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "service_name",
        "k8s_namespace_name",
        "gen_ai_token_type",
        "le",
    }
    buckets = [
        s
        for s in families["gen_ai_client_operation_duration_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert {s.labels["le"] for s in buckets} >= {"0.01", "81.92", "+Inf"}
