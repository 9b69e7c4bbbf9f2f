"""GPU time and energy per inference call, from GPU samples and call timings.

Takes in: per GPU, a time series of `EnergySample` (unix_ns, energy counter in J, power in W,
utilization in %), and a list of `CallSpan` (id, start/end unix_ns, the GPUs of the serving
process, tokens processed when known).
Gives out: `AttributionResult` with, per call, `gpu_seconds` and `energy_j` (and their split per
GPU), and per GPU a `GpuEnergyBalance` whose idle energy plus the calls' energy equals the
energy measured over the window: the counter's delta when the counter is present throughout.
Pure: no I/O, no clocks, no globals. The model is documented in docs/gpu.md.

Model, per GPU and per sample interval [t0, t1) of length dt:
  E      = counter(t1) - counter(t0); where the counter is missing or went backwards (driver
           reload), the trapezoid of the two power readings times dt instead.
  calls  = the calls on this GPU overlapping the interval, each by overlap_c seconds.
  A      = the length of the union of those overlaps (time with >= 1 call in flight).
  idle   = E when A == 0. Otherwise min(E, P_idle * (dt - A)), where P_idle is the idle baseline:
           given by the caller, else the median power of the window's fully idle intervals, else
           (no idle interval at all) the interval's own mean power, i.e. a split by time.
  active = E - idle, shared among the calls by weight w_c.
  w_c    = tokens processed in the interval, estimated as tokens_c * overlap_c / duration_c,
           when every call in the interval has a token count and at least one is non-zero;
           overlap_c otherwise.
  GPU seconds, the same way: busy = u * dt with u the utilization fraction reported at t1
           (NVML averages it over the period before the read; the reading at t0 when t1 has
           none; 1.0 when neither has one, i.e. occupancy). Its idle part is
           min(busy, U_idle * (dt - A)) with U_idle the median utilization of the fully idle
           intervals (a split by time when there are none); that and the busy time of fully
           idle intervals is the GPU's unattributed busy time; the rest is shared by w_c.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from agent.gpu.types import GpuSample

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class EnergySample:
    """One reading of one GPU."""

    unix_ns: int
    #: the NVML total energy counter, in joules (any origin: only differences are used)
    energy_j: float | None
    power_w: float | None = None
    util_pct: float | None = None


@dataclass(frozen=True, slots=True)
class CallSpan:
    """One inference call as seen by the GPUs of the process that served it."""

    call_id: str
    start_unix_ns: int
    end_unix_ns: int
    gpu_uuids: tuple[str, ...]
    #: tokens the server processed for this call (input + output) when known
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class CallGpuUsage:
    """What one call cost on the GPUs."""

    call_id: str
    gpu_seconds: float
    energy_j: float
    energy_j_by_gpu: dict[str, float] = field(default_factory=dict)
    gpu_seconds_by_gpu: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GpuEnergyBalance:
    """One GPU's energy over the window, split into calls and idle."""

    gpu_uuid: str
    start_unix_ns: int
    end_unix_ns: int
    #: energy over the window: sum of interval energies (the counter delta when complete)
    total_j: float
    #: energy given to calls
    active_j: float
    #: energy while no call was in flight (plus the idle baseline of partly idle intervals)
    idle_j: float
    #: the idle baseline used; None when none could be estimated (split by time)
    idle_power_w: float | None
    #: sum of utilization x interval length
    busy_s: float
    #: busy time with no call in flight
    unattributed_busy_s: float
    #: intervals measured by the energy counter / by power readings / not at all
    counter_intervals: int = 0
    power_intervals: int = 0
    unmeasured_intervals: int = 0


@dataclass(frozen=True, slots=True)
class AttributionResult:
    calls: dict[str, CallGpuUsage]
    gpus: dict[str, GpuEnergyBalance]


def energy_samples(samples: Iterable[GpuSample]) -> dict[str, list[EnergySample]]:
    """Group sampler output by GPU uuid as `EnergySample` series, in time order."""
    out: dict[str, list[EnergySample]] = {}
    for s in samples:
        out.setdefault(s.gpu_uuid, []).append(
            EnergySample(s.timestamp_unix_ns, s.energy_j, s.power_w, s.gpu_util_pct)
        )
    for series in out.values():
        series.sort(key=lambda e: e.unix_ns)
    return out


