"""Completeness of an overloaded agent: what it cannot keep, it counts, and what it keeps is right.

The load of `test_e2e_load.py` (250 calls/s, vLLM-style chat completions, each call its own
model name) for 15 s, against an agent made too small to keep up, in two ways:

- `queue`: 8 events between the capture and processing threads (events dropped in user space);
- `ring buffer`: an 8 KiB kernel ring buffer (records dropped in the kernel).

The drop counter of that stage must move, and the books must still balance per side: no call
twice, no span pairing one call's request with another call's response (a lost record inside a
keep-alive connection must not shift the pairing of everything after it), and no more calls
missing than the agent reports lost. The figures are printed.

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
    pytest.mark.timeout(120),
]

SQUEEZES = {
    "queue": ({"INFERSIGHT_CAPTURE_QUEUE_SIZE": "8"}, "queue"),
    "ring buffer": (
        {
            "INFERSIGHT_CAPTURE_RING_BUFFER_BYTES": "8192",
            "INFERSIGHT_CAPTURE_MAX_PAYLOAD_BYTES": "2048",
        },
        "kernel",
    ),
}


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    tmp = tmp_path_factory.mktemp("agent-overload")
    cp = start_collector(tmp / "store.duckdb", tmp / "collector.log")
    yield cp
    cp.stop()


@pytest.mark.parametrize("squeeze", list(SQUEEZES))
def test_an_overloaded_agent_counts_what_it_loses_and_mispairs_nothing(
    collector: CollectorProcess, tmp_path: Path, squeeze: str
) -> None:
    env, stage = SQUEEZES[squeeze]
    prefix = f"overload-{stage}"
    with agent_target(collector, tmp_path / "agent.log", env) as target:
        figures = offer_load(target, collector, prefix, 15)
    assert figures["drops"][stage] > 0, f"the {squeeze} never overflowed"
    assert figures["stream_losses"] > 0  # the losses reached the streams' pairing, and /metrics
    check_books(figures)
