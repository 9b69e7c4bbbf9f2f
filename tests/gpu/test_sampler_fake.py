"""The NVML sampler against the fake NVML library, through the real pynvml binding."""

from __future__ import annotations

import itertools
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.gpu.nvml_sampler import GpuSamplerConfig, NvmlSampler
from agent.gpu.types import GpuEvent, GpuProcessSample, GpuRecord, GpuSample
from tests.gpu.conftest import BASE_UNIX_NS
from tests.gpu.fake_nvml.build import FakeNvml
from tests.gpu.fake_nvml.scenario import (
    DOUBLE_BIT_ECC_EVENT,
    XID_EVENT,
    FakeDevice,
    FakeEvent,
    FakeProc,
    Scenario,
)

UseScenario = Callable[[Scenario], Path]
MakeSampler = Callable[..., NvmlSampler]


def gpu_samples(records: list[GpuRecord]) -> dict[str, GpuSample]:
    return {r.gpu_uuid: r for r in records if isinstance(r, GpuSample)}


def proc_samples(records: list[GpuRecord], uuid: str) -> dict[int, GpuProcessSample]:
    return {r.pid: r for r in records if isinstance(r, GpuProcessSample) and r.gpu_uuid == uuid}


def events(records: list[GpuRecord]) -> list[GpuEvent]:
    return [r for r in records if isinstance(r, GpuEvent)]


FULL_UUID = "GPU-11111111-2222-3333-4444-555555555555"


def full_gpu() -> FakeDevice:
    gpu = FakeDevice(
        FULL_UUID,
        "NVIDIA H100 80GB HBM3",
        memory_total_bytes=80 << 30,
        power_limit_mw=700_000,
        energy_start_mj=5_000_000,
    )
    (
        gpu.at(0, "gpu_util", 37)
        .at(0, "mem_util", 12)
        .at(0, "mem_used", 20 << 30)
        .at(0, "power_mw", 250_500)
        .at(0, "temp_c", 61)
        .at(0, "sm_clock", 1755)
        .at(0, "mem_clock", 2619)
        .at(0, "clock_reasons", 0x4 | 0x20)
        .at(0, "pcie_tx_kbs", 1500)
        .at(0, "pcie_rx_kbs", 3000)
        .at(0, "ecc_corrected", 3)
        .at(0, "ecc_uncorrected", 1)
    )
    gpu.at(2.0, "gpu_util", 95).at(2.0, "power_mw", 650_000)
    return gpu


def test_every_field_is_read_with_units(
    use_scenario: UseScenario, make_sampler: MakeSampler, fake_nvml: FakeNvml
) -> None:
    use_scenario(Scenario([full_gpu()]))
    sampler = make_sampler()
    assert sampler.open() is True
    assert sampler.driver_version == "550.54.15"
    fake_nvml.set_time(1.0)
    s = gpu_samples(sampler.sample_once(processes=False))[FULL_UUID]
    assert s.timestamp_unix_ns == BASE_UNIX_NS + 1_000_000_000
    assert (s.gpu_index, s.gpu_name, s.mig_mode, s.is_mig_device) == (
        0,
        "NVIDIA H100 80GB HBM3",
        False,
        False,
    )
    assert (s.gpu_util_pct, s.mem_util_pct) == (37.0, 12.0)
    assert s.mem_used_bytes == 20 << 30
    assert s.mem_total_bytes == 80 << 30
    assert s.mem_free_bytes == (80 << 30) - (20 << 30)
    assert s.power_w == pytest.approx(250.5)
    assert s.power_limit_w == pytest.approx(700.0)
    # counter starts at 5000 J and integrates 250.5 W for 1 s
    assert s.energy_j == pytest.approx(5000.0 + 250.5)
    assert s.temperature_c == 61.0
    assert (s.sm_clock_mhz, s.mem_clock_mhz) == (1755, 2619)
    assert s.clock_event_reasons == 0x24
    assert (s.pcie_tx_bytes_per_s, s.pcie_rx_bytes_per_s) == (1500 * 1024, 3000 * 1024)
    assert (s.ecc_corrected_total, s.ecc_uncorrected_total) == (3, 1)

    fake_nvml.set_time(3.0)
    later = gpu_samples(sampler.sample_once(processes=False))[s.gpu_uuid]
    assert later.gpu_util_pct == 95.0
    assert later.power_w == pytest.approx(650.0)
    assert later.energy_j == pytest.approx(5000.0 + 250.5 * 2 + 650.0)


