"""GPU records as OpenTelemetry metrics, through the OTel SDK metrics API.

Takes in: an OTel `Meter` (from the agent's MeterProvider) and the sampler's records
(`GpuSample`, `GpuProcessSample`, `GpuEvent`), handed to `GpuMetrics.record()`.
Gives out: observable instruments that report the latest reading of every GPU and MIG device at
each collection (names from `agent.gpu.dcgm_names`: OTel hardware conventions where they exist),
per-process memory and utilization series with pod attributes, and counters of XID and other
critical events. A value NVML did not report is left out of that collection, never sent as 0.
Units follow the conventions: fractions (0..1) for utilization, bytes, W, J, Cel, Hz.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from agent.gpu import dcgm_names as n
from agent.gpu.types import GpuEvent, GpuProcessSample, GpuRecord, GpuSample

Attributes = dict[str, str | int]
_NS_PER_S: Final = 1_000_000_000


class GpuMetrics:
    """Holds the latest GPU state and reports it through observable instruments."""

    def __init__(
        self,
        meter: Meter,
        *,
        node_name: str | None = None,
        dropped: Callable[[], int] | None = None,
        process_ttl_s: float = 12.0,
    ) -> None:
        self._node_name = node_name
        self._dropped = dropped
        self._process_ttl_ns = int(process_ttl_s * _NS_PER_S)
        self._lock = threading.Lock()
        self._gpus: dict[str, GpuSample] = {}
        self._procs: dict[tuple[str, int], GpuProcessSample] = {}
        self._proc_tick_ns: dict[str, int] = {}
        self._failed: dict[str, Attributes] = {}

        def gauge(
            name: str, unit: str, description: str, read: Callable[[GpuSample], float | None]
        ) -> None:
            meter.create_observable_gauge(name, [self._device_callback(read)], unit, description)

        gauge(
            n.GPU_UTILIZATION,
            "1",
            "Fraction of time the GPU was busy (NVML utilization).",
            lambda s: _pct(s.gpu_util_pct),
        )
        gauge(
            n.GPU_MEMORY_CONTROLLER_UTILIZATION,
            "1",
            "Fraction of time the memory controller was busy.",
            lambda s: _pct(s.mem_util_pct),
        )
        gauge(n.GPU_MEMORY_UTILIZATION, "1", "Fraction of GPU memory used.", _memory_fraction)
        gauge(n.GPU_POWER, "W", "Power drawn by the GPU.", lambda s: s.power_w)
        gauge(n.GPU_POWER_LIMIT, "W", "Power limit the driver enforces.", lambda s: s.power_limit_w)
        gauge(n.GPU_TEMPERATURE, "Cel", "GPU temperature.", lambda s: s.temperature_c)
        gauge(n.GPU_SM_CLOCK, "Hz", "SM clock.", lambda s: _mhz(s.sm_clock_mhz))
        gauge(n.GPU_MEMORY_CLOCK, "Hz", "Memory clock.", lambda s: _mhz(s.mem_clock_mhz))
        gauge(
            n.GPU_CLOCK_EVENT_REASONS,
            "1",
            "Bitmask of NVML clock event (throttle) reasons in force.",
            lambda s: s.clock_event_reasons,
        )
        meter.create_observable_up_down_counter(
            n.GPU_MEMORY_USAGE,
            [self._device_callback(lambda s: s.mem_used_bytes)],
            "By",
            "GPU memory used.",
        )
        meter.create_observable_up_down_counter(
            n.GPU_MEMORY_FREE,
            [self._device_callback(lambda s: s.mem_free_bytes)],
            "By",
            "GPU memory free.",
        )
        meter.create_observable_up_down_counter(
            n.GPU_MEMORY_LIMIT,
            [self._device_callback(lambda s: s.mem_total_bytes)],
            "By",
            "Size of the GPU memory.",
        )
        meter.create_observable_counter(
            n.GPU_ENERGY,
            [self._device_callback(lambda s: s.energy_j)],
            "J",
            "Energy consumed by the GPU since the driver was loaded.",
        )
        meter.create_observable_gauge(
            n.GPU_PCIE_THROUGHPUT, [self._pcie_callback], "By/s", "PCIe throughput."
        )
        meter.create_observable_counter(
            n.GPU_ERRORS, [self._ecc_callback], "{error}", "ECC errors since the driver was loaded."
        )
        meter.create_observable_up_down_counter(
            n.GPU_STATUS, [self._status_callback], "1", "1 for the state the GPU is in."
        )
        meter.create_observable_up_down_counter(
            n.GPU_PROCESS_MEMORY_USAGE,
            [self._process_callback(lambda p: p.mem_used_bytes)],
            "By",
            "GPU memory used by one process.",
        )
        meter.create_observable_gauge(
            n.GPU_PROCESS_UTILIZATION,
            [self._process_callback(lambda p: _pct(p.sm_util_pct))],
            "1",
            "Fraction of SM time used by one process.",
        )
        if dropped is not None:
            meter.create_observable_counter(
                n.GPU_RECORDS_DROPPED,
                [self._dropped_callback],
                "{record}",
                "GPU records dropped because the sampler's queue was full.",
            )
        self._xid = meter.create_counter(n.GPU_XID_ERRORS, "{error}", "XID errors by code.")
        self._events = meter.create_counter(n.GPU_EVENTS, "{event}", "Critical GPU events by kind.")

    # ---- input ----

    def record(self, record: GpuRecord) -> None:
        """Take one sampler record into the state the next collection reports."""
        if isinstance(record, GpuSample):
            with self._lock:
                self._gpus[record.gpu_uuid] = record
        elif isinstance(record, GpuProcessSample):
            with self._lock:
                if record.timestamp_unix_ns > self._proc_tick_ns.get(record.gpu_uuid, -1):
                    # a new process listing of this GPU replaces the previous one
                    self._proc_tick_ns[record.gpu_uuid] = record.timestamp_unix_ns
                    self._procs = {k: v for k, v in self._procs.items() if k[0] != record.gpu_uuid}
                self._procs[(record.gpu_uuid, record.pid)] = record
        else:
            self._record_event(record)

    def record_all(self, records: Iterable[GpuRecord]) -> None:
        for record in records:
            self.record(record)

    def _record_event(self, event: GpuEvent) -> None:
        with self._lock:
            latest = self._gpus.get(event.gpu_uuid) if event.gpu_uuid else None
        attrs = self._device_attributes(latest) if latest else self._bare_attributes(event)
        self._events.add(1, {**attrs, n.ATTR_EVENT_KIND: event.kind})
        if event.kind == "xid":
            self._xid.add(1, {**attrs, n.ATTR_XID: event.data})
        if event.kind == "gpu_lost" and event.gpu_uuid:
            with self._lock:
                self._gpus.pop(event.gpu_uuid, None)
                self._procs = {k: v for k, v in self._procs.items() if k[0] != event.gpu_uuid}
                self._failed[event.gpu_uuid] = attrs

    # ---- attributes ----

    def _bare_attributes(self, event: GpuEvent) -> Attributes:
        attrs: Attributes = {n.ATTR_HW_TYPE: "gpu", n.ATTR_HW_VENDOR: "NVIDIA"}
        if event.gpu_uuid:
            attrs[n.ATTR_HW_ID] = event.gpu_uuid
        if event.gpu_index is not None:
            attrs[n.ATTR_GPU_INDEX] = event.gpu_index
        if self._node_name:
            attrs[n.ATTR_K8S_NODE] = self._node_name
        return attrs

    def _device_attributes(self, s: GpuSample) -> Attributes:
        attrs: Attributes = {
            n.ATTR_HW_ID: s.gpu_uuid,
            n.ATTR_HW_TYPE: "gpu",
            n.ATTR_HW_VENDOR: "NVIDIA",
            n.ATTR_GPU_INDEX: s.gpu_index,
        }
        if s.gpu_name:
            attrs[n.ATTR_HW_NAME] = s.gpu_name
        if s.parent_uuid:
            attrs[n.ATTR_HW_PARENT] = s.parent_uuid
        if self._node_name:
            attrs[n.ATTR_K8S_NODE] = self._node_name
        return attrs

    def _process_attributes(self, p: GpuProcessSample) -> Attributes:
        gpu = self._gpus.get(p.gpu_uuid)
        attrs: Attributes = (
            self._device_attributes(gpu)
            if gpu
            else {n.ATTR_HW_ID: p.gpu_uuid, n.ATTR_HW_TYPE: "gpu", n.ATTR_GPU_INDEX: p.gpu_index}
        )
        if self._node_name:
            attrs[n.ATTR_K8S_NODE] = self._node_name
        attrs[n.ATTR_PROCESS_PID] = p.pid
        for key, value in (
            (n.ATTR_K8S_NAMESPACE, p.k8s_namespace),
            (n.ATTR_K8S_POD, p.k8s_pod),
            (n.ATTR_K8S_CONTAINER, p.k8s_container),
            (n.ATTR_K8S_POD_UID, p.pod_uid),
            (n.ATTR_CONTAINER_ID, p.container_id),
        ):
            if value:
                attrs[key] = value
        return attrs

    # ---- callbacks (run in the metric reader's thread) ----

    def _device_callback(
        self, read: Callable[[GpuSample], float | int | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                samples = list(self._gpus.values())
            out: list[Observation] = []
            for s in samples:
                value = read(s)
                if value is not None:
                    out.append(Observation(value, self._device_attributes(s)))
            return out

        return callback

    def _pcie_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            samples = list(self._gpus.values())
        out: list[Observation] = []
        for s in samples:
            for direction, value in (
                ("transmit", s.pcie_tx_bytes_per_s),
                ("receive", s.pcie_rx_bytes_per_s),
            ):
                if value is not None:
                    out.append(
                        Observation(
                            value, {**self._device_attributes(s), n.ATTR_DIRECTION: direction}
                        )
                    )
        return out

    def _ecc_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            samples = list(self._gpus.values())
        out: list[Observation] = []
        for s in samples:
            for kind, value in (
                ("ecc_corrected", s.ecc_corrected_total),
                ("ecc_uncorrected", s.ecc_uncorrected_total),
            ):
                if value is not None:
                    out.append(
                        Observation(value, {**self._device_attributes(s), n.ATTR_ERROR_TYPE: kind})
                    )
        return out

    def _status_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            samples = list(self._gpus.values())
            failed = list(self._failed.values())
        out = [
            Observation(1, {**self._device_attributes(s), n.ATTR_HW_STATE: "ok"}) for s in samples
        ]
        out.extend(Observation(1, {**attrs, n.ATTR_HW_STATE: "failed"}) for attrs in failed)
        return out

    def _process_callback(
        self, read: Callable[[GpuProcessSample], float | int | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            out: list[Observation] = []
            with self._lock:
                for p in self._procs.values():
                    gpu = self._gpus.get(p.gpu_uuid)
                    # a process listing older than the TTL is stale: its processes may be gone
                    if (
                        gpu is None
                        or gpu.timestamp_unix_ns - p.timestamp_unix_ns > self._process_ttl_ns
                    ):
                        continue
                    value = read(p)
                    if value is not None:
                        out.append(Observation(value, self._process_attributes(p)))
            return out

        return callback

    def _dropped_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        assert self._dropped is not None
        attrs: Attributes = {n.ATTR_K8S_NODE: self._node_name} if self._node_name else {}
        return [Observation(self._dropped(), attrs)]


def _pct(value: float | None) -> float | None:
    return value / 100.0 if value is not None else None


def _mhz(value: int | None) -> float | None:
    return value * 1e6 if value is not None else None


def _memory_fraction(s: GpuSample) -> float | None:
    if s.mem_used_bytes is None or not s.mem_total_bytes:
        return None
    return s.mem_used_bytes / s.mem_total_bytes
