"""The GPU sampler: NVML readings on a fixed period, as typed records on a bounded queue.

Takes in: the NVML library (through `agent.gpu.nvml_binding`, the only module importing pynvml),
a `GpuSamplerConfig`, and optionally a process attributor (see `agent.gpu.attribution`).
Gives out: `GpuSample` per GPU and per MIG device every `period_s`, `GpuProcessSample` per compute
process every `process_period_s` (listing processes is expensive in NVML), and `GpuEvent` for
XID and other critical events and for GPUs that fall off the bus, on `output`, a bounded queue
whose overflow is dropped (newest first) and counted in `dropped`.

Failure rules: a value the GPU or driver cannot report is None, and the call is not repeated
when NVML says it never will be; a lost GPU (NVML_ERROR_GPU_IS_LOST) is reported once as a
`gpu_lost` event and skipped from then on; no NVML at all (library missing, no driver, no
nvidia-ml-py) is one log line and `available` False, and `start()` then does nothing, so the rest
of the agent runs. It never raises out of its thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from agent.gpu.types import GpuEvent, GpuProcessSample, GpuRecord, GpuSample

if TYPE_CHECKING:
    from agent.gpu import nvml_binding

log = logging.getLogger("infersight.agent.gpu")

T = TypeVar("T")

EVENT_SINGLE_BIT_ECC: Final = 0x1
EVENT_DOUBLE_BIT_ECC: Final = 0x2
EVENT_PSTATE: Final = 0x4
EVENT_XID: Final = 0x8
EVENT_CLOCK: Final = 0x10
EVENT_POWER_SOURCE_CHANGE: Final = 0x80
EVENT_MIG_CONFIG_CHANGE: Final = 0x100
EVENT_GPU_UNAVAILABLE: Final = 0x4000
EVENT_KINDS: Final[dict[int, str]] = {
    EVENT_XID: "xid",
    EVENT_DOUBLE_BIT_ECC: "ecc_double_bit",
    EVENT_SINGLE_BIT_ECC: "ecc_single_bit",
    EVENT_PSTATE: "pstate",
    EVENT_CLOCK: "clock",
    EVENT_POWER_SOURCE_CHANGE: "power_source_change",
    EVENT_MIG_CONFIG_CHANGE: "mig_config_change",
    EVENT_GPU_UNAVAILABLE: "gpu_unavailable",
}
#: critical events only: P-state and clock changes are frequent and already sampled
DEFAULT_EVENT_TYPES: Final = (
    EVENT_XID
    | EVENT_DOUBLE_BIT_ECC
    | EVENT_SINGLE_BIT_ECC
    | EVENT_POWER_SOURCE_CHANGE
    | EVENT_MIG_CONFIG_CHANGE
    | EVENT_GPU_UNAVAILABLE
)


@dataclass(frozen=True, slots=True)
class GpuSamplerConfig:
    """Sampler settings; every one has a default."""

    #: seconds between device samples (100 ms is supported)
    period_s: float = 1.0
    #: seconds between compute process listings (and per-process utilization reads)
    process_period_s: float = 5.0
    #: records the output queue holds before new ones are dropped and counted
    queue_size: int = 10_000
    #: NVML event types to listen for (bitmask of nvmlEventType*)
    event_types: int = DEFAULT_EVENT_TYPES
    #: most events taken from NVML per tick, so an event storm cannot stall sampling
    max_events_per_tick: int = 256

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ValueError("gpu.period_s must be > 0")
        if not self.process_period_s > 0:
            raise ValueError("gpu.process_period_s must be > 0")
        if self.queue_size < 1:
            raise ValueError("gpu.queue_size must be >= 1")


@dataclass(slots=True)
class GpuDevice:
    """A device the sampler reads: a physical GPU or a MIG device."""

    handle: object
    key: int
    index: int
    uuid: str
    name: str | None
    is_mig: bool = False
    parent_uuid: str | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    mig_mode: bool | None = None
    lost: bool = False
    #: fields NVML said this device will never report
    unsupported: set[str] = field(default_factory=set)
    #: newest per-process utilization timestamp seen (NVML CPU time, microseconds)
    last_process_util_us: int = 0
    logged_errors: set[str] = field(default_factory=set)


ProcessAttributor = Callable[[GpuProcessSample], GpuProcessSample]


class NvmlSampler:
    """Samples every NVIDIA GPU of the node on a fixed period in its own thread."""

    def __init__(
        self,
        config: GpuSamplerConfig | None = None,
        *,
        attributor: ProcessAttributor | None = None,
        clock_unix_ns: Callable[[], int] = time.time_ns,
        clock_mono_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or GpuSamplerConfig()
        self._attributor = attributor
        self._clock_unix_ns = clock_unix_ns
        self._clock_mono_s = clock_mono_s
        self.output: queue.Queue[GpuRecord] = queue.Queue(maxsize=self.config.queue_size)
        self.devices: list[GpuDevice] = []
        self.available: bool | None = None
        self.unavailable_reason: str | None = None
        self.driver_version: str | None = None
        self.dropped = 0
        self.ticks = 0
        self.overruns = 0
        self.call_errors = 0
        self.attribution_errors = 0
        self._nvml: ModuleType | None = None
        self._events: nvml_binding.EventSet | None = None
        self._by_key: dict[int, GpuDevice] = {}
        self._last_process_tick_s: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lifecycle = threading.Lock()
        self._closed = False
        self._xids_logged: set[tuple[str, int]] = set()

    # ---- lifecycle ----

    def open(self) -> bool:
        """Initialise NVML and find the devices; False (and one log line) when NVML is absent."""
        with self._lifecycle:
            if self.available is not None:
                return self.available
            try:
                from agent.gpu import nvml_binding as nvml
            except ImportError as err:
                return self._unavailable(f"the nvidia-ml-py package is not installed ({err})")
            try:
                self.driver_version = nvml.init()
            except nvml.NvmlUnavailableError as err:
                return self._unavailable(str(err))
            self._nvml = nvml
            try:
                self._discover()
            except Exception as err:
                # a driver that initialises but cannot list devices is as good as none
                self._shutdown_nvml()
                return self._unavailable(f"cannot list GPUs: {err}")
            self._open_events()
            self.available = True
            log.info(
                "GPU telemetry on: %d device(s), driver %s, period %.3fs",
                len(self.devices),
                self.driver_version or "unknown",
                self.config.period_s,
            )
            return True

    def _unavailable(self, reason: str) -> bool:
        self.available = False
        self.unavailable_reason = reason
        log.warning(
            "GPU telemetry off: NVML is not available (%s); the agent runs without it", reason
        )
        return False

    def start(self) -> None:
        """Open NVML if needed and start the sampling thread (nothing when NVML is absent)."""
        if not self.open():
            return
        with self._lifecycle:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name="infersight-gpu-sampler", daemon=True
            )
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and release NVML. Safe to call twice, and without start()."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
            nvml = self._nvml
            if nvml is None:
                return
            if self._events is not None:
                try:
                    self._events.free()
                except Exception as err:
                    log.debug("freeing the NVML event set failed: %s", err)
                self._events = None
            self._shutdown_nvml()

    def _shutdown_nvml(self) -> None:
        nvml = self._nvml
        self._nvml = None
        if nvml is None:
            return
        try:
            nvml.shutdown()
        except Exception as err:
            log.debug("nvmlShutdown failed: %s", err)

    def drain(self, max_items: int | None = None) -> list[GpuRecord]:
        """Take what is on the output queue now, without waiting."""
        out: list[GpuRecord] = []
        while max_items is None or len(out) < max_items:
            try:
                out.append(self.output.get_nowait())
            except queue.Empty:
                break
        return out

    # ---- discovery ----

    def _discover(self) -> None:
        nvml = self._require()
        devices: list[GpuDevice] = []
        for index in range(nvml.device_count()):
            try:
                handle = nvml.handle_by_index(index)
                uuid = nvml.uuid(handle)
            except nvml.GpuLostError as err:
                self._emit(GpuEvent(self._clock_unix_ns(), None, index, "gpu_lost", data=0))
                log.warning("GPU %d is lost (fell off the bus) and is skipped: %s", index, err)
                continue
            except (nvml.FieldUnavailableError, nvml.NvmlCallError) as err:
                # e.g. a GPU this container may not open: the others are still sampled
                log.warning("GPU %d cannot be opened and is skipped: %s", index, err)
                continue
            gpu = GpuDevice(
                handle,
                nvml.handle_key(handle),
                index,
                uuid,
                self._optional(partial(nvml.name, handle)),
            )
            gpu.mig_mode = self._optional(partial(nvml.mig_mode, handle))
            devices.append(gpu)
            if gpu.mig_mode:
                devices.extend(self._mig_children(gpu))
        self.devices = devices
        self._by_key = {d.key: d for d in devices if not d.is_mig}

    def _mig_children(self, parent: GpuDevice) -> list[GpuDevice]:
        nvml = self._require()
        children: list[GpuDevice] = []
        handles = self._optional(lambda: nvml.mig_device_handles(parent.handle)) or []
        for handle in handles:
            try:
                children.append(
                    GpuDevice(
                        handle,
                        nvml.handle_key(handle),
                        parent.index,
                        nvml.uuid(handle),
                        self._optional(partial(nvml.name, handle)),
                        is_mig=True,
                        parent_uuid=parent.uuid,
                        gpu_instance_id=self._optional(partial(nvml.gpu_instance_id, handle)),
                        compute_instance_id=self._optional(
                            partial(nvml.compute_instance_id, handle)
                        ),
                    )
                )
            except (nvml.FieldUnavailableError, nvml.NvmlCallError) as err:
                log.info("skipping a MIG device of GPU %s: %s", parent.uuid, err)
        return children

    def _open_events(self) -> None:
        nvml = self._require()
        if not self.config.event_types:
            return
        try:
            events = nvml.EventSet()
        except Exception as err:
            log.info("NVML events not available (%s); XID errors will not be reported", err)
            return
        registered = 0
        for dev in self.devices:
            if dev.is_mig or dev.lost:
                continue
            try:
                wanted = self.config.event_types & nvml.supported_event_types(dev.handle)
                if wanted:
                    events.register(dev.handle, wanted)
                    registered += 1
            except Exception as err:
                log.info("GPU %s: NVML events not available: %s", dev.uuid, err)
        if registered:
            self._events = events
        else:
            try:
                events.free()
            except Exception as err:
                log.debug("freeing an unused NVML event set failed: %s", err)

    def _require(self) -> Any:
        if self._nvml is None:
            raise RuntimeError("NVML is not open")
        return self._nvml

    def _optional(self, read: Callable[[], T]) -> T | None:
        nvml = self._require()
        try:
            return read()
        except (nvml.FieldUnavailableError, nvml.NvmlCallError):
            return None

    # ---- sampling ----

    def _read(self, dev: GpuDevice, name: str, read: Callable[[], T]) -> T | None:
        """One field: None when not available; GpuLostError propagates to the device loop."""
        if name in dev.unsupported:
            return None
        nvml = self._nvml
        assert nvml is not None
        try:
            return read()
        except nvml.FieldUnavailableError as err:
            if err.permanent:
                dev.unsupported.add(name)
            return None
        except nvml.NvmlCallError as err:
            self.call_errors += 1
            if name not in dev.logged_errors:
                dev.logged_errors.add(name)
                log.warning("GPU %s: reading %s failed: %s", dev.uuid, name, err)
            return None

    def _sample_device(self, dev: GpuDevice, now_ns: int) -> GpuSample:
        nvml = self._nvml
        assert nvml is not None
        h = dev.handle
        util = self._read(dev, "utilization", lambda: nvml.utilization_pct(h))
        mem = self._read(dev, "memory", lambda: nvml.memory_bytes(h))
        power_mw = self._read(dev, "power", lambda: nvml.power_mw(h))
        limit_mw = self._read(dev, "power_limit", lambda: nvml.power_limit_mw(h))
        energy_mj = self._read(dev, "energy", lambda: nvml.total_energy_mj(h))
        return GpuSample(
            timestamp_unix_ns=now_ns,
            gpu_index=dev.index,
            gpu_uuid=dev.uuid,
            gpu_name=dev.name,
            mig_mode=dev.mig_mode,
            is_mig_device=dev.is_mig,
            parent_uuid=dev.parent_uuid,
            gpu_instance_id=dev.gpu_instance_id,
            compute_instance_id=dev.compute_instance_id,
            gpu_util_pct=float(util[0]) if util else None,
            mem_util_pct=float(util[1]) if util else None,
            mem_used_bytes=mem[0] if mem else None,
            mem_free_bytes=mem[1] if mem else None,
            mem_total_bytes=mem[2] if mem else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            energy_j=energy_mj / 1000.0 if energy_mj is not None else None,
            temperature_c=_as_float(self._read(dev, "temperature", lambda: nvml.temperature_c(h))),
            sm_clock_mhz=self._read(dev, "sm_clock", lambda: nvml.clock_mhz(h, nvml.NVML_CLOCK_SM)),
            mem_clock_mhz=self._read(
                dev, "mem_clock", lambda: nvml.clock_mhz(h, nvml.NVML_CLOCK_MEM)
            ),
            clock_event_reasons=self._read(
                dev, "clock_event_reasons", lambda: nvml.clock_event_reasons(h)
            ),
            pcie_tx_bytes_per_s=_kib(
                self._read(
                    dev,
                    "pcie_tx",
                    lambda: nvml.pcie_throughput_kb_per_s(h, nvml.NVML_PCIE_UTIL_TX_BYTES),
                )
            ),
            pcie_rx_bytes_per_s=_kib(
                self._read(
                    dev,
                    "pcie_rx",
                    lambda: nvml.pcie_throughput_kb_per_s(h, nvml.NVML_PCIE_UTIL_RX_BYTES),
                )
            ),
            ecc_corrected_total=self._read(
                dev,
                "ecc_corrected",
                lambda: nvml.total_ecc_errors(h, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ),
            ecc_uncorrected_total=self._read(
                dev,
                "ecc_uncorrected",
                lambda: nvml.total_ecc_errors(h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
            ),
        )

    def _sample_processes(self, dev: GpuDevice, now_ns: int) -> list[GpuProcessSample]:
        nvml = self._nvml
        assert nvml is not None
        h = dev.handle
        procs = self._read(dev, "processes", lambda: nvml.compute_processes(h))
        if procs is None:
            return []
        utils = self._read(
            dev, "process_util", lambda: nvml.process_utilization(h, dev.last_process_util_us)
        )
        per_pid: dict[int, tuple[float, float, int]] = {}
        for u in utils or ():
            sm, mem, n = per_pid.get(u.pid, (0.0, 0.0, 0))
            per_pid[u.pid] = (sm + u.sm_pct, mem + u.mem_pct, n + 1)
            dev.last_process_util_us = max(dev.last_process_util_us, u.timestamp_us)
        out: list[GpuProcessSample] = []
        for p in procs:
            agg = per_pid.get(p.pid)
            sample = GpuProcessSample(
                timestamp_unix_ns=now_ns,
                gpu_index=dev.index,
                gpu_uuid=dev.uuid,
                pid=p.pid,
                mem_used_bytes=p.used_bytes,
                sm_util_pct=agg[0] / agg[2] if agg else (0.0 if utils is not None else None),
                mem_util_pct=agg[1] / agg[2] if agg else (0.0 if utils is not None else None),
                gpu_instance_id=p.gpu_instance_id
                if p.gpu_instance_id is not None
                else dev.gpu_instance_id,
                compute_instance_id=p.compute_instance_id
                if p.compute_instance_id is not None
                else dev.compute_instance_id,
            )
            if self._attributor is not None:
                try:
                    sample = self._attributor(sample)
                except Exception as err:
                    self.attribution_errors += 1
                    log.debug("attributing pid %d failed: %s", p.pid, err)
            out.append(sample)
        return out

    def _mark_lost(self, dev: GpuDevice, now_ns: int, err: Exception) -> list[GpuRecord]:
        lost: list[GpuRecord] = []
        for d in self.devices:
            hit = d is dev or (not dev.is_mig and d.parent_uuid == dev.uuid)
            if hit and not d.lost:
                d.lost = True
                lost.append(GpuEvent(now_ns, d.uuid, d.index, "gpu_lost"))
        log.warning(
            "GPU %s (index %d) is lost (fell off the bus) and is skipped: %s",
            dev.uuid,
            dev.index,
            err,
        )
        return lost

    def _poll_events(self) -> list[GpuRecord]:
        nvml = self._nvml
        if self._events is None or nvml is None:
            return []
        out: list[GpuRecord] = []
        for _ in range(self.config.max_events_per_tick):
            try:
                raw = self._events.wait(0)
            except nvml.GpuLostError:
                # the lost device itself is found and reported by the device loop
                break
            except Exception as err:
                self.call_errors += 1
                log.debug("NVML event wait failed: %s", err)
                break
            if raw is None:
                break
            dev = self._by_key.get(raw.handle_key)
            out.append(
                GpuEvent(
                    timestamp_unix_ns=self._clock_unix_ns(),
                    gpu_uuid=dev.uuid if dev else None,
                    gpu_index=dev.index if dev else None,
                    kind=_event_kind(raw.event_type),
                    event_type=raw.event_type,
                    data=raw.data,
                    gpu_instance_id=raw.gpu_instance_id,
                    compute_instance_id=raw.compute_instance_id,
                )
            )
            if raw.event_type & EVENT_XID:
                # first of each code per GPU at warning level, so an XID storm cannot flood logs
                key = (dev.uuid if dev else "?", raw.data)
                level = logging.DEBUG if key in self._xids_logged else logging.WARNING
                self._xids_logged.add(key)
                log.log(level, "GPU %s: XID %d", key[0], raw.data)
        return out

    def sample_once(self, *, processes: bool | None = None) -> list[GpuRecord]:
        """Take one tick now, put its records on the queue and return them.

        `processes` forces (True) or skips (False) the process listing; by default it runs when
        `process_period_s` has passed since the last one.
        """
        if self._nvml is None:
            return []
        mono_s = self._clock_mono_s()
        if processes is None:
            last = self._last_process_tick_s
            processes = last is None or mono_s - last >= self.config.process_period_s - 1e-9
        if processes:
            self._last_process_tick_s = mono_s
        nvml = self._nvml
        records: list[GpuRecord] = []
        for dev in self.devices:
            if dev.lost:
                continue
            now_ns = self._clock_unix_ns()
            try:
                records.append(self._sample_device(dev, now_ns))
                # a GPU in MIG mode answers for all its instances at once; its processes are
                # listed on the MIG devices, where they belong
                if processes and not (dev.mig_mode and not dev.is_mig):
                    records.extend(self._sample_processes(dev, now_ns))
            except nvml.GpuLostError as err:
                records.extend(self._mark_lost(dev, now_ns, err))
        records.extend(self._poll_events())
        self.ticks += 1
        for record in records:
            self._emit(record)
        return records

    def _emit(self, record: GpuRecord) -> None:
        try:
            self.output.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        period = self.config.period_s
        next_at = self._clock_mono_s()
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:
                # one bad tick must not end GPU telemetry for the life of the agent
                log.exception("GPU sampling tick failed")
            next_at += period
            now = self._clock_mono_s()
            if now > next_at:
                missed = int((now - next_at) // period) + 1
                self.overruns += missed
                next_at += missed * period
            self._stop.wait(max(0.0, next_at - now))


def _as_float(value: int | None) -> float | None:
    return float(value) if value is not None else None


def _kib(kb_per_s: int | None) -> int | None:
    # NVML reports PCIe throughput in KB/s, where KB is 1024 bytes
    return kb_per_s * 1024 if kb_per_s is not None else None


def _event_kind(event_type: int) -> str:
    for bit, kind in EVENT_KINDS.items():
        if event_type & bit:
            return kind
    return "other"
