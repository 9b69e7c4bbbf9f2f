"""Fixtures for the collector side of GPU telemetry.

The fake NVML fixtures of `tests/gpu/conftest.py` are reused by import (that fixture takes the
library already loaded in this process, if any).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CollectorProcess, start_collector
from tests.gpu.conftest import fake_nvml, fake_nvml_lib, make_sampler, use_scenario  # noqa: F401
from tests.gpu_collector.agent_export import AgentGpuExport
from tests.gpu_collector.two_gpus import NODE


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A real `infersight collector` process with a fresh store."""
    cp = start_collector(tmp_path / "store.duckdb", tmp_path / "collector.log")
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def agent(collector: CollectorProcess) -> Iterator[AgentGpuExport]:
    """The agent's GPU export path, pointed at `collector` (closed before the collector stops)."""
    export = AgentGpuExport(collector.otlp_http, NODE)
    try:
        yield export
    finally:
        export.close()


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    return tmp_path / "proc"
