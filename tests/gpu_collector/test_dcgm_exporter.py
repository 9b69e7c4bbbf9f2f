"""DCGM exporter names on `/metrics`: GPU readings that went fake NVML -> sampler -> OTLP ->
a real collector, read back from its store by `DcgmCollector` and parsed as Prometheus text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agent.gpu.types import GpuEvent, GpuProcessSample, GpuSample
from collector.gpu.dcgm_exporter import DcgmCollector
from store.database import Database
from tests.conftest import CollectorProcess
from tests.gpu.fake_nvml.build import FakeNvml
from tests.gpu_collector.agent_export import AgentGpuExport
from tests.gpu_collector.api_server import serve_api
from tests.gpu_collector.two_gpus import (
    GIB,
    NODE,
    UUID_A,
    UUID_B,
    MakeSampler,
    UseScenario,
    run_steps,
)

#: GPU A's newest reading (scenario time 3 s) as dcgm-exporter reports it, in DCGM's units
DCGM_A = {
    "DCGM_FI_DEV_GPU_UTIL": 95.0,
    "DCGM_FI_DEV_MEM_COPY_UTIL": 12.0,
    "DCGM_FI_DEV_FB_USED": 30 * 1024.0,
    "DCGM_FI_DEV_FB_FREE": 50 * 1024.0,
    "DCGM_FI_DEV_FB_TOTAL": 80 * 1024.0,
    "DCGM_FI_DEV_FB_USED_PERCENT": 0.375,
    "DCGM_FI_DEV_POWER_USAGE": 650.0,
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": 700.0,
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 6_151_000.0,
    "DCGM_FI_DEV_GPU_TEMP": 70.0,
    "DCGM_FI_DEV_SM_CLOCK": 1980.0,
    "DCGM_FI_DEV_MEM_CLOCK": 2619.0,
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": 36.0,
    "DCGM_FI_DEV_PCIE_TX_THROUGHPUT": 1500.0,
    "DCGM_FI_DEV_PCIE_RX_THROUGHPUT": 3000.0,
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": 3.0,
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 1.0,
}
DCGM_B = {
    "DCGM_FI_DEV_GPU_UTIL": 5.0,
    "DCGM_FI_DEV_FB_USED": 2 * 1024.0,
    "DCGM_FI_DEV_FB_FREE": 38 * 1024.0,
    "DCGM_FI_DEV_GPU_TEMP": 40.0,
    "DCGM_FI_DEV_SM_CLOCK": 1410.0,
}
LABELS_A = {
    "gpu": "0",
    "UUID": UUID_A,
    "device": "nvidia0",
    "modelName": "NVIDIA H100 80GB HBM3",
    "Hostname": NODE,
    "pod": "vllm-llama-0",
    "namespace": "inference",
    "container": "vllm",
}
# GPU B is shared by two pods: dcgm-exporter's pod labels stay empty
LABELS_B = {
    "gpu": "1",
    "UUID": UUID_B,
    "device": "nvidia1",
    "modelName": "NVIDIA A100-SXM4-40GB",
    "Hostname": NODE,
    "pod": "",
    "namespace": "",
    "container": "",
}


def dcgm_samples(text: str) -> dict[str, list[Sample]]:
    """DCGM families of a Prometheus text page, with their declared types checked."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("DCGM_"):
            assert family.type == "gauge", family.name
            assert all(s.name == family.name for s in family.samples)
            out[family.name] = list(family.samples)
    return out


def by_uuid(samples: dict[str, list[Sample]], uuid: str) -> dict[str, Sample]:
    return {name: s for name, ss in samples.items() for s in ss if s.labels["UUID"] == uuid}


def newest_unix_s(cp: CollectorProcess) -> float:
    rows = cp.sql("SELECT max(time_unix_ns) FROM gpu_samples")
    return int(rows[0][0]) / 1e9


@pytest.fixture
def filled_store(
    collector: CollectorProcess,
    agent: AgentGpuExport,
    use_scenario: UseScenario,
    make_sampler: MakeSampler,
    fake_nvml: FakeNvml,
    proc_root: Path,
) -> Iterator[tuple[Database, float]]:
    """The two-GPU scenario stored by a real collector, which is then stopped so that this
    process can open its file; yields the store and the newest collection time."""
    run_steps(use_scenario, make_sampler, fake_nvml, proc_root, agent)
    agent.close()
    newest_s = newest_unix_s(collector)
    assert collector.stop() == 0
    db = Database(collector.db)
    try:
        yield db, newest_s
    finally:
        db.close()


