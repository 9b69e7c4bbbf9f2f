"""End to end: real instrumentation libraries -> real OTLP exporters -> the real collector ->
DuckDB, compared with what the OpenAI-compatible test server really answered.

For every family (each in its own virtual environment, built by `envs.py`) and both OTLP
transports, `driver.py` makes the scenario calls with the real `openai` client against the
in-process test server while the family's instrumentation exports to a collector started with
`infersight collector`. The stored `spans` rows must then carry the model, provider,
operation, token counts, finish reasons and (streams) time to first chunk the server really
produced, within what each library actually sends (`tests/genai/expectations.py`).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CollectorProcess, start_collector
from tests.genai.checks import check_finish_reasons, check_identity, check_ttfc, check_usage
from tests.genai.expectations import DIALECTS, FAMILIES
from tests.instrumentation import envs
from tests.instrumentation.driver import MODES
from tests.support.openai_server import OpenAIServer

pytestmark = pytest.mark.instrumentation

HERE = Path(__file__).resolve().parent
RUNS = [
    (family, mode, transport)
    for family in sorted(MODES)
    for mode in MODES[family]
    for transport in ("otlp-http", "otlp-grpc")
]
#: Long enough that a wrong time to first chunk (e.g. the whole call, or zero) is obvious.
FIRST_CHUNK_DELAY_S = 0.25
COLUMNS = (
    "name",
    "attributes",
    "gen_ai_dialect",
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "gen_ai_response_id",
    "gen_ai_usage_input_tokens",
    "gen_ai_usage_output_tokens",
    "gen_ai_usage_cache_read_input_tokens",
    "gen_ai_response_finish_reasons",
    "gen_ai_request_stream",
    "gen_ai_response_time_to_first_chunk",
    "server_address",
    "server_port",
    "error_type",
    "start_unix_ns",
)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    tmp = tmp_path_factory.mktemp("instrumentation")
    cp = start_collector(tmp / "x.duckdb", tmp / "collector.log")
    yield cp
    cp.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(first_chunk_delay_s=FIRST_CHUNK_DELAY_S) as srv:
        yield srv


@pytest.fixture(scope="module")
def built_envs() -> set[str]:
    """Every family's environment, built or refreshed (idempotent: a no-op when current)."""
    for family in MODES:
        envs.build(family)
    return set(MODES)


def _run_driver(
    family: str,
    mode: str,
    transport: str,
    collector: CollectorProcess,
    server: OpenAIServer,
    service: str,
) -> dict[str, Any]:
    endpoint = collector.otlp_http if transport == "otlp-http" else collector.otlp_grpc
    proc = subprocess.run(
        [
            str(envs.env_python(family)),
            str(HERE / "driver.py"),
            "--family",
            family,
            "--mode",
            mode,
            "--exporter",
            transport,
            "--endpoint",
            endpoint,
            "--server-url",
            server.base_url,
            "--service-name",
            service,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=envs.ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary


def _rows(collector: CollectorProcess, service: str, expected: int) -> list[dict[str, Any]]:
    """The GenAI span rows of one service; waits briefly in case a batch is still landing."""
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM spans WHERE service_name = ? "
        "AND gen_ai_dialect IS NOT NULL ORDER BY start_unix_ns"
    )
    deadline = time.monotonic() + 15
    while True:
        rows = [dict(zip(COLUMNS, r, strict=True)) for r in collector.sql(sql, [service])]
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


@dataclass
class Run:
    """One driver run: the calls it made, the server's answers and the stored rows, in order."""

    calls: list[dict[str, Any]]
    served: list[dict[str, Any]]
    rows: list[dict[str, Any]]

    def pairs(self, family: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(scenario, ground truth, stored row) for each call that made a span. Calls run one
        after another, so span start order is call order."""
        scenarios = FAMILIES[family].scenarios
        truth = [
            (c["scenario"], s)
            for c, s in zip(self.calls, self.served, strict=True)
            if c["scenario"] in scenarios
        ]
        return [(sc, t, r) for (sc, t), r in zip(truth, self.rows, strict=True)]


@pytest.fixture(scope="module")
def runs(
    collector: CollectorProcess, server: OpenAIServer, built_envs: set[str]
) -> Callable[[str, str, str], Run]:
    """Runs the driver once per (family, mode, transport), on first use."""
    done: dict[tuple[str, str, str], Run] = {}

    def get(family: str, mode: str, transport: str) -> Run:
        key = (family, mode, transport)
        if key not in done:
            assert family in built_envs
            service = f"it-{family}-{mode}-{transport}"
            before = len(server.served())
            summary = _run_driver(family, mode, transport, collector, server, service)
            served = [s.to_json() for s in server.served()[before:]]
            calls = summary["calls"]
            # One request per scenario: the client does not retry.
            assert len(served) == len(calls)
            for call, truth in zip(calls, served, strict=True):
                if call["response_id"] is not None:
                    assert truth["response_id"] == call["response_id"]
            expected = sum(c["scenario"] in FAMILIES[family].scenarios for c in calls)
            rows = _rows(collector, service, expected)
            assert len(rows) == expected, [r["name"] for r in rows]
            done[key] = Run(calls, served, rows)
        return done[key]

    return get


def _context(family: str, mode: str, transport: str, scenario: str, row: dict[str, Any]) -> str:
    return f"{family}/{mode}/{transport}/{scenario}: row={row}"


@pytest.mark.parametrize(
    ("family", "mode", "transport"), RUNS, ids=[f"{f}-{m}-{t}" for f, m, t in RUNS]
)
def test_stored_rows_equal_ground_truth(
    family: str,
    mode: str,
    transport: str,
    runs: Callable[[str, str, str], Run],
) -> None:
    for scenario, truth, row in runs(family, mode, transport).pairs(family):
        raw = json.loads(row["attributes"])
        try:
            assert row["gen_ai_dialect"] == DIALECTS[family]
            check_identity(family, scenario, truth, row)
            check_usage(family, scenario, truth, row, raw)
            check_finish_reasons(family, scenario, truth, row)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n{_context(family, mode, transport, scenario, row)}"
            ) from exc


#: Families whose time to first chunk is the time of a span event.


@pytest.mark.parametrize(
    ("family", "mode", "transport"), RUNS, ids=[f"{f}-{m}-{t}" for f, m, t in RUNS]
)
def test_time_to_first_chunk(
    family: str,
    mode: str,
    transport: str,
    runs: Callable[[str, str, str], Run],
) -> None:
    for scenario, truth, row in runs(family, mode, transport).pairs(family):
        try:
            check_ttfc(family, truth, row)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n{_context(family, mode, transport, scenario, row)}"
            ) from exc
