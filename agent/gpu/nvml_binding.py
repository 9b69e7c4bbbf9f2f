"""The one module that imports `pynvml` (NVIDIA's `nvidia-ml-py` binding).

Takes in: NVML device handles (opaque objects it hands out itself).
Gives out: plain Python values in NVML's own units, and NVML failures sorted into four
exceptions the sampler can act on:
  - `NvmlUnavailableError`: no usable NVML at all (library missing, driver not loaded, init failed);
  - `GpuLostError`: the GPU fell off the bus (NVML_ERROR_GPU_IS_LOST);
  - `FieldUnavailableError`: this device or driver cannot report this value (not supported, no
    permission, function missing from an older driver); `permanent` says whether asking again
    later can help;
  - `NvmlCallError`: anything else.
It keeps no state beyond pynvml's own and never logs: deciding what a failure means for the
agent is the sampler's job. Importing this module does not load the NVML library.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import pynvml  # type: ignore[import-untyped]

Handle = object

NVML_TEMPERATURE_GPU: Final = 0
NVML_CLOCK_SM: Final = 1
NVML_CLOCK_MEM: Final = 2
NVML_PCIE_UTIL_TX_BYTES: Final = 0
NVML_PCIE_UTIL_RX_BYTES: Final = 1
NVML_MEMORY_ERROR_TYPE_CORRECTED: Final = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED: Final = 1
NVML_VOLATILE_ECC: Final = 0
#: NVML's "not applicable" for GPU/compute instance ids outside MIG
NVML_INSTANCE_ID_NA: Final = 0xFFFFFFFF

_SUCCESS: Final = 0
_NOT_SUPPORTED: Final = 3
_NO_PERMISSION: Final = 4
_INVALID_ARGUMENT: Final = 2
_NOT_FOUND: Final = 6
_TIMEOUT: Final = 10
_FUNCTION_NOT_FOUND: Final = 13
_GPU_IS_LOST: Final = 15
_NO_DATA: Final = 21
_NOT_READY: Final = 27
_PERMANENT_CODES: Final = frozenset(
    {_NOT_SUPPORTED, _NO_PERMISSION, _INVALID_ARGUMENT, _FUNCTION_NOT_FOUND}
)
_TRANSIENT_CODES: Final = frozenset({_NOT_FOUND, _NO_DATA, _NOT_READY})


class NvmlUnavailableError(Exception):
    """NVML cannot be used on this node at all."""


class GpuLostError(Exception):
    """The GPU behind a handle is gone (fell off the bus); it needs a reset."""


class FieldUnavailableError(Exception):
    """This device or driver does not report this value."""

    def __init__(self, code: int, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent


class NvmlCallError(Exception):
    """An NVML call failed for another reason (unknown error, timeout, ...)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _translate(err: Any) -> Exception:
    code = int(getattr(err, "value", -1))
    message = f"{err} (NVML code {code})"
    if code == _GPU_IS_LOST:
        return GpuLostError(message)
    if code in _PERMANENT_CODES:
        return FieldUnavailableError(code, message, permanent=True)
    if code in _TRANSIENT_CODES:
        return FieldUnavailableError(code, message, permanent=False)
    return NvmlCallError(code, message)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except pynvml.NVMLError as err:
        raise _translate(err) from None


def init() -> str | None:
    """Initialise NVML; returns the driver version where NVML tells it."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        raise NvmlUnavailableError(f"{err} (NVML code {getattr(err, 'value', '?')})") from None
    except OSError as err:  # pragma: no cover - pynvml maps dlopen failures itself
        raise NvmlUnavailableError(str(err)) from None
    try:
        return str(_call(pynvml.nvmlSystemGetDriverVersion))
    except (FieldUnavailableError, NvmlCallError):
        return None


def shutdown() -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as err:
        raise _translate(err) from None


def handle_key(handle: Handle) -> int:
    """A stable integer for a handle, to match event data back to its device."""
    raw: Any = handle
    value = ctypes.cast(raw, ctypes.c_void_p).value
    return int(value or 0)


def device_count() -> int:
    return int(_call(pynvml.nvmlDeviceGetCount))


def handle_by_index(index: int) -> Handle:
    handle: Handle = _call(pynvml.nvmlDeviceGetHandleByIndex, index)
    return handle


def uuid(handle: Handle) -> str:
    return str(_call(pynvml.nvmlDeviceGetUUID, handle))


def name(handle: Handle) -> str:
    return str(_call(pynvml.nvmlDeviceGetName, handle))


def mig_mode(handle: Handle) -> bool:
    current, _pending = _call(pynvml.nvmlDeviceGetMigMode, handle)
    return bool(current)


def mig_device_handles(handle: Handle) -> list[Handle]:
    """The MIG devices configured on a physical GPU in MIG mode (slots may be empty)."""
    slots = int(_call(pynvml.nvmlDeviceGetMaxMigDeviceCount, handle))
    found: list[Handle] = []
    for slot in range(slots):
        try:
            found.append(_call(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot))
        except FieldUnavailableError:
            continue
    return found


def gpu_instance_id(handle: Handle) -> int:
    return int(_call(pynvml.nvmlDeviceGetGpuInstanceId, handle))


def compute_instance_id(handle: Handle) -> int:
    return int(_call(pynvml.nvmlDeviceGetComputeInstanceId, handle))


def utilization_pct(handle: Handle) -> tuple[int, int]:
    """(GPU busy %, memory controller busy %) over NVML's last sample period."""
    util = _call(pynvml.nvmlDeviceGetUtilizationRates, handle)
    return int(util.gpu), int(util.memory)


