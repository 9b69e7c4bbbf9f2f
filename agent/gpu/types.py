"""GPU telemetry records: what the sampler puts on its queue.

Takes in: nothing; these are plain frozen dataclasses.
Gives out: `GpuSample` (one GPU or MIG device at one tick), `GpuProcessSample` (one process on
one device at one process tick), `GpuEvent` (an NVML event such as an XID error, or the sampler's
own "GPU lost" report) and the `GpuRecord` union of the three.
Every field a GPU or driver cannot report is None ("not available"); none is ever a guess.
Units are in the names; timestamps are wall-clock nanoseconds (`unix_ns`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# NVML clock event ("throttle") reason bits, named as the metrics and docs spell them.
CLOCK_EVENT_REASONS: Final[dict[int, str]] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def clock_event_reason_names(mask: int) -> list[str]:
    """The named reasons set in an NVML clock event bitmask, lowest bit first."""
    return [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU (or one MIG device) at one tick."""

    timestamp_unix_ns: int
    gpu_index: int
    gpu_uuid: str
    gpu_name: str | None
    #: current MIG mode of a physical GPU (None where MIG is not supported or for MIG devices)
    mig_mode: bool | None = None
    is_mig_device: bool = False
    parent_uuid: str | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    gpu_util_pct: float | None = None
    #: memory controller busy time (NVML "memory utilization"), not the fraction of memory used
    mem_util_pct: float | None = None
    mem_used_bytes: int | None = None
    mem_free_bytes: int | None = None
    mem_total_bytes: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    #: NVML total energy counter (since the driver was loaded), converted from mJ
    energy_j: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    clock_event_reasons: int | None = None
    pcie_tx_bytes_per_s: int | None = None
    pcie_rx_bytes_per_s: int | None = None
    #: volatile (since driver load) ECC error totals
    ecc_corrected_total: int | None = None
    ecc_uncorrected_total: int | None = None


@dataclass(frozen=True, slots=True)
class GpuProcessSample:
    """One compute process on one device, listed at the (slower) process period."""

    timestamp_unix_ns: int
    gpu_index: int
    gpu_uuid: str
    pid: int
    mem_used_bytes: int | None = None
    #: mean SM / memory utilization of this process over the samples NVML returned since the
    #: previous process tick; None when the GPU does not report per-process utilization
    sm_util_pct: float | None = None
    mem_util_pct: float | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    container_id: str | None = None
    pod_uid: str | None = None
    k8s_namespace: str | None = None
    k8s_pod: str | None = None
    k8s_container: str | None = None


@dataclass(frozen=True, slots=True)
class GpuEvent:
    """A critical device event (NVML event API) or a device falling off the bus."""

    timestamp_unix_ns: int
    gpu_uuid: str | None
    gpu_index: int | None
    #: xid | ecc_single_bit | ecc_double_bit | pstate | clock | power_source_change |
    #: mig_config_change | gpu_unavailable | gpu_lost | other
    kind: str
    event_type: int = 0
    #: the XID code for `xid` events; NVML's event data otherwise
    data: int = 0
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


GpuRecord = GpuSample | GpuProcessSample | GpuEvent
