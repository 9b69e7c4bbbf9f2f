"""GPU metric names in one place, and their DCGM exporter counterparts.

Takes in: nothing.
Gives out: the name of every GPU metric the agent exports (OpenTelemetry hardware semantic
conventions where a convention exists, `infersight.gpu.*` where none does), the attribute keys
they use, and plain dicts that map each series to the DCGM field a dcgm-exporter user knows,
with the unit DCGM reports it in and the factor from our unit to DCGM's. The collector imports
nothing from the agent; it can copy or read these dicts to offer DCGM-named views.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes.hw_attributes import (
    HW_GPU_TASK,
    HW_ID,
    HW_NAME,
    HW_PARENT,
    HW_STATE,
    HW_TYPE,
    HW_VENDOR,
)
from opentelemetry.semconv._incubating.metrics.hw_metrics import (
    HW_ENERGY,
    HW_ERRORS,
    HW_GPU_MEMORY_LIMIT,
    HW_GPU_MEMORY_USAGE,
    HW_GPU_MEMORY_UTILIZATION,
    HW_GPU_UTILIZATION,
    HW_POWER,
    HW_STATUS,
    HW_TEMPERATURE,
)

# ---- metric names: semantic conventions ----
GPU_UTILIZATION: Final = HW_GPU_UTILIZATION  # gauge, 1 (fraction of time busy)
GPU_MEMORY_USAGE: Final = HW_GPU_MEMORY_USAGE  # updowncounter, By
GPU_MEMORY_LIMIT: Final = HW_GPU_MEMORY_LIMIT  # updowncounter, By
GPU_MEMORY_UTILIZATION: Final = HW_GPU_MEMORY_UTILIZATION  # gauge, 1 (used / total)
GPU_POWER: Final = HW_POWER  # gauge, W
GPU_ENERGY: Final = HW_ENERGY  # counter, J
GPU_TEMPERATURE: Final = HW_TEMPERATURE  # gauge, Cel
GPU_ERRORS: Final = HW_ERRORS  # counter, {error}; error.type = ecc_corrected | ecc_uncorrected
GPU_STATUS: Final = HW_STATUS  # updowncounter, 1; hw.state = ok | failed

# ---- metric names: ours, where the conventions have none ----
GPU_MEMORY_FREE: Final = "infersight.gpu.memory.free"  # updowncounter, By
#: NVML "memory utilization": time the memory controller was busy, not memory used
GPU_MEMORY_CONTROLLER_UTILIZATION: Final = "infersight.gpu.memory_controller.utilization"
GPU_POWER_LIMIT: Final = "infersight.gpu.power.limit"  # gauge, W (enforced limit)
GPU_SM_CLOCK: Final = "infersight.gpu.clock.sm"  # gauge, Hz
GPU_MEMORY_CLOCK: Final = "infersight.gpu.clock.memory"  # gauge, Hz
GPU_CLOCK_EVENT_REASONS: Final = "infersight.gpu.clock_event_reasons"  # gauge, bitmask
GPU_PCIE_THROUGHPUT: Final = "infersight.gpu.pcie.throughput"  # gauge, By/s; direction attr
GPU_XID_ERRORS: Final = "infersight.gpu.xid_errors"  # counter, {error}; xid attr
GPU_EVENTS: Final = "infersight.gpu.events"  # counter, {event}; kind attr
GPU_PROCESS_MEMORY_USAGE: Final = "infersight.gpu.process.memory.usage"  # updowncounter, By
GPU_PROCESS_UTILIZATION: Final = "infersight.gpu.process.utilization"  # gauge, 1 (SM)
GPU_RECORDS_DROPPED: Final = "infersight.agent.gpu.records.dropped"  # counter, {record}

# ---- attribute keys ----
ATTR_HW_ID: Final = HW_ID  # GPU or MIG uuid
ATTR_HW_NAME: Final = HW_NAME  # NVML product name
ATTR_HW_TYPE: Final = HW_TYPE  # always "gpu"
ATTR_HW_VENDOR: Final = HW_VENDOR  # always "NVIDIA"
ATTR_HW_PARENT: Final = HW_PARENT  # physical GPU uuid of a MIG device
ATTR_HW_GPU_TASK: Final = HW_GPU_TASK
ATTR_HW_STATE: Final = HW_STATE
ATTR_ERROR_TYPE: Final = "error.type"
ATTR_DIRECTION: Final = "network.io.direction"  # transmit | receive
ATTR_K8S_NODE: Final = "k8s.node.name"
ATTR_K8S_NAMESPACE: Final = "k8s.namespace.name"
ATTR_K8S_POD: Final = "k8s.pod.name"
ATTR_K8S_POD_UID: Final = "k8s.pod.uid"
ATTR_K8S_CONTAINER: Final = "k8s.container.name"
ATTR_CONTAINER_ID: Final = "container.id"
ATTR_PROCESS_PID: Final = "process.pid"
ATTR_GPU_INDEX: Final = "infersight.gpu.index"
ATTR_XID: Final = "infersight.gpu.xid"
ATTR_EVENT_KIND: Final = "infersight.gpu.event.kind"

# ---- DCGM ----
#: one series per metric name
OTEL_TO_DCGM: Final[dict[str, str]] = {
    GPU_UTILIZATION: "DCGM_FI_DEV_GPU_UTIL",
    GPU_MEMORY_CONTROLLER_UTILIZATION: "DCGM_FI_DEV_MEM_COPY_UTIL",
    GPU_MEMORY_USAGE: "DCGM_FI_DEV_FB_USED",
    GPU_MEMORY_FREE: "DCGM_FI_DEV_FB_FREE",
    GPU_MEMORY_LIMIT: "DCGM_FI_DEV_FB_TOTAL",
    GPU_MEMORY_UTILIZATION: "DCGM_FI_DEV_FB_USED_PERCENT",
    GPU_POWER: "DCGM_FI_DEV_POWER_USAGE",
    GPU_POWER_LIMIT: "DCGM_FI_DEV_ENFORCED_POWER_LIMIT",
    GPU_ENERGY: "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    GPU_TEMPERATURE: "DCGM_FI_DEV_GPU_TEMP",
    GPU_SM_CLOCK: "DCGM_FI_DEV_SM_CLOCK",
    GPU_MEMORY_CLOCK: "DCGM_FI_DEV_MEM_CLOCK",
    GPU_CLOCK_EVENT_REASONS: "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
    # DCGM keeps the value of the last XID as a gauge; ours counts XIDs by code
    GPU_XID_ERRORS: "DCGM_FI_DEV_XID_ERRORS",
}

#: metrics whose series are told apart by one attribute: (name, key, value) -> DCGM field
OTEL_ATTRIBUTE_TO_DCGM: Final[dict[tuple[str, str, str], str]] = {
    (GPU_PCIE_THROUGHPUT, ATTR_DIRECTION, "transmit"): "DCGM_FI_DEV_PCIE_TX_THROUGHPUT",
    (GPU_PCIE_THROUGHPUT, ATTR_DIRECTION, "receive"): "DCGM_FI_DEV_PCIE_RX_THROUGHPUT",
    (GPU_ERRORS, ATTR_ERROR_TYPE, "ecc_corrected"): "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    (GPU_ERRORS, ATTR_ERROR_TYPE, "ecc_uncorrected"): "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
}

#: DCGM field -> (the unit DCGM reports, factor that turns our value into it)
DCGM_UNITS: Final[dict[str, tuple[str, float]]] = {
    "DCGM_FI_DEV_GPU_UTIL": ("%", 100.0),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("%", 100.0),
    "DCGM_FI_DEV_FB_USED": ("MiB", 1.0 / (1 << 20)),
    "DCGM_FI_DEV_FB_FREE": ("MiB", 1.0 / (1 << 20)),
    "DCGM_FI_DEV_FB_TOTAL": ("MiB", 1.0 / (1 << 20)),
    "DCGM_FI_DEV_FB_USED_PERCENT": ("1", 1.0),
    "DCGM_FI_DEV_POWER_USAGE": ("W", 1.0),
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": ("W", 1.0),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("mJ", 1000.0),
    "DCGM_FI_DEV_GPU_TEMP": ("Cel", 1.0),
    "DCGM_FI_DEV_SM_CLOCK": ("MHz", 1e-6),
    "DCGM_FI_DEV_MEM_CLOCK": ("MHz", 1e-6),
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": ("bitmask", 1.0),
    "DCGM_FI_DEV_XID_ERRORS": ("xid", 1.0),
    # NVML's PCIe figure is a rate in KB/s (1 KB = 1024 bytes); DCGM passes it on as is
    "DCGM_FI_DEV_PCIE_TX_THROUGHPUT": ("KB/s", 1.0 / 1024),
    "DCGM_FI_DEV_PCIE_RX_THROUGHPUT": ("KB/s", 1.0 / 1024),
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": ("{error}", 1.0),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": ("{error}", 1.0),
}


def dcgm_field(metric: str, attributes: dict[str, str] | None = None) -> str | None:
    """The DCGM field for one of our series, or None where DCGM has no counterpart."""
    direct = OTEL_TO_DCGM.get(metric)
    if direct is not None:
        return direct
    for (name, key, value), field in OTEL_ATTRIBUTE_TO_DCGM.items():
        if name == metric and attributes is not None and attributes.get(key) == value:
            return field
    return None