def test_unsupported_fields_are_none_and_not_asked_again(
    use_scenario: UseScenario, make_sampler: MakeSampler, fake_nvml: FakeNvml
) -> None:
    old = FakeDevice(
        "GPU-old",
        "Tesla T4",
        unsupported=[
            "utilization",
            "energy",
            "power",
            "ecc",
            "pcie",
            "clock_reasons",
            "process_util",
        ],
        procs=[FakeProc(4242, mem_bytes=123 << 20)],
    )
    use_scenario(Scenario([old]))
    sampler = make_sampler()
    assert sampler.open()
    first = sampler.sample_once(processes=True)
    s = gpu_samples(first)["GPU-old"]
    assert s.gpu_util_pct is None
    assert s.mem_util_pct is None
    assert s.energy_j is None
    assert s.power_w is None
    assert s.ecc_corrected_total is None
    assert s.ecc_uncorrected_total is None
    assert s.pcie_tx_bytes_per_s is None
    assert s.clock_event_reasons is None
    # what is supported still comes through
    assert s.temperature_c == 40.0
    assert s.mem_total_bytes is not None
    assert s.sm_clock_mhz == 1980
    proc = proc_samples(first, "GPU-old")[4242]
    assert proc.mem_used_bytes == 123 << 20
    assert proc.sm_util_pct is None

    util_calls = fake_nvml.calls("nvmlDeviceGetUtilizationRates")
    energy_calls = fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption")
    for _ in range(5):
        sampler.sample_once(processes=False)
    assert fake_nvml.calls("nvmlDeviceGetUtilizationRates") == util_calls
    assert fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption") == energy_calls