def _interval_energy(a: EnergySample, b: EnergySample, dt_s: float) -> tuple[float, str]:
    if a.energy_j is not None and b.energy_j is not None and b.energy_j >= a.energy_j:
        return b.energy_j - a.energy_j, "counter"
    powers = [p for p in (a.power_w, b.power_w) if p is not None]
    if powers:
        return sum(powers) / len(powers) * dt_s, "power"
    return 0.0, "none"


def _idle_part(amount: float, dt_s: float, idle_s: float, baseline_rate: float | None) -> float:
    """The part of an interval's energy (or busy time) that belongs to its idle stretch."""
    if idle_s <= 0.0:
        return 0.0
    if baseline_rate is not None:
        return min(amount, baseline_rate * idle_s)
    return amount * idle_s / dt_s


def _util_fraction(a: EnergySample, b: EnergySample) -> float:
    for value in (b.util_pct, a.util_pct):
        if value is not None:
            return min(max(value / 100.0, 0.0), 1.0)
    return 1.0


def _union_length(spans: list[tuple[int, int]]) -> int:
    total = 0
    cur_start = cur_end = None
    for start, end in sorted(spans):
        if cur_end is None or start > cur_end:
            if cur_end is not None and cur_start is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        elif end > cur_end:
            cur_end = end
    if cur_end is not None and cur_start is not None:
        total += cur_end - cur_start
    return total


def _weights(overlaps: list[tuple[CallSpan, int]]) -> list[float]:
    by_tokens = all(c.tokens is not None for c, _ in overlaps) and any(
        (c.tokens or 0) > 0 for c, _ in overlaps
    )
    if by_tokens:
        return [(c.tokens or 0) * o / (c.end_unix_ns - c.start_unix_ns) for c, o in overlaps]
    return [float(o) for _, o in overlaps]


def _dedupe(series: Sequence[EnergySample]) -> list[EnergySample]:
    ordered = sorted(series, key=lambda e: e.unix_ns)
    out: list[EnergySample] = []
    for s in ordered:
        if out and out[-1].unix_ns == s.unix_ns:
            out[-1] = s
        else:
            out.append(s)
    return out


def _intervals(
    samples: list[EnergySample], gpu_calls: list[CallSpan]
) -> Iterator[tuple[EnergySample, EnergySample, list[tuple[CallSpan, int]]]]:
    """Each sample interval with the calls overlapping it (ns of overlap), by one sweep.

    `gpu_calls` must be sorted by start.
    """
    in_flight: list[CallSpan] = []
    next_call = 0
    for a, b in itertools.pairwise(samples):
        t0, t1 = a.unix_ns, b.unix_ns
        while next_call < len(gpu_calls) and gpu_calls[next_call].start_unix_ns < t1:
            in_flight.append(gpu_calls[next_call])
            next_call += 1
        in_flight = [c for c in in_flight if c.end_unix_ns > t0]
        overlaps = [(c, min(c.end_unix_ns, t1) - max(c.start_unix_ns, t0)) for c in in_flight]
        yield a, b, [(c, o) for c, o in overlaps if o > 0]


def _idle_baselines(
    samples: list[EnergySample], gpu_calls: list[CallSpan]
) -> tuple[float | None, float | None]:
    """Median power (W) and utilization (fraction) of the intervals with no call in flight."""
    powers: list[float] = []
    utils: list[float] = []
    for a, b, overlaps in _intervals(samples, gpu_calls):
        dt_s = (b.unix_ns - a.unix_ns) / NS_PER_S
        if overlaps or dt_s <= 0:
            continue
        energy, how = _interval_energy(a, b, dt_s)
        if how != "none":
            powers.append(energy / dt_s)
        if b.util_pct is not None or a.util_pct is not None:
            utils.append(_util_fraction(a, b))
    return (
        statistics.median(powers) if powers else None,
        statistics.median(utils) if utils else None,
    )