def memory_bytes(handle: Handle) -> tuple[int, int, int]:
    """(used, free, total) device memory in bytes."""
    mem = _call(pynvml.nvmlDeviceGetMemoryInfo, handle)
    return int(mem.used), int(mem.free), int(mem.total)


def power_mw(handle: Handle) -> int:
    return int(_call(pynvml.nvmlDeviceGetPowerUsage, handle))


def power_limit_mw(handle: Handle) -> int:
    return int(_call(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle))


def total_energy_mj(handle: Handle) -> int:
    return int(_call(pynvml.nvmlDeviceGetTotalEnergyConsumption, handle))


def temperature_c(handle: Handle) -> int:
    return int(_call(pynvml.nvmlDeviceGetTemperature, handle, NVML_TEMPERATURE_GPU))


def clock_mhz(handle: Handle, clock_type: int) -> int:
    return int(_call(pynvml.nvmlDeviceGetClockInfo, handle, clock_type))


def clock_event_reasons(handle: Handle) -> int:
    """The current clock event ("throttle") reasons bitmask."""
    try:
        return int(_call(pynvml.nvmlDeviceGetCurrentClocksEventReasons, handle))
    except FieldUnavailableError as err:
        # drivers older than R535 only have the older name of the same call
        if err.code != _FUNCTION_NOT_FOUND:
            raise
    return int(_call(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, handle))


def pcie_throughput_kb_per_s(handle: Handle, counter: int) -> int:
    return int(_call(pynvml.nvmlDeviceGetPcieThroughput, handle, counter))


def total_ecc_errors(handle: Handle, error_type: int) -> int:
    return int(_call(pynvml.nvmlDeviceGetTotalEccErrors, handle, error_type, NVML_VOLATILE_ECC))


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    used_bytes: int | None
    gpu_instance_id: int | None
    compute_instance_id: int | None


def _instance_id(value: Any) -> int | None:
    if value is None or int(value) == NVML_INSTANCE_ID_NA:
        return None
    return int(value)


def compute_processes(handle: Handle) -> list[ProcessInfo]:
    """Compute processes on a device with their memory (the call is expensive)."""
    procs = _call(pynvml.nvmlDeviceGetComputeRunningProcesses_v3, handle)
    return [
        ProcessInfo(
            int(p.pid),
            None if p.usedGpuMemory is None else int(p.usedGpuMemory),
            _instance_id(getattr(p, "gpuInstanceId", None)),
            _instance_id(getattr(p, "computeInstanceId", None)),
        )
        for p in procs
    ]


@dataclass(frozen=True, slots=True)
class ProcessUtilization:
    pid: int
    timestamp_us: int
    sm_pct: int
    mem_pct: int


def process_utilization(handle: Handle, last_seen_us: int) -> list[ProcessUtilization]:
    """Per-process utilization samples newer than `last_seen_us` (CPU time, microseconds)."""
    try:
        samples = pynvml.nvmlDeviceGetProcessUtilization(handle, last_seen_us)
    except pynvml.NVMLError as err:
        # NOT_FOUND means "no sample since last_seen"; pynvml raises code 0 for an empty answer
        if int(getattr(err, "value", -1)) in (_NOT_FOUND, _SUCCESS):
            return []
        raise _translate(err) from None
    return [
        ProcessUtilization(int(s.pid), int(s.timeStamp), int(s.smUtil), int(s.memUtil))
        for s in samples
    ]


def supported_event_types(handle: Handle) -> int:
    return int(_call(pynvml.nvmlDeviceGetSupportedEventTypes, handle))


@dataclass(frozen=True, slots=True)
class RawEvent:
    handle_key: int
    event_type: int
    data: int
    gpu_instance_id: int | None
    compute_instance_id: int | None


class EventSet:
    """An NVML event set: register devices, then wait for events with a timeout."""

    def __init__(self) -> None:
        self._set: Any = _call(pynvml.nvmlEventSetCreate)

    def register(self, handle: Handle, event_types: int) -> None:
        _call(pynvml.nvmlDeviceRegisterEvents, handle, event_types, self._set)

    def wait(self, timeout_ms: int) -> RawEvent | None:
        """The next event, or None when none arrives within `timeout_ms`."""
        try:
            data = pynvml.nvmlEventSetWait_v2(self._set, timeout_ms)
        except pynvml.NVMLError as err:
            if int(getattr(err, "value", -1)) == _TIMEOUT:
                return None
            raise _translate(err) from None
        return RawEvent(
            handle_key(data.device),
            int(data.eventType),
            int(data.eventData),
            _instance_id(data.gpuInstanceId),
            _instance_id(data.computeInstanceId),
        )

    def free(self) -> None:
        _call(pynvml.nvmlEventSetFree, self._set)