def test_other_errors_degrade_to_none_and_are_counted_and_retried(
    use_scenario: UseScenario,
    make_sampler: MakeSampler,
    fake_nvml: FakeNvml,
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = FakeDevice("GPU-flaky", errors={"utilization": 999})  # NVML_ERROR_UNKNOWN
    use_scenario(Scenario([flaky]))
    sampler = make_sampler()
    assert sampler.open()
    calls = fake_nvml.calls("nvmlDeviceGetUtilizationRates")
    with caplog.at_level(logging.WARNING, logger="infersight.agent.gpu"):
        for _ in range(3):
            assert gpu_samples(sampler.sample_once())["GPU-flaky"].gpu_util_pct is None
    assert sampler.call_errors == 3
    # an unknown error may pass, so the call is retried every tick, but logged once
    assert fake_nvml.calls("nvmlDeviceGetUtilizationRates") == calls + 3
    assert sum("reading utilization failed" in r.message for r in caplog.records) == 1


def test_gpu_lost_is_reported_once_and_skipped(
    use_scenario: UseScenario, make_sampler: MakeSampler, fake_nvml: FakeNvml
) -> None:
    use_scenario(Scenario([FakeDevice("GPU-ok"), FakeDevice("GPU-dies", lost_at_s=2.0)]))
    sampler = make_sampler()
    assert sampler.open()
    fake_nvml.set_time(1.0)
    assert set(gpu_samples(sampler.sample_once())) == {"GPU-ok", "GPU-dies"}
    fake_nvml.set_time(2.5)
    records = sampler.sample_once()
    assert set(gpu_samples(records)) == {"GPU-ok"}
    lost = events(records)
    assert [(e.kind, e.gpu_uuid, e.gpu_index) for e in lost] == [("gpu_lost", "GPU-dies", 1)]
    fake_nvml.set_time(3.5)
    records = sampler.sample_once()
    assert set(gpu_samples(records)) == {"GPU-ok"}
    assert events(records) == []


def test_gpu_lost_before_start_is_skipped(
    use_scenario: UseScenario, make_sampler: MakeSampler, fake_nvml: FakeNvml
) -> None:
    use_scenario(Scenario([FakeDevice("GPU-dead", lost_at_s=0.0), FakeDevice("GPU-ok")]))
    sampler = make_sampler()
    assert sampler.open()
    assert [d.uuid for d in sampler.devices] == ["GPU-ok"]
    records = sampler.drain()
    assert [(e.kind, e.gpu_index) for e in events(records)] == [("gpu_lost", 0)]


def test_mig_devices_are_sampled_as_their_own_devices(
    use_scenario: UseScenario, make_sampler: MakeSampler
) -> None:
    # NVML lists every instance's processes on the parent too: the sampler must not double them
    parent = FakeDevice(
        "GPU-parent", "NVIDIA A100-SXM4-40GB", mig_mode=1, procs=[FakeProc(300), FakeProc(301)]
    )
    parent.at(0, "power_mw", 180_000)
    mig_a = FakeDevice(
        "MIG-aaaa",
        "NVIDIA A100-SXM4-40GB MIG 3g.20gb",
        mig_of=parent,
        gi_id=1,
        ci_id=0,
        memory_total_bytes=20 << 30,
        procs=[FakeProc(300, mem_bytes=5 << 30)],
    )
    mig_a.at(0, "mem_used", 6 << 30)
    mig_b = FakeDevice(
        "MIG-bbbb",
        "NVIDIA A100-SXM4-40GB MIG 2g.10gb",
        mig_of=parent,
        gi_id=5,
        ci_id=0,
        memory_total_bytes=10 << 30,
        procs=[FakeProc(301, mem_bytes=1 << 30)],
    )
    plain = FakeDevice("GPU-plain", unsupported=["mig_mode"])
    use_scenario(Scenario([parent, mig_a, mig_b, plain]))
    sampler = make_sampler()
    assert sampler.open()
    records = sampler.sample_once(processes=True)
    samples = gpu_samples(records)
    assert set(samples) == {"GPU-parent", "MIG-aaaa", "MIG-bbbb", "GPU-plain"}
    assert samples["GPU-parent"].mig_mode is True
    assert samples["GPU-parent"].power_w == pytest.approx(180.0)
    assert samples["GPU-plain"].mig_mode is None
    a = samples["MIG-aaaa"]
    assert (a.is_mig_device, a.parent_uuid, a.gpu_instance_id, a.compute_instance_id) == (
        True,
        "GPU-parent",
        1,
        0,
    )
    assert a.gpu_index == 0
    assert (a.mem_used_bytes, a.mem_total_bytes) == (6 << 30, 20 << 30)
    # board-level readings belong to the parent; the MIG device reports them as not available
    assert a.power_w is None
    assert a.energy_j is None
    assert a.gpu_util_pct is None
    assert samples["MIG-bbbb"].gpu_instance_id == 5
    procs_a = proc_samples(records, "MIG-aaaa")
    assert set(procs_a) == {300}
    assert procs_a[300].gpu_instance_id == 1
    assert set(proc_samples(records, "MIG-bbbb")) == {301}
    assert proc_samples(records, "GPU-parent") == {}


def test_processes_come_and_go_at_the_process_period(
    use_scenario: UseScenario, make_sampler: MakeSampler, fake_nvml: FakeNvml
) -> None:
    gpu = FakeDevice(
        "GPU-p",
        procs=[
            FakeProc(100, 0.0, 10.0, mem_bytes=2 << 30, sm_pct=70, mem_pct=20),
            FakeProc(200, 4.0, 100.0, mem_bytes=3 << 30, sm_pct=25, mem_pct=5),
        ],
    )
    use_scenario(Scenario([gpu]))
    sampler = make_sampler(GpuSamplerConfig(period_s=1.0, process_period_s=5.0))
    assert sampler.open()
    seen: dict[float, set[int]] = {}
    list_calls = fake_nvml.calls("nvmlDeviceGetComputeRunningProcesses_v3")
    for t in range(16):
        fake_nvml.set_time(float(t))
        procs = proc_samples(sampler.sample_once(), "GPU-p")
        if procs:
            seen[float(t)] = set(procs)
            if 100 in procs:
                assert procs[100].mem_used_bytes == 2 << 30
                assert procs[100].sm_util_pct == 70.0
                assert procs[100].mem_util_pct == 20.0
    # listed at t=0, 5, 10, 15 only, since the call is expensive (pynvml makes two C calls per
    # listing: one for the count, one for the entries)
    assert fake_nvml.calls("nvmlDeviceGetComputeRunningProcesses_v3") - list_calls == 4 * 2
    assert seen == {0.0: {100}, 5.0: {100, 200}, 10.0: {200}, 15.0: {200}}


def test_xid_and_ecc_events_arrive_through_the_event_api(
    use_scenario: UseScenario, make_sampler: MakeSampler, fake_nvml: FakeNvml
) -> None:
    gpus = [FakeDevice("GPU-e0"), FakeDevice("GPU-e1")]
    use_scenario(
        Scenario(
            gpus,
            events=[
                FakeEvent(1.5, "GPU-e1", XID_EVENT, 79),
                FakeEvent(1.7, "GPU-e0", XID_EVENT, 48),
                FakeEvent(2.5, "GPU-e0", DOUBLE_BIT_ECC_EVENT, 0),
                FakeEvent(2.6, "GPU-e0", 0x4, 0),  # P-state change: not asked for
            ],
        )
    )
    sampler = make_sampler()
    assert sampler.open()
    fake_nvml.set_time(1.0)
    assert events(sampler.sample_once()) == []
    fake_nvml.set_time(2.0)
    got = events(sampler.sample_once())
    assert [(e.kind, e.gpu_uuid, e.data) for e in got] == [
        ("xid", "GPU-e1", 79),
        ("xid", "GPU-e0", 48),
    ]
    assert got[0].timestamp_unix_ns == BASE_UNIX_NS + 2_000_000_000
    fake_nvml.set_time(3.0)
    got = events(sampler.sample_once())
    assert [(e.kind, e.gpu_uuid) for e in got] == [("ecc_double_bit", "GPU-e0")]
    fake_nvml.set_time(4.0)
    assert events(sampler.sample_once()) == []


def test_queue_is_bounded_and_drops_are_counted(
    use_scenario: UseScenario, make_sampler: MakeSampler
) -> None:
    use_scenario(Scenario([FakeDevice(f"GPU-{i}") for i in range(3)]))
    sampler = make_sampler(GpuSamplerConfig(queue_size=5))
    assert sampler.open()
    for _ in range(4):
        sampler.sample_once(processes=False)
    assert sampler.output.qsize() == 5
    assert sampler.dropped == 12 - 5
    assert len(sampler.drain()) == 5
    sampler.sample_once(processes=False)
    assert len(sampler.drain()) == 3


def test_thread_samples_on_its_period_and_stop_is_safe_twice(
    use_scenario: UseScenario, fake_nvml: FakeNvml
) -> None:
    use_scenario(Scenario([FakeDevice("GPU-t0"), FakeDevice("GPU-t1")]))
    fake_nvml.set_time(-1.0)  # scenario time runs on its own
    shutdowns = fake_nvml.calls("nvmlShutdown")
    sampler = NvmlSampler(GpuSamplerConfig(period_s=0.1, process_period_s=0.5))
    sampler.start()
    sampler.start()  # a second start is a no-op
    time.sleep(1.05)
    sampler.stop()
    sampler.stop()
    records = sampler.drain()
    ticks = sum(1 for r in records if isinstance(r, GpuSample) and r.gpu_uuid == "GPU-t0")
    assert 6 <= ticks <= 12, ticks  # 11 on an idle machine; a busy one may skip some
    assert sampler.ticks == ticks
    stamps = [
        r.timestamp_unix_ns for r in records if isinstance(r, GpuSample) and r.gpu_uuid == "GPU-t0"
    ]
    gaps_s = [(b - a) / 1e9 for a, b in itertools.pairwise(stamps)]
    assert all(0.05 < g < 0.5 for g in gaps_s), gaps_s
    assert 0.08 < statistics.median(gaps_s) < 0.12, gaps_s
    assert fake_nvml.calls("nvmlShutdown") == shutdowns + 1
    assert sampler.sample_once() == []  # closed: nothing more


def test_stop_without_start_and_attributor_is_applied(
    use_scenario: UseScenario, make_sampler: MakeSampler
) -> None:
    use_scenario(Scenario([FakeDevice("GPU-a", procs=[FakeProc(77)])]))

    def attributor(p: GpuProcessSample) -> GpuProcessSample:
        from dataclasses import replace

        return replace(p, k8s_namespace="ml", k8s_pod=f"pod-{p.pid}")

    sampler = make_sampler(attributor=attributor)
    assert sampler.open()
    procs = proc_samples(sampler.sample_once(processes=True), "GPU-a")
    assert (procs[77].k8s_namespace, procs[77].k8s_pod) == ("ml", "pod-77")
    sampler.stop()
    sampler.stop()


def test_init_failure_is_one_line_and_unavailable(
    use_scenario: UseScenario, make_sampler: MakeSampler, caplog: pytest.LogCaptureFixture
) -> None:
    use_scenario(Scenario([FakeDevice("GPU-x")], init_error=9))  # driver not loaded
    sampler = make_sampler()
    with caplog.at_level(logging.DEBUG, logger="infersight.agent.gpu"):
        sampler.start()
        assert sampler.open() is False
        sampler.stop()
        sampler.stop()
    assert sampler.available is False
    assert sampler.unavailable_reason is not None
    assert "Driver Not Loaded" in sampler.unavailable_reason
    mine = [r for r in caplog.records if r.name == "infersight.agent.gpu"]
    assert len(mine) == 1
    assert mine[0].levelno == logging.WARNING
    assert sampler.sample_once() == []


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="period_s"):
        GpuSamplerConfig(period_s=0)
    with pytest.raises(ValueError, match="queue_size"):
        GpuSamplerConfig(queue_size=0)
