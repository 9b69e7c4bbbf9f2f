"""`infersight demo` sends real GenAI telemetry that lands as calls, content and metrics."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.conftest import REPO, CollectorProcess


def test_demo_workload_lands_in_the_store(collector_process: CollectorProcess) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector.cli",
            "demo",
            "--collector",
            collector_process.otlp_http,
            "--calls",
            "34",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "sent 34 LLM calls (2 failed on purpose)" in out.stderr
    deadline = time.monotonic() + 10
    rows: list[list[object]] = []
    while time.monotonic() < deadline:
        rows = collector_process.sql(
            "SELECT count(*), count(*) FILTER (WHERE status = 'error'),"
            " count(DISTINCT model), count(ttft_s), min(input_tokens) FROM llm_calls"
        )
        if rows[0][0] == 34:
            break
        time.sleep(0.2)
    calls, errors, models, with_ttft, min_input = rows[0]
    assert (calls, errors, models) == (34, 2, 3)
    assert with_ttft == 16  # the even calls stream; the two failures carry no timing
    assert isinstance(min_input, int)
    assert min_input > 0
    content = collector_process.sql("SELECT count(*) FROM genai_content")[0][0]
    assert content == 32
    metrics = collector_process.sql("SELECT DISTINCT metric_name FROM metric_points ORDER BY 1")
    assert [m[0] for m in metrics] == [
        "gen_ai.client.operation.duration",
        "gen_ai.client.token.usage",
    ]
