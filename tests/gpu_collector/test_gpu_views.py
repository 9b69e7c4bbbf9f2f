"""`gpu_samples` and `gpu_process_samples` end to end: fake NVML -> the real sampler ->
`GpuMetrics` -> OTel SDK -> OTLP/HTTP -> a real collector process -> SQL over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.gpu.types import GpuEvent, GpuProcessSample, GpuSample
from tests.conftest import CollectorProcess
from tests.gpu.fake_nvml.build import FakeNvml
from tests.gpu_collector.agent_export import AgentGpuExport
from tests.gpu_collector.two_gpus import (
    EXPECTED_A,
    EXPECTED_B,
    EXPECTED_PROCS,
    GIB,
    NODE,
    PID_CONTAINER,
    UID_LLAMA,
    UUID_A,
    UUID_B,
    MakeSampler,
    UseScenario,
    query,
    run_steps,
)


def test_gpu_samples_view_equals_the_scenario(
    collector: CollectorProcess,
    agent: AgentGpuExport,
    use_scenario: UseScenario,
    make_sampler: MakeSampler,
    fake_nvml: FakeNvml,
    proc_root: Path,
) -> None:
    run_steps(use_scenario, make_sampler, fake_nvml, proc_root, agent)

    rows = query(collector, "SELECT * FROM gpu_samples ORDER BY time, gpu_index")
    assert [(r["gpu_uuid"], r["gpu_index"]) for r in rows] == [
        (UUID_A, 0),
        (UUID_B, 1),
        (UUID_A, 0),
        (UUID_B, 1),
    ]
    a_rows = [r for r in rows if r["gpu_uuid"] == UUID_A]
    b_rows = [r for r in rows if r["gpu_uuid"] == UUID_B]
    for row, t_s in zip(a_rows, sorted(EXPECTED_A), strict=True):
        for column, want in EXPECTED_A[t_s].items():
            assert row[column] == pytest.approx(want), (t_s, column)
    for row in b_rows:
        for column, want in EXPECTED_B.items():
            assert row[column] == (pytest.approx(want) if want is not None else None), column

    for row in rows:
        assert row["k8s_node"] == NODE
        assert row["state"] == "ok"
        assert row["is_mig_device"] is False
        assert row["parent_uuid"] is None
    assert {r["gpu_name"] for r in a_rows} == {"NVIDIA H100 80GB HBM3"}
    assert {r["gpu_name"] for r in b_rows} == {"NVIDIA A100-SXM4-40GB"}
    # GPU A runs two processes of one pod: the pod is the GPU's; GPU B is shared by two pods
    for row in a_rows:
        assert (row["k8s_namespace"], row["k8s_pod"], row["k8s_container"]) == (
            "inference",
            "vllm-llama-0",
            "vllm",
        )
        assert row["k8s_pods"] == ["inference/vllm-llama-0"]
        assert row["process_count"] == 2
    for row in b_rows:
        assert (row["k8s_namespace"], row["k8s_pod"], row["k8s_container"]) == (None, None, None)
        assert row["k8s_pods"] == ["batch/embedder-a", "batch/embedder-b"]
        assert row["process_count"] == 2
    # one row per collection: both GPUs of one collection share its time
    assert a_rows[0]["time"] == b_rows[0]["time"]
    assert a_rows[1]["time"] == b_rows[1]["time"]
    assert a_rows[0]["time_unix_ns"] < a_rows[1]["time_unix_ns"]


def test_gpu_process_samples_view_equals_the_scenario(
    collector: CollectorProcess,
    agent: AgentGpuExport,
    use_scenario: UseScenario,
    make_sampler: MakeSampler,
    fake_nvml: FakeNvml,
    proc_root: Path,
) -> None:
    taken = run_steps(use_scenario, make_sampler, fake_nvml, proc_root, agent)

    rows = query(collector, "SELECT * FROM gpu_process_samples ORDER BY time, pid")
    times = sorted({r["time_unix_ns"] for r in rows})
    assert len(times) == 2
    for step, t in enumerate(times):
        at_t = {r["pid"]: r for r in rows if r["time_unix_ns"] == t}
        assert sorted(at_t) == sorted(EXPECTED_PROCS)
        sampled = {r.pid: r for r in taken[step] if isinstance(r, GpuProcessSample)}
        for pid, (uuid, mem, sm, ns, pod, container) in EXPECTED_PROCS.items():
            row = at_t[pid]
            assert row["gpu_uuid"] == uuid
            assert row["gpu_index"] == (0 if uuid == UUID_A else 1)
            assert row["mem_used_bytes"] == mem
            # NVML's per-process utilization: what the sampler read for this tick
            assert row["sm_util_pct"] == pytest.approx(sampled[pid].sm_util_pct)
            if step == 0:
                assert row["sm_util_pct"] == pytest.approx(sm)
            assert (row["k8s_namespace"], row["k8s_pod"], row["k8s_container"]) == (
                ns,
                pod,
                container,
            )
            assert row["container_id"] == PID_CONTAINER[pid]
            assert row["k8s_node"] == NODE
        assert at_t[4101]["k8s_pod_uid"] == UID_LLAMA


def test_mig_devices_and_a_lost_gpu(collector: CollectorProcess, agent: AgentGpuExport) -> None:
    """Records straight into GpuMetrics (no NVML needed): a MIG device names its parent, and a
    GPU that fell off the bus is reported as failed with no readings."""
    s = 1_000_000_000
    parent = "GPU-ffff0000-0000-4000-8000-000000000001"
    mig = "MIG-12345678-0000-4000-8000-000000000002"
    lost = "GPU-0000dead-0000-4000-8000-000000000003"
    agent.collect(
        [
            GpuSample(
                s,
                0,
                parent,
                "NVIDIA A100-SXM4-40GB",
                mig_mode=True,
                power_w=210.0,
                temperature_c=50.0,
            ),
            GpuSample(
                s,
                0,
                mig,
                "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
                is_mig_device=True,
                parent_uuid=parent,
                gpu_instance_id=7,
                compute_instance_id=0,
                mem_used_bytes=GIB,
                mem_free_bytes=4 * GIB,
                mem_total_bytes=5 * GIB,
            ),
            GpuProcessSample(
                s,
                0,
                mig,
                900,
                mem_used_bytes=GIB,
                k8s_namespace="ml",
                k8s_pod="tiny-0",
                k8s_container="srv",
            ),
            GpuSample(s, 1, lost, "NVIDIA A100-SXM4-40GB", temperature_c=45.0),
            GpuEvent(2 * s, lost, 1, "gpu_lost"),
        ]
    )
    rows = {r["gpu_uuid"]: r for r in query(collector, "SELECT * FROM gpu_samples")}
    assert set(rows) == {parent, mig, lost}
    assert rows[mig]["is_mig_device"] is True
    assert rows[mig]["parent_uuid"] == parent
    assert rows[mig]["mem_used_ratio"] == pytest.approx(0.2)
    assert rows[mig]["k8s_pod"] == "tiny-0"
    assert rows[mig]["power_w"] is None
    assert rows[parent]["power_w"] == pytest.approx(210.0)
    assert rows[parent]["process_count"] == 0
    assert rows[lost]["state"] == "failed"
    assert rows[lost]["temperature_c"] is None
    assert rows[lost]["gpu_index"] == 1
    procs = query(collector, "SELECT * FROM gpu_process_samples")
    assert [(p["pid"], p["gpu_uuid"], p["parent_uuid"], p["k8s_pod"]) for p in procs] == [
        (900, mig, parent, "tiny-0")
    ]
