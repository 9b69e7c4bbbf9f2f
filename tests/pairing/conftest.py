"""Fixtures shared by the pairing tests: a collector whose pairing pass runs often."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CollectorProcess, start_collector


def start_pairing_collector(
    tmp_path: Path, extra_env: dict[str, str] | None = None
) -> CollectorProcess:
    """A collector process pairing every 0.2 s, with spans settled after 0.5 s."""
    return start_collector(
        tmp_path / "store.duckdb",
        tmp_path / "collector.log",
        env={
            "INFERSIGHT_PAIRING_INTERVAL_S": "0.2",
            "INFERSIGHT_PAIRING_SETTLE_S": "0.5",
            **(extra_env or {}),
        },
    )


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    cp = start_pairing_collector(tmp_path)
    yield cp
    cp.stop()
