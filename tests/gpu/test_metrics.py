"""GPU records as OTel metrics, read back through the real OTel SDK, and the DCGM name map."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.semconv._incubating.metrics import hw_metrics

from agent.gpu import dcgm_names as n
from agent.gpu.metrics import GpuMetrics
from agent.gpu.types import GpuEvent, GpuProcessSample, GpuSample

S = 1_000_000_000


def sample(uuid: str = "GPU-m0", t_s: int = 1, **kw: Any) -> GpuSample:
    base: dict[str, Any] = {
        "gpu_util_pct": 75.0,
        "mem_util_pct": 20.0,
        "mem_used_bytes": 40 << 30,
        "mem_free_bytes": 40 << 30,
        "mem_total_bytes": 80 << 30,
        "power_w": 350.5,
        "power_limit_w": 700.0,
        "energy_j": 12345.678,
        "temperature_c": 66.0,
        "sm_clock_mhz": 1980,
        "mem_clock_mhz": 2619,
        "clock_event_reasons": 0x4,
        "pcie_tx_bytes_per_s": 1024,
        "pcie_rx_bytes_per_s": 2048,
        "ecc_corrected_total": 2,
        "ecc_uncorrected_total": 0,
    }
    base.update(kw)
    return GpuSample(t_s * S, 0, uuid, "NVIDIA H100 80GB HBM3", **base)


class Points:
    def __init__(self, reader: InMemoryMetricReader) -> None:
        data = reader.get_metrics_data()
        self.by_name: dict[str, list[tuple[dict[str, Any], float]]] = {}
        self.units: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    self.units[m.name] = m.unit or ""
                    self.kinds[m.name] = type(m.data).__name__
                    self.by_name[m.name] = [
                        (dict(p.attributes or {}), p.value)
                        for p in m.data.data_points
                        if isinstance(p, NumberDataPoint)
                    ]

    def one(self, name: str, **match: Any) -> tuple[dict[str, Any], float]:
        hits = [
            (a, v)
            for a, v in self.by_name.get(name, [])
            if all(a.get(k.replace("__", ".")) == val for k, val in match.items())
        ]
        assert len(hits) == 1, (name, match, self.by_name.get(name))
        return hits[0]


@pytest.fixture
def setup() -> tuple[GpuMetrics, InMemoryMetricReader, list[int]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    dropped = [0]
    metrics = GpuMetrics(
        provider.get_meter("infersight.agent.gpu"), node_name="node-7", dropped=lambda: dropped[0]
    )
    return metrics, reader, dropped


def test_device_series_names_units_and_values(
    setup: tuple[GpuMetrics, InMemoryMetricReader, list[int]],
) -> None:
    metrics, reader, dropped = setup
    metrics.record_all([sample("GPU-m0"), sample("GPU-m1", power_w=None, energy_j=None)])
    dropped[0] = 4
    pts = Points(reader)
    attrs, value = pts.one(hw_metrics.HW_GPU_UTILIZATION, hw__id="GPU-m0")
    assert value == pytest.approx(0.75)
    assert attrs == {
        "hw.id": "GPU-m0",
        "hw.name": "NVIDIA H100 80GB HBM3",
        "hw.type": "gpu",
        "hw.vendor": "NVIDIA",
        "infersight.gpu.index": 0,
        "k8s.node.name": "node-7",
    }
    assert pts.one(n.GPU_MEMORY_CONTROLLER_UTILIZATION, hw__id="GPU-m0")[1] == pytest.approx(0.2)
    assert pts.one(hw_metrics.HW_GPU_MEMORY_USAGE, hw__id="GPU-m0")[1] == 40 << 30
    assert pts.one(hw_metrics.HW_GPU_MEMORY_LIMIT, hw__id="GPU-m0")[1] == 80 << 30
    assert pts.one(n.GPU_MEMORY_FREE, hw__id="GPU-m0")[1] == 40 << 30
    assert pts.one(hw_metrics.HW_GPU_MEMORY_UTILIZATION, hw__id="GPU-m0")[1] == pytest.approx(0.5)
    assert pts.one(hw_metrics.HW_POWER, hw__id="GPU-m0")[1] == pytest.approx(350.5)
    assert pts.one(hw_metrics.HW_ENERGY, hw__id="GPU-m0")[1] == pytest.approx(12345.678)
    assert pts.one(hw_metrics.HW_TEMPERATURE, hw__id="GPU-m0")[1] == 66.0
    assert pts.one(n.GPU_SM_CLOCK, hw__id="GPU-m0")[1] == pytest.approx(1.98e9)
    assert pts.one(n.GPU_CLOCK_EVENT_REASONS, hw__id="GPU-m0")[1] == 4
    assert (
        pts.one(n.GPU_PCIE_THROUGHPUT, hw__id="GPU-m0", network__io__direction="receive")[1] == 2048
    )
    assert pts.one(hw_metrics.HW_ERRORS, hw__id="GPU-m0", error__type="ecc_corrected")[1] == 2
    assert pts.one(hw_metrics.HW_STATUS, hw__id="GPU-m1", hw__state="ok")[1] == 1
    assert pts.one(n.GPU_RECORDS_DROPPED)[1] == 4
    # a value NVML did not report is absent, not zero
    assert [a["hw.id"] for a, _ in pts.by_name[hw_metrics.HW_POWER]] == ["GPU-m0"]
    assert [a["hw.id"] for a, _ in pts.by_name[hw_metrics.HW_ENERGY]] == ["GPU-m0"]
    assert pts.units[hw_metrics.HW_POWER] == "W"
    assert pts.units[hw_metrics.HW_ENERGY] == "J"
    assert pts.units[hw_metrics.HW_GPU_UTILIZATION] == "1"
    assert pts.units[hw_metrics.HW_GPU_MEMORY_USAGE] == "By"
    assert pts.units[hw_metrics.HW_TEMPERATURE] == "Cel"
    assert pts.kinds[hw_metrics.HW_ENERGY] == "Sum"
    assert pts.kinds[hw_metrics.HW_POWER] == "Gauge"


def test_mig_device_names_its_parent(
    setup: tuple[GpuMetrics, InMemoryMetricReader, list[int]],
) -> None:
    metrics, reader, _ = setup
    metrics.record(
        GpuSample(
            S,
            0,
            "MIG-x",
            "NVIDIA A100 MIG 1g.5gb",
            is_mig_device=True,
            parent_uuid="GPU-p",
            mem_used_bytes=1,
            mem_total_bytes=4,
        )
    )
    attrs, value = Points(reader).one(hw_metrics.HW_GPU_MEMORY_UTILIZATION, hw__id="MIG-x")
    assert attrs["hw.parent"] == "GPU-p"
    assert value == pytest.approx(0.25)


def test_process_series_carry_the_pod_and_follow_the_latest_listing(
    setup: tuple[GpuMetrics, InMemoryMetricReader, list[int]],
) -> None:
    metrics, reader, _ = setup
    metrics.record(sample(t_s=1))
    metrics.record(
        GpuProcessSample(
            S,
            0,
            "GPU-m0",
            100,
            mem_used_bytes=30 << 30,
            sm_util_pct=60.0,
            k8s_namespace="inference",
            k8s_pod="vllm-0",
            k8s_container="vllm",
            pod_uid="uid-1",
            container_id="c" * 64,
        )
    )
    metrics.record(GpuProcessSample(S, 0, "GPU-m0", 200, mem_used_bytes=1 << 30))
    pts = Points(reader)
    attrs, value = pts.one(n.GPU_PROCESS_MEMORY_USAGE, process__pid=100)
    assert value == 30 << 30
    assert attrs["k8s.pod.name"] == "vllm-0"
    assert attrs["k8s.namespace.name"] == "inference"
    assert attrs["k8s.container.name"] == "vllm"
    assert attrs["k8s.node.name"] == "node-7"
    assert attrs["hw.id"] == "GPU-m0"
    assert attrs["hw.name"] == "NVIDIA H100 80GB HBM3"
    assert pts.one(n.GPU_PROCESS_UTILIZATION, process__pid=100)[1] == pytest.approx(0.6)
    assert "k8s.pod.name" not in pts.one(n.GPU_PROCESS_MEMORY_USAGE, process__pid=200)[0]
    # the next listing has only pid 200: pid 100 is gone
    metrics.record(sample(t_s=6))
    metrics.record(GpuProcessSample(6 * S, 0, "GPU-m0", 200, mem_used_bytes=2 << 30))
    pts = Points(reader)
    assert [a["process.pid"] for a, _ in pts.by_name[n.GPU_PROCESS_MEMORY_USAGE]] == [200]
    # a listing older than the TTL is not reported at all
    metrics.record(sample(t_s=60))
    assert Points(reader).by_name.get(n.GPU_PROCESS_MEMORY_USAGE, []) == []


def test_events_are_counted_and_a_lost_gpu_is_failed(
    setup: tuple[GpuMetrics, InMemoryMetricReader, list[int]],
) -> None:
    metrics, reader, _ = setup
    metrics.record_all([sample("GPU-m0"), sample("GPU-m1")])
    for xid in (79, 79, 48):
        metrics.record(GpuEvent(2 * S, "GPU-m0", 0, "xid", 0x8, xid))
    metrics.record(GpuEvent(3 * S, "GPU-m1", 1, "gpu_lost"))
    pts = Points(reader)
    assert pts.one(n.GPU_XID_ERRORS, hw__id="GPU-m0", infersight__gpu__xid=79)[1] == 2
    assert pts.one(n.GPU_XID_ERRORS, hw__id="GPU-m0", infersight__gpu__xid=48)[1] == 1
    assert pts.one(n.GPU_EVENTS, hw__id="GPU-m1", infersight__gpu__event__kind="gpu_lost")[1] == 1
    assert pts.one(hw_metrics.HW_STATUS, hw__id="GPU-m1", hw__state="failed")[1] == 1
    assert [a["hw.id"] for a, _ in pts.by_name[hw_metrics.HW_POWER]] == ["GPU-m0"]


def test_every_dcgm_field_has_a_unit_and_every_mapped_name_is_emitted(
    setup: tuple[GpuMetrics, InMemoryMetricReader, list[int]],
) -> None:
    metrics, reader, _ = setup
    metrics.record(sample())
    metrics.record(GpuEvent(2 * S, "GPU-m0", 0, "xid", 0x8, 13))
    emitted = set(Points(reader).by_name)
    mapped = set(n.OTEL_TO_DCGM) | {name for name, _, _ in n.OTEL_ATTRIBUTE_TO_DCGM}
    assert mapped <= emitted, mapped - emitted
    fields = set(n.OTEL_TO_DCGM.values()) | set(n.OTEL_ATTRIBUTE_TO_DCGM.values())
    assert fields == set(n.DCGM_UNITS)
    assert n.dcgm_field(hw_metrics.HW_GPU_UTILIZATION) == "DCGM_FI_DEV_GPU_UTIL"
    assert (
        n.dcgm_field(n.GPU_PCIE_THROUGHPUT, {"network.io.direction": "transmit"})
        == "DCGM_FI_DEV_PCIE_TX_THROUGHPUT"
    )
    assert n.dcgm_field(n.GPU_PROCESS_MEMORY_USAGE) is None
    # our J -> DCGM's mJ, our bytes -> DCGM's MiB
    unit, factor = n.DCGM_UNITS["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]
    assert (unit, 12.5 * factor) == ("mJ", 12500.0)
    unit, factor = n.DCGM_UNITS["DCGM_FI_DEV_FB_USED"]
    assert (unit, (3 << 20) * factor) == ("MiB", 3.0)