def test_collector_metrics_page_carries_dcgm_series(filled_store: tuple[Database, float]) -> None:
    db, newest_s = filled_store

    def register(state: object) -> None:
        registry = state.registry  # type: ignore[attr-defined]
        registry.register(DcgmCollector(db, clock_unix_s=lambda: newest_s + 5))

    with serve_api(db, register) as url:
        resp = httpx.get(f"{url}/metrics", timeout=10)
    assert resp.status_code == 200
    # the collector's own metrics are still there beside the DCGM ones
    assert "infersight_writer_commit_seconds" in resp.text
    samples = dcgm_samples(resp.text)

    a = by_uuid(samples, UUID_A)
    assert {name: s.value for name, s in a.items()} == pytest.approx(DCGM_A)
    for s in a.values():
        assert s.labels == LABELS_A
    b = by_uuid(samples, UUID_B)
    assert {name: b[name].value for name in DCGM_B} == pytest.approx(DCGM_B)
    # B reports no power or energy: no series, rather than a 0
    assert "DCGM_FI_DEV_POWER_USAGE" not in b
    assert "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION" not in b
    for s in b.values():
        assert s.labels == LABELS_B
    # one series per GPU and field: the latest collection only
    assert all(len(ss) == len({s.labels["UUID"] for s in ss}) for ss in samples.values())


def test_only_fresh_gpus_are_reported(filled_store: tuple[Database, float]) -> None:
    db, newest_s = filled_store

    def page(collector: DcgmCollector) -> dict[str, list[Sample]]:
        registry = CollectorRegistry()
        registry.register(collector)
        return dcgm_samples(generate_latest(registry).decode())

    assert page(DcgmCollector(db, clock_unix_s=lambda: newest_s + 29))
    assert page(DcgmCollector(db, clock_unix_s=lambda: newest_s + 31)) == {}
    wide = page(DcgmCollector(db, freshness_s=300, clock_unix_s=lambda: newest_s + 200))
    assert {s.labels["UUID"] for s in wide["DCGM_FI_DEV_GPU_UTIL"]} == {UUID_A, UUID_B}
    with pytest.raises(ValueError, match="freshness_s"):
        DcgmCollector(db, freshness_s=0)


def test_a_store_that_cannot_answer_leaves_the_page_up(tmp_path: Path) -> None:
    db = Database(tmp_path / "gone.duckdb")
    registry = CollectorRegistry()
    dcgm = DcgmCollector(db)
    registry.register(dcgm)
    db.close()
    assert dcgm_samples(generate_latest(registry).decode()) == {}
    assert dcgm.scrape_errors == 1


def test_mig_instances_and_lost_gpus(collector: CollectorProcess, agent: AgentGpuExport) -> None:
    s = 1_000_000_000
    parent = "GPU-ffff0000-0000-4000-8000-000000000001"
    mig_1 = "MIG-11111111-0000-4000-8000-000000000002"
    mig_2 = "MIG-22222222-0000-4000-8000-000000000003"
    lost = "GPU-0000dead-0000-4000-8000-000000000004"
    agent.collect(
        [
            GpuSample(s, 0, parent, "NVIDIA A100-SXM4-40GB", mig_mode=True, power_w=210.0),
            GpuSample(
                s,
                0,
                mig_1,
                "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
                is_mig_device=True,
                parent_uuid=parent,
                mem_used_bytes=GIB,
                mem_free_bytes=4 * GIB,
            ),
            GpuSample(
                s,
                0,
                mig_2,
                "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
                is_mig_device=True,
                parent_uuid=parent,
                mem_used_bytes=2 * GIB,
                mem_free_bytes=3 * GIB,
            ),
            GpuProcessSample(
                s,
                0,
                mig_1,
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
    agent.close()
    newest_s = newest_unix_s(collector)
    collector.stop()
    db = Database(collector.db)
    try:
        registry = CollectorRegistry()
        registry.register(DcgmCollector(db, clock_unix_s=lambda: newest_s))
        samples = dcgm_samples(generate_latest(registry).decode())
    finally:
        db.close()
    used = {s.labels.get("MIG_UUID", ""): s for s in samples["DCGM_FI_DEV_FB_USED"]}
    assert set(used) == {mig_1, mig_2}
    assert used[mig_1].value == 1024.0
    assert used[mig_2].value == 2048.0
    for uuid, sample in used.items():
        assert sample.labels["UUID"] == parent
        assert sample.labels["GPU_I_PROFILE"] == "1g.5gb"
        assert sample.labels["modelName"] == "NVIDIA A100-SXM4-40GB"
        assert sample.labels["gpu"] == "0"
        assert sample.labels["pod"] == ("tiny-0" if uuid == mig_1 else "")
    [power] = samples["DCGM_FI_DEV_POWER_USAGE"]
    assert (power.labels["UUID"], power.value) == (parent, 210.0)
    assert "MIG_UUID" not in power.labels
    # the lost GPU has no readings any more and no series
    assert all(s.labels["UUID"] != lost for ss in samples.values() for s in ss)


def test_running_collector_serves_dcgm_names(
    collector: CollectorProcess, agent: AgentGpuExport
) -> None:
    agent.collect(
        [GpuSample(1, 0, UUID_A, "NVIDIA H100 80GB HBM3", gpu_util_pct=42.0, power_w=321.0)]
    )
    samples = dcgm_samples(httpx.get(f"{collector.api}/metrics", timeout=10).text)
    a = by_uuid(samples, UUID_A)
    assert a["DCGM_FI_DEV_GPU_UTIL"].value == pytest.approx(42.0)
    assert a["DCGM_FI_DEV_POWER_USAGE"].value == pytest.approx(321.0)
    assert a["DCGM_FI_DEV_GPU_UTIL"].labels["Hostname"] == NODE
