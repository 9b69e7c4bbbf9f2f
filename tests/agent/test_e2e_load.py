"""Completeness under load: a minute of ~250 LLM calls per second, every one accounted for.

A collector process, the fast model server (`tests.agent.native_model_server` with no think
time, vLLM-style chat completions, one call in four streamed) and `infersight agent` capturing
the server's port on both ends, as configured by default. `tests.agent.load_generator` (its
own process) offers 250 calls/s for 60 s on an open schedule from 24 keep-alive `requests`
sessions, each call asking for its own model name (so every span tells which request it was
made from), and reports the response id of every call it got an answer to. Then, for each
side (CLIENT and SERVER), `tests.agent.load_checks.check_books`:

    captured (distinct calls in the store) + lost (as the agent's drop counters say) == sent

with no duplicates, no span pairing one call's request with another's response, and nothing
lost silently: when the agent's counters report no loss of any kind (ring buffer, queue,
output, sink, truncation, missing responses, parse errors, span export), every sent call must
be in the store on both sides. The figures (offered and achieved rate, captured per side, every
drop counter, the agent's CPU) are printed. `test_e2e_overload.py` does the same against an
agent made to drop.

Needs root and bcc (`.ci/ebpf-setup.sh`); skips with the reason otherwise. Slow (~1.5 min).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.capture.bcc_binding import bcc_unavailable_reason
from tests.agent.load_checks import agent_target, check_books, offer_load
from tests.conftest import CollectorProcess, start_collector

_REASON = bcc_unavailable_reason()
pytestmark = [
    pytest.mark.ebpf,
    pytest.mark.slow,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    tmp = tmp_path_factory.mktemp("agent-load")
    cp = start_collector(tmp / "store.duckdb", tmp / "collector.log")
    yield cp
    cp.stop()


@pytest.mark.timeout(200)
def test_a_minute_at_250_calls_per_s(collector: CollectorProcess, tmp_path: Path) -> None:
    with agent_target(collector, tmp_path / "agent.log") as target:
        figures = offer_load(target, collector, "load-default", 60)
        check_books(figures)