def attribute_energy(
    samples_by_gpu: Mapping[str, Sequence[EnergySample]],
    calls: Sequence[CallSpan],
    *,
    idle_power_w: Mapping[str, float] | float | None = None,
) -> AttributionResult:
    """Split each GPU's measured energy and busy time among the calls it served.

    `idle_power_w` fixes the idle baseline (one value for every GPU or one per uuid) instead of
    estimating it from the window's idle intervals. Calls on GPUs without samples, or outside the
    sampled window, get zero for that GPU; only the part of a call inside the window counts.
    """
    energy_by_call: dict[str, dict[str, float]] = {c.call_id: {} for c in calls}
    seconds_by_call: dict[str, dict[str, float]] = {c.call_id: {} for c in calls}
    balances: dict[str, GpuEnergyBalance] = {}

    for uuid, raw in samples_by_gpu.items():
        samples = _dedupe(raw)
        gpu_calls = sorted(
            (c for c in calls if uuid in c.gpu_uuids and c.end_unix_ns > c.start_unix_ns),
            key=lambda c: c.start_unix_ns,
        )
        baseline = idle_power_w.get(uuid) if isinstance(idle_power_w, Mapping) else idle_power_w
        estimated_power_w, util_baseline = _idle_baselines(samples, gpu_calls)
        if baseline is None:
            baseline = estimated_power_w

        total = idle = active = busy = unattributed = 0.0
        counted = {"counter": 0, "power": 0, "none": 0}
        for a, b, overlaps in _intervals(samples, gpu_calls):
            t0, t1 = a.unix_ns, b.unix_ns
            dt_s = (t1 - t0) / NS_PER_S
            energy, how = _interval_energy(a, b, dt_s)
            counted[how] += 1
            total += energy

            busy_s = _util_fraction(a, b) * dt_s
            busy += busy_s
            if not overlaps:
                idle += energy
                unattributed += busy_s
                continue
            active_ns = _union_length(
                [(max(c.start_unix_ns, t0), min(c.end_unix_ns, t1)) for c, _ in overlaps]
            )
            active_s = active_ns / NS_PER_S
            idle_s = max(dt_s - active_s, 0.0)
            idle_energy = _idle_part(energy, dt_s, idle_s, baseline)
            active_energy = energy - idle_energy
            idle += idle_energy
            active += active_energy
            idle_busy_s = _idle_part(busy_s, dt_s, idle_s, util_baseline)
            active_busy_s = busy_s - idle_busy_s
            unattributed += idle_busy_s

            weights = _weights(overlaps)
            weight_sum = math.fsum(weights)
            for (c, _), w in zip(overlaps, weights, strict=True):
                share = w / weight_sum
                per_gpu = energy_by_call[c.call_id]
                per_gpu[uuid] = per_gpu.get(uuid, 0.0) + active_energy * share
                secs = seconds_by_call[c.call_id]
                secs[uuid] = secs.get(uuid, 0.0) + active_busy_s * share

        balances[uuid] = GpuEnergyBalance(
            gpu_uuid=uuid,
            start_unix_ns=samples[0].unix_ns if samples else 0,
            end_unix_ns=samples[-1].unix_ns if samples else 0,
            total_j=total,
            active_j=active,
            idle_j=idle,
            idle_power_w=baseline,
            busy_s=busy,
            unattributed_busy_s=unattributed,
            counter_intervals=counted["counter"],
            power_intervals=counted["power"],
            unmeasured_intervals=counted["none"],
        )

    usage = {
        c.call_id: CallGpuUsage(
            call_id=c.call_id,
            gpu_seconds=math.fsum(seconds_by_call[c.call_id].values()),
            energy_j=math.fsum(energy_by_call[c.call_id].values()),
            energy_j_by_gpu=dict(energy_by_call[c.call_id]),
            gpu_seconds_by_gpu=dict(seconds_by_call[c.call_id]),
        )
        for c in calls
    }
    return AttributionResult(usage, balances)
