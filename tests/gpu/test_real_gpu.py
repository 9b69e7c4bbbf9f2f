"""The sampler against a real NVIDIA GPU and driver (marker `gpu`).

Runs in a fresh interpreter so the fake library loaded by the other tests cannot stand in for
the real one. Skips, with NVML's own reason, where `nvmlInit` fails on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.gpu

SCRIPT = textwrap.dedent("""
    import json, sys, time
    from dataclasses import asdict
    from agent.gpu.nvml_sampler import GpuSamplerConfig, NvmlSampler
    from agent.gpu.types import GpuSample, GpuProcessSample, GpuEvent
    sampler = NvmlSampler(GpuSamplerConfig(period_s=0.1, process_period_s=0.5))
    if not sampler.open():
        print(json.dumps({"available": False, "reason": sampler.unavailable_reason}))
        sys.exit(0)
    start = time.process_time()
    sampler.start()
    time.sleep(2.0)
    sampler.stop()
    sampler.stop()
    cpu_s = time.process_time() - start
    records = sampler.drain()
    print(json.dumps({
        "available": True,
        "driver": sampler.driver_version,
        "devices": [d.uuid for d in sampler.devices],
        "ticks": sampler.ticks,
        "cpu_s": cpu_s,
        "samples": [asdict(r) for r in records if isinstance(r, GpuSample)],
        "processes": [asdict(r) for r in records if isinstance(r, GpuProcessSample)],
        "events": [asdict(r) for r in records if isinstance(r, GpuEvent)],
    }))
""")


@pytest.fixture(scope="module")
def real_run() -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "FAKE_NVML_SCENARIO")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["available"]:
        pytest.skip(f"no usable NVIDIA GPU here: {result['reason']}")
    return result


def test_real_gpus_are_sampled(real_run: dict[str, Any]) -> None:
    assert real_run["devices"], "NVML initialised but listed no device"
    assert all(u.startswith(("GPU-", "MIG-")) for u in real_run["devices"])
    assert 10 <= real_run["ticks"] <= 30
    by_uuid: dict[str, list[dict[str, Any]]] = {}
    for s in real_run["samples"]:
        by_uuid.setdefault(s["gpu_uuid"], []).append(s)
    assert set(by_uuid) == set(real_run["devices"])
    for uuid, series in by_uuid.items():
        first, last = series[0], series[-1]
        assert first["gpu_name"], uuid
        assert (first["mem_total_bytes"] or 0) > 0, uuid
        assert 0 <= first["mem_used_bytes"] <= first["mem_total_bytes"]
        if first["is_mig_device"]:
            continue
        assert first["power_w"] is None or 0 < first["power_w"] < 2000
        assert first["temperature_c"] is None or 0 < first["temperature_c"] < 120
        assert first["gpu_util_pct"] is None or 0 <= first["gpu_util_pct"] <= 100
        if first["energy_j"] is not None:
            # the counter only goes up, and at most by the power limit over the run
            assert last["energy_j"] >= first["energy_j"]
            elapsed_s = (last["timestamp_unix_ns"] - first["timestamp_unix_ns"]) / 1e9
            limit_w = first["power_limit_w"] or 2000
            assert last["energy_j"] - first["energy_j"] <= limit_w * (elapsed_s + 0.5)


def test_real_sampling_is_cheap(real_run: dict[str, Any]) -> None:
    # 2 s at 100 ms: even at this period the sampler must stay far below one core
    assert real_run["cpu_s"] < 1.0, real_run["cpu_s"]
