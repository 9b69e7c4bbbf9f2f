"""The load side of the agent's completeness tests: offer paced load, read back the books.

Gives `agent_target` (a fast model server and `infersight agent` watching its port, as a
context manager), `offer_load` (runs `tests.agent.load_generator`, waits for the store, returns
what was sent, what each side captured and every counter the agent keeps about losses, and
prints the figures) and `check_books` (the per-side accounting both load tests assert).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.agent.e2e_support import NativeServerProcess
from tests.agent.processes import AgentProcess
from tests.conftest import REPO, CollectorProcess, free_port

RATE_PER_S = 250
THREADS = 24
# What the test demands of the load really offered: the machine must have kept the schedule.
MIN_ACHIEVED_RATE_PER_S = 200
AGENT_ENV = {"INFERSIGHT_K8S_MODE": "off", "INFERSIGHT_ENGINES_ENABLED": "false"}


@dataclass
class Target:
    """A model server and the agent watching its port."""

    server: NativeServerProcess
    agent: AgentProcess


@contextmanager
def agent_target(
    collector: CollectorProcess, log: Path, env: dict[str, str] | None = None
) -> Iterator[Target]:
    server = NativeServerProcess.start(free_port(), first_chunk_delay_ms=0, chunk_interval_ms=0)
    agent = AgentProcess.start(
        ["--collector", collector.otlp_http, "--port", str(server.port), "--no-gpu"],
        log,
        free_port(),
        env={**AGENT_ENV, **(env or {})},
    )
    try:
        agent.wait_for_metric("infersight_agent_capture_up", 1.0)
        yield Target(server, agent)
    finally:
        agent.stop()
        server.stop()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _spans(collector: CollectorProcess, prefix: str) -> dict[str, list[tuple[str, str]]]:
    """kind -> (response id, request model) of every span of the load's calls."""
    rows = collector.sql(
        "SELECT kind, gen_ai_response_id, gen_ai_request_model FROM spans "
        "WHERE starts_with(gen_ai_request_model, ?)",
        [prefix],
    )
    out: dict[str, list[tuple[str, str]]] = {"client": [], "server": []}
    for kind, rid, model in rows:
        out[kind].append((rid, model))
    return out


def _settle(collector: CollectorProcess, prefix: str, expected: int, timeout_s: float) -> None:
    """Wait until both sides hold `expected` spans, or until the counts stop moving."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, int] | None = None
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        got = _spans(collector, prefix)
        counts = (len(got["client"]), len(got["server"]))
        if min(counts) >= expected:
            time.sleep(2)  # a duplicate would show up now
            return
        if counts != last:
            last, still_since = counts, time.monotonic()
        elif time.monotonic() - still_since > 10:
            return
        time.sleep(1)


def offer_load(
    target: Target, collector: CollectorProcess, prefix: str, duration_s: int
) -> dict[str, Any]:
    """Offer the load, wait for the store, and give every figure the checks need."""
    agent_pid = target.agent.proc.pid
    cpu0_s, t0 = _cpu_s(agent_pid), time.monotonic()
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "tests.agent.load_generator"),
            *("--url", f"{target.server.origin}/v1/chat/completions"),
            *("--rate", str(RATE_PER_S), "--duration", str(duration_s)),
            *("--threads", str(THREADS), "--model", prefix, "--unique-models"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=True,
    )
    load = json.loads(proc.stdout)
    agent_cpu = (_cpu_s(agent_pid) - cpu0_s) / (time.monotonic() - t0)
    assert load["error_count"] == 0, load["errors"]
    sent = set(load["response_ids"])
    assert len(sent) == load["answered"] == load["offered"]
    _settle(collector, prefix, len(sent), timeout_s=60)
    metrics = target.agent.metrics()
    # Read after the agent's books: this request goes through the watched port too (and its
    # large answer would be counted as a truncated exchange).
    answers = {a["response_id"]: a["request_model"] for a in target.server.served()}
    assert set(answers) == sent  # the server answered exactly those

    def m(name: str) -> int:
        return int(metrics.get(name, 0))

    drops = {
        "kernel": m('infersight_agent_capture_dropped_total{stage="kernel"}'),
        "queue": m('infersight_agent_capture_dropped_total{stage="queue"}'),
        "output": m('infersight_agent_capture_dropped_total{stage="output"}'),
        "sink_error": m('infersight_agent_capture_dropped_total{stage="sink_error"}'),
        "responses_missing": m("infersight_agent_capture_responses_missing_total"),
        "exchanges_truncated": m("infersight_agent_capture_exchanges_truncated_total"),
        "parse_error": m('infersight_agent_exchanges_total{outcome="parse_error"}'),
        "span_export_failed": m('infersight_agent_spans_total{stage="export_failed"}'),
        "spans_not_exported": m('infersight_agent_spans_total{stage="emitted"}')
        - m('infersight_agent_spans_total{stage="exported"}')
        - m('infersight_agent_spans_total{stage="export_failed"}'),
    }
    calls = {r: m(f'infersight_agent_llm_calls_total{{role="{r}"}}') for r in ("client", "server")}
    spans = _spans(collector, prefix)
    print(
        f"\n{prefix}: offered {load['offered']} calls at {RATE_PER_S}/s for {duration_s} s "
        f"from {THREADS} sessions; achieved {load['rate_per_s']:.1f} calls/s (slowest second "
        f"{load['slowest_second']}, fastest {load['fastest_second']}); answered {len(sent)}; "
        f"agent CPU {agent_cpu:.2f} cores"
    )
    for kind, rows in spans.items():
        ids = {rid for rid, _ in rows}
        wrong = sum(1 for rid, model in rows if rid and answers.get(rid) != model)
        print(
            f"  {kind}: sent {len(sent)}, captured {len(ids & sent)} distinct in {len(rows)} "
            f"spans ({sum(1 for rid, _ in rows if rid is None)} without a response, {wrong} "
            f"paired wrong), missing {len(sent - ids)}; agent llm_calls {calls[kind]}"
        )
    print("  drop counters: " + ", ".join(f"{k} {v}" for k, v in drops.items()))
    assert load["rate_per_s"] >= MIN_ACHIEVED_RATE_PER_S, load["rate_per_s"]
    return {
        "sent": sent,
        "answers": answers,
        "spans": spans,
        "drops": drops,
        "calls": calls,
        "stream_losses": m("infersight_agent_capture_stream_losses_total"),
    }


def check_books(figures: dict[str, Any]) -> None:
    sent: set[str] = figures["sent"]
    answers: dict[str, str] = figures["answers"]
    drops: dict[str, int] = figures["drops"]
    lost = sum(drops.values())
    for kind, rows in figures["spans"].items():
        # a span without a response id is a call whose response was not captured
        ids = [rid for rid, _ in rows if rid is not None]
        assert len(ids) == len(set(ids)), f"{kind}: two spans for one call"
        assert set(ids) <= sent, f"{kind}: spans of calls nobody sent"
        mismatched = [(rid, model) for rid, model in rows if rid and answers[rid] != model]
        assert mismatched == [], f"{kind}: responses paired with another call's request"
        missing = len(sent - set(ids))
        if lost == 0:
            # nothing lost by the agent's own account: then nothing may be missing
            assert missing == 0, (kind, missing, drops)
            assert figures["calls"][kind] == len(sent)
        else:
            assert missing <= lost, (kind, missing, drops)
