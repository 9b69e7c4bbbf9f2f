"""The newest GPU readings in the store, exposed under NVIDIA DCGM exporter names.

Takes the collector's `Database` (the `gpu_samples` view of schema version 3); gives
`DcgmCollector`, a prometheus_client collector to register on the registry served at
`/metrics`. Each scrape runs one DuckDB query: the latest row of every GPU and MIG device seen
within the freshness window. Every value becomes a gauge named after its DCGM field
(`DCGM_FI_DEV_GPU_UTIL`, `DCGM_FI_DEV_FB_USED`, ...) in DCGM's unit, with dcgm-exporter's
labels (`gpu`, `UUID`, `device`, `modelName`, `Hostname`, `pod`, `namespace`, `container`), so
dashboards and alerts written for dcgm-exporter work unchanged. Names, units and factors come
from `agent.gpu.dcgm_names`, a pure module shared with the agent.
Must not: run more than one query per scrape, fail the whole `/metrics` page when the store
cannot answer, or report a GPU whose newest reading is older than the window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import duckdb
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from agent.gpu import dcgm_names as n
from store.database import Database

log = logging.getLogger(__name__)

DEFAULT_FRESHNESS_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class _Series:
    """One `gpu_samples` column and the agent series it was built from."""

    column: str
    metric: str
    attributes: dict[str, str] | None
    #: factor from the column's unit to the agent metric's unit (pct -> fraction, MHz -> Hz)
    to_metric: float


def _series(
    column: str, metric: str, to_metric: float = 1.0, attributes: dict[str, str] | None = None
) -> _Series:
    return _Series(column, metric, attributes, to_metric)


# The XID counter is left out on purpose: DCGM reports the code of the last XID as a gauge,
# which per-code counters cannot reproduce faithfully.
SERIES: Final[tuple[_Series, ...]] = (
    _series("gpu_util_pct", n.GPU_UTILIZATION, 0.01),
    _series("mem_util_pct", n.GPU_MEMORY_CONTROLLER_UTILIZATION, 0.01),
    _series("mem_used_bytes", n.GPU_MEMORY_USAGE),
    _series("mem_free_bytes", n.GPU_MEMORY_FREE),
    _series("mem_total_bytes", n.GPU_MEMORY_LIMIT),
    _series("mem_used_ratio", n.GPU_MEMORY_UTILIZATION),
    _series("power_w", n.GPU_POWER),
    _series("power_limit_w", n.GPU_POWER_LIMIT),
    _series("energy_j", n.GPU_ENERGY),
    _series("temperature_c", n.GPU_TEMPERATURE),
    _series("sm_clock_mhz", n.GPU_SM_CLOCK, 1e6),
    _series("mem_clock_mhz", n.GPU_MEMORY_CLOCK, 1e6),
    _series("clock_event_reasons", n.GPU_CLOCK_EVENT_REASONS),
    _series("pcie_tx_bytes_per_s", n.GPU_PCIE_THROUGHPUT, 1.0, {n.ATTR_DIRECTION: "transmit"}),
    _series("pcie_rx_bytes_per_s", n.GPU_PCIE_THROUGHPUT, 1.0, {n.ATTR_DIRECTION: "receive"}),
    _series("ecc_corrected_total", n.GPU_ERRORS, 1.0, {n.ATTR_ERROR_TYPE: "ecc_corrected"}),
    _series("ecc_uncorrected_total", n.GPU_ERRORS, 1.0, {n.ATTR_ERROR_TYPE: "ecc_uncorrected"}),
)

_HELP: Final[dict[str, str]] = {
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization (in %).",
    "DCGM_FI_DEV_MEM_COPY_UTIL": "Memory controller utilization (in %).",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free (in MiB).",
    "DCGM_FI_DEV_FB_TOTAL": "Framebuffer memory total (in MiB).",
    "DCGM_FI_DEV_FB_USED_PERCENT": "Fraction of framebuffer memory used (0.0-1.0).",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT": "Power limit the driver enforces (in W).",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "Energy since the driver loaded (in mJ); a counter.",
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
    "DCGM_FI_DEV_SM_CLOCK": "SM clock frequency (in MHz).",
    "DCGM_FI_DEV_MEM_CLOCK": "Memory clock frequency (in MHz).",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "Bitmask of clock event (throttle) reasons in force.",
    "DCGM_FI_DEV_PCIE_TX_THROUGHPUT": "PCIe transmit throughput (in KB/s).",
    "DCGM_FI_DEV_PCIE_RX_THROUGHPUT": "PCIe receive throughput (in KB/s).",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "Single-bit ECC errors since the driver loaded; a counter.",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "Double-bit ECC errors since the driver loaded; a counter.",
}

_IDENTITY_COLUMNS: Final = (
    "gpu_uuid",
    "gpu_index",
    "gpu_name",
    "parent_uuid",
    "k8s_node",
    "k8s_namespace",
    "k8s_pod",
    "k8s_container",
)


@dataclass(frozen=True, slots=True)
class _Field:
    """A resolved DCGM field: where its value comes from and how to convert it."""

    name: str
    series: _Series
    factor: float
    help: str


def _resolve_fields() -> tuple[_Field, ...]:
    out: list[_Field] = []
    for s in SERIES:
        name = n.dcgm_field(s.metric, s.attributes)
        if name is None:
            raise RuntimeError(f"no DCGM field for {s.metric} {s.attributes}")
        _unit, factor = n.DCGM_UNITS[name]
        out.append(_Field(name, s, s.to_metric * factor, _HELP.get(name, name)))
    return tuple(out)


FIELDS: Final[tuple[_Field, ...]] = _resolve_fields()

_QUERY: Final = (
    "SELECT "
    + ", ".join(_IDENTITY_COLUMNS + tuple(f.series.column for f in FIELDS))
    + " FROM gpu_samples"
    " WHERE time >= to_timestamp(CAST(? AS DOUBLE)) AND state IS DISTINCT FROM 'failed'"
    " QUALIFY row_number() OVER (PARTITION BY gpu_uuid ORDER BY time DESC) = 1"
    " ORDER BY gpu_index, gpu_uuid"
)


def _mig_profile(name: str | None) -> tuple[str | None, str | None]:
    """(model, MIG profile) from an NVML MIG device name such as 'NVIDIA A100 MIG 1g.5gb'."""
    if name and " MIG " in name:
        model, profile = name.rsplit(" MIG ", 1)
        return model, profile
    return name, None


def dcgm_labels(row: dict[str, Any]) -> dict[str, str]:
    """dcgm-exporter's labels for one `gpu_samples` row.

    A MIG device is labelled as dcgm-exporter labels one: `UUID` and `modelName` of its parent
    GPU and the instance's profile in `GPU_I_PROFILE`; `MIG_UUID` (not a DCGM label) keeps the
    instances of one GPU apart, since the store does not know DCGM's `GPU_I_ID`.
    """
    index = row["gpu_index"]
    labels = {
        "gpu": "" if index is None else str(index),
        "UUID": row["gpu_uuid"],
        "device": "" if index is None else f"nvidia{index}",
        "modelName": row["gpu_name"] or "",
        "Hostname": row["k8s_node"] or "",
        "pod": row["k8s_pod"] or "",
        "namespace": row["k8s_namespace"] or "",
        "container": row["k8s_container"] or "",
    }
    if row["parent_uuid"]:
        model, profile = _mig_profile(row["gpu_name"])
        labels["UUID"] = row["parent_uuid"]
        labels["modelName"] = model or ""
        labels["GPU_I_PROFILE"] = profile or ""
        labels["MIG_UUID"] = row["gpu_uuid"]
    return labels


class DcgmCollector(Collector):
    """prometheus_client collector: the newest GPU rows of the store as DCGM gauges.

    Energy and ECC totals are counters in DCGM; they are exposed as gauges here so that their
    names stay exactly DCGM's (the Prometheus text format would add `_total` to a counter).
    `rate()` and `increase()` work on them all the same.
    """

    def __init__(
        self,
        db: Database,
        *,
        freshness_s: float = DEFAULT_FRESHNESS_S,
        clock_unix_s: Callable[[], float] = time.time,
    ) -> None:
        if not freshness_s > 0:
            raise ValueError(f"freshness_s must be > 0, got {freshness_s!r}")
        self._db = db
        self._freshness_s = freshness_s
        self._clock_unix_s = clock_unix_s
        self.scrape_errors = 0

    def describe(self) -> Iterator[Metric]:
        # names only: registering must not query the store
        for f in FIELDS:
            yield Metric(f.name, f.help, "gauge")

    def rows(self) -> list[dict[str, Any]]:
        """The newest fresh row of each GPU, as the one query of a scrape returns it."""
        cutoff_s = self._clock_unix_s() - self._freshness_s
        cursor = self._db.cursor()
        try:
            result = cursor.execute(_QUERY, [cutoff_s])
            names = [d[0] for d in result.description or ()]
            return [dict(zip(names, r, strict=True)) for r in result.fetchall()]
        finally:
            cursor.close()

    def collect(self) -> Iterator[Metric]:
        try:
            rows = self.rows()
        except duckdb.Error as err:
            # one failed query must not take the collector's own metrics down with it
            self.scrape_errors += 1
            level = logging.WARNING if self.scrape_errors == 1 else logging.DEBUG
            log.log(level, "reading GPU samples for /metrics failed: %s", err)
            return
        families = {f.name: Metric(f.name, f.help, "gauge") for f in FIELDS}
        for row in rows:
            labels = dcgm_labels(row)
            for f in FIELDS:
                value = row[f.series.column]
                if value is not None:
                    families[f.name].add_sample(f.name, labels, float(value) * f.factor)
        for family in families.values():
            if family.samples:
                yield family
