"""The two-GPU scenario the GPU collector tests share, and the steps that take it through the
agent's real sampling and export path.

GPU A (an H100) runs two processes of one pod; GPU B (an A100 that reports no power or energy)
is shared by two pods. Sampling happens at scenario times 1 s and 3 s; `EXPECTED_*` is what each
step must read, derived from the scenario by hand (energy: 5000 J at t=0 plus the integral of the
power curve).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.gpu.attribution import GpuAttributor, PodRef
from agent.gpu.nvml_sampler import NvmlSampler
from agent.gpu.types import GpuRecord
from tests.conftest import CollectorProcess
from tests.gpu.fake_nvml.build import FakeNvml
from tests.gpu.fake_nvml.scenario import FakeDevice, FakeProc, Scenario
from tests.gpu_collector.agent_export import AgentGpuExport

GIB = 1 << 30
NODE = "gpu-node-3"
UUID_A = "GPU-a1a1a1a1-0000-4000-8000-00000000000a"
UUID_B = "GPU-b2b2b2b2-0000-4000-8000-00000000000b"
CID_LLAMA = "c" * 63 + "1"
CID_EMBED_1 = "d" * 63 + "2"
CID_EMBED_2 = "e" * 63 + "3"
UID_LLAMA = "0a0a0a0a-1111-2222-3333-444444444444"

PODS = {
    CID_LLAMA: PodRef("inference", "vllm-llama-0", "vllm"),
    CID_EMBED_1: PodRef("batch", "embedder-a", "embed"),
    CID_EMBED_2: PodRef("batch", "embedder-b", "embed"),
}
PID_CONTAINER = {4101: CID_LLAMA, 4102: CID_LLAMA, 4201: CID_EMBED_1, 4202: CID_EMBED_2}


def scenario() -> Scenario:
    a = FakeDevice(
        UUID_A,
        "NVIDIA H100 80GB HBM3",
        memory_total_bytes=80 * GIB,
        power_limit_mw=700_000,
        energy_start_mj=5_000_000,
    )
    (
        a.at(0, "gpu_util", 37)
        .at(0, "mem_util", 12)
        .at(0, "mem_used", 20 * GIB)
        .at(0, "power_mw", 250_500)
        .at(0, "temp_c", 61)
        .at(0, "sm_clock", 1755)
        .at(0, "mem_clock", 2619)
        .at(0, "clock_reasons", 0x24)
        .at(0, "pcie_tx_kbs", 1500)
        .at(0, "pcie_rx_kbs", 3000)
        .at(0, "ecc_corrected", 3)
        .at(0, "ecc_uncorrected", 1)
    )
    (
        a.at(2, "gpu_util", 95)
        .at(2, "mem_used", 30 * GIB)
        .at(2, "power_mw", 650_000)
        .at(2, "temp_c", 70)
        .at(2, "sm_clock", 1980)
    )
    a.procs = [
        FakeProc(4101, mem_bytes=12 * GIB, sm_pct=60, mem_pct=30),
        FakeProc(4102, mem_bytes=6 * GIB, sm_pct=25, mem_pct=5),
    ]
    # an A100 whose board reports no power or energy: those columns must be NULL, not 0
    b = FakeDevice(
        UUID_B,
        "NVIDIA A100-SXM4-40GB",
        memory_total_bytes=40 * GIB,
        unsupported=["power", "power_limit", "energy"],
    )
    (
        b.at(0, "gpu_util", 5)
        .at(0, "mem_util", 1)
        .at(0, "mem_used", 2 * GIB)
        .at(0, "temp_c", 40)
        .at(0, "sm_clock", 1410)
        .at(0, "mem_clock", 1215)
    )
    b.procs = [
        FakeProc(4201, mem_bytes=GIB, sm_pct=3, mem_pct=1),
        FakeProc(4202, mem_bytes=GIB // 2, sm_pct=2, mem_pct=1),
    ]
    return Scenario([a, b])


EXPECTED_A = {
    1.0: {
        "gpu_util_pct": 37.0,
        "mem_util_pct": 12.0,
        "mem_used_bytes": 20 * GIB,
        "mem_free_bytes": 60 * GIB,
        "mem_total_bytes": 80 * GIB,
        "mem_used_ratio": 0.25,
        "power_w": 250.5,
        "power_limit_w": 700.0,
        "energy_j": 5000.0 + 250.5,
        "temperature_c": 61.0,
        "sm_clock_mhz": 1755,
        "mem_clock_mhz": 2619,
        "clock_event_reasons": 0x24,
        "pcie_tx_bytes_per_s": 1500 * 1024,
        "pcie_rx_bytes_per_s": 3000 * 1024,
        "ecc_corrected_total": 3,
        "ecc_uncorrected_total": 1,
    },
    3.0: {
        "gpu_util_pct": 95.0,
        "mem_util_pct": 12.0,
        "mem_used_bytes": 30 * GIB,
        "mem_free_bytes": 50 * GIB,
        "mem_total_bytes": 80 * GIB,
        "mem_used_ratio": 0.375,
        "power_w": 650.0,
        "power_limit_w": 700.0,
        "energy_j": 5000.0 + 250.5 * 2 + 650.0,
        "temperature_c": 70.0,
        "sm_clock_mhz": 1980,
        "mem_clock_mhz": 2619,
        "clock_event_reasons": 0x24,
        "pcie_tx_bytes_per_s": 1500 * 1024,
        "pcie_rx_bytes_per_s": 3000 * 1024,
        "ecc_corrected_total": 3,
        "ecc_uncorrected_total": 1,
    },
}
EXPECTED_B = {
    "gpu_util_pct": 5.0,
    "mem_util_pct": 1.0,
    "mem_used_bytes": 2 * GIB,
    "mem_free_bytes": 38 * GIB,
    "mem_total_bytes": 40 * GIB,
    "mem_used_ratio": 0.05,
    "power_w": None,
    "power_limit_w": None,
    "energy_j": None,
    "temperature_c": 40.0,
    "sm_clock_mhz": 1410,
    "mem_clock_mhz": 1215,
}
EXPECTED_PROCS = {
    4101: (UUID_A, 12 * GIB, 60.0, "inference", "vllm-llama-0", "vllm"),
    4102: (UUID_A, 6 * GIB, 25.0, "inference", "vllm-llama-0", "vllm"),
    4201: (UUID_B, GIB, 3.0, "batch", "embedder-a", "embed"),
    4202: (UUID_B, GIB // 2, 2.0, "batch", "embedder-b", "embed"),
}


def write_proc_tree(root: Path) -> Path:
    """A /proc tree whose cgroup files put each scenario pid in its container."""
    for pid, cid in PID_CONTAINER.items():
        (root / str(pid)).mkdir(parents=True)
        pod_slice = (
            f"kubepods-pod{UID_LLAMA.replace('-', '_')}.slice"
            if cid == CID_LLAMA
            else "kubepods-besteffort.slice"
        )
        (root / str(pid) / "cgroup").write_text(
            f"0::/kubepods.slice/{pod_slice}/cri-containerd-{cid}.scope\n"
        )
    return root


def query(cp: CollectorProcess, sql: str) -> list[dict[str, Any]]:
    """Rows of a query through the collector's SQL API, as dicts."""
    return [json.loads(r[0]) for r in cp.sql(f"SELECT to_json(q) FROM ({sql}) q")]


UseScenario = Callable[[Scenario], Path]
MakeSampler = Callable[..., NvmlSampler]


def run_steps(
    use_scenario: UseScenario,
    make_sampler: MakeSampler,
    fake_nvml: FakeNvml,
    proc_root: Path,
    agent: AgentGpuExport,
) -> list[list[GpuRecord]]:
    """Sample the scenario at each step and export each step as one agent collection."""
    use_scenario(scenario())
    root = write_proc_tree(proc_root)
    sampler = make_sampler(attributor=GpuAttributor(PODS.get, proc_root=root).apply)
    assert sampler.open() is True
    taken: list[list[GpuRecord]] = []
    for t_s in sorted(EXPECTED_A):
        fake_nvml.set_time(t_s)
        records = sampler.sample_once(processes=True)
        taken.append(records)
        agent.collect(records)
    return taken
