"""GPU time and energy on server-side LLM spans: hold each call until its GPU samples are in.

Takes in: the sampler's records (`observe`: device samples, and the compute-process listings
that say which pids run on which GPUs), and finished calls (`offer`: an `InferenceCall` with
its `HttpExchange` and `Workload`).
Gives out: each held call, once the samples covering its end have arrived (or its hold ran
out), to the `emit` callback with the span attributes `infersight.gpu.seconds`,
`infersight.gpu.energy_j`, `infersight.gpu.uuids` and `infersight.gpu.name`, computed by
`agent.gpu.energy.attribute_energy` against the other calls known on the same GPUs.

What is held: only SERVER calls whose process is on a GPU: its pid is in a recent
compute-process listing, its container has a process in one (the HTTP front end and the GPU
worker of one server are often two processes), or it is configured in `gpu_pids`. Everything
else, CLIENT calls above all, is refused by `offer` and emitted at once by the caller. The hold
is bounded in time (`period_s + margin_s`) and in size (`max_held`): a call that overflows is
handed back unheld, one whose samples never came is emitted without GPU attributes; both are
counted. Must not: block, raise into the caller's thread for a bad sample, guess a value the
GPU did not report (a call whose GPUs report neither energy nor power gets no energy).

Known limit: a call is attributed when it is released, against the calls known by then; a
call overlapping it that is still running (its exchange not yet finished) is not known, so the
call released first gets that stretch alone.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.util.types import AttributeValue

from agent.capture.exchange import HttpExchange, Role
from agent.genai.call import InferenceCall
from agent.gpu.energy import NS_PER_S, CallSpan, EnergySample, attribute_energy
from agent.gpu.types import GpuProcessSample, GpuRecord, GpuSample
from agent.k8s.resolver import Workload
from agent.otel.spans import end_mono_ns

GPU_SECONDS: Final = "infersight.gpu.seconds"
GPU_ENERGY_J: Final = "infersight.gpu.energy_j"
GPU_UUIDS: Final = "infersight.gpu.uuids"
GPU_NAME: Final = "infersight.gpu.name"

K = TypeVar("K")

#: outcomes counted per call offered to the hold
OUTCOMES: Final = ("attributed", "unattributed", "overflow")


@dataclass(frozen=True, slots=True)
class CallEnergyConfig:
    """Hold settings; every one has a default."""

    #: the sampler's device period: a call's end is covered at most this long after it
    period_s: float = 1.0
    #: extra wait beyond one period (delivery of the samples to this component)
    margin_s: float = 0.5
    #: calls held at once; more are handed back unheld and counted
    max_held: int = 1024
    #: samples and released calls kept to attribute later calls against
    history_s: float = 900.0
    #: samples before a call's start given to the attribution, to find the GPU's idle baseline
    context_s: float = 30.0
    #: how long a pid (or container) counts as on a GPU after a listing last showed it
    process_ttl_s: float = 60.0
    #: configured pid -> GPU uuids (an empty tuple: every GPU of the node)
    gpu_pids: Mapping[int, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ValueError("gpu.period_s must be > 0")
        if self.margin_s < 0:
            raise ValueError("gpu.call_hold_margin_s must be >= 0")
        if self.max_held < 1:
            raise ValueError("gpu.max_held_calls must be >= 1")

    @property
    def hold_s(self) -> float:
        return self.period_s + self.margin_s


@dataclass(frozen=True, slots=True)
class HeldCall:
    """One call as the span emitter needs it."""

    call: InferenceCall
    exchange: HttpExchange
    workload: Workload | None


#: receives a released call and its GPU attributes (None when it could not be attributed)
EmitHeld = Callable[[HeldCall, Mapping[str, AttributeValue] | None], object]


@dataclass(slots=True)
class _Pending:
    item: HeldCall
    span: CallSpan
    deadline_s: float


def _tokens(call: InferenceCall) -> int | None:
    if call.input_tokens is None or call.output_tokens is None:
        return None
    return call.input_tokens + call.output_tokens


def _expire(table: dict[K, dict[str, int]], stale_unix_ns: int) -> None:
    """Forget GPUs a listing has not shown since `stale_unix_ns`, and keys left with none."""
    for key, gpus in list(table.items()):
        for uuid in [u for u, seen in gpus.items() if seen < stale_unix_ns]:
            del gpus[uuid]
        if not gpus:
            del table[key]


class CallEnergy:
    """Holds GPU-served SERVER calls until their samples arrive; thread-safe."""

    def __init__(
        self,
        config: CallEnergyConfig,
        emit: EmitHeld,
        to_unix_ns: Callable[[int], int],
        *,
        clock_mono_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._emit = emit
        self._to_unix_ns = to_unix_ns
        self._clock_mono_s = clock_mono_s
        self._lock = threading.Lock()
        self._samples: dict[str, deque[EnergySample]] = {}
        self._names: dict[str, str] = {}
        self._pid_gpus: dict[int, dict[str, int]] = {}
        self._container_gpus: dict[str, dict[str, int]] = {}
        self._newest_unix_ns = 0
        self._pending: list[_Pending] = []
        self._released: deque[CallSpan] = deque()
        self._ids = itertools.count(1)
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    # ---- input ----

    def observe(self, records: Iterable[GpuRecord]) -> None:
        """Take the sampler's records (device samples and process listings)."""
        with self._lock:
            for r in records:
                if isinstance(r, GpuSample):
                    series = self._samples.setdefault(r.gpu_uuid, deque())
                    if series and r.timestamp_unix_ns < series[-1].unix_ns:
                        continue  # out of order: the series must stay sorted
                    series.append(
                        EnergySample(r.timestamp_unix_ns, r.energy_j, r.power_w, r.gpu_util_pct)
                    )
                    if r.gpu_name:
                        self._names[r.gpu_uuid] = r.gpu_name
                    self._newest_unix_ns = max(self._newest_unix_ns, r.timestamp_unix_ns)
                elif isinstance(r, GpuProcessSample):
                    self._pid_gpus.setdefault(r.pid, {})[r.gpu_uuid] = r.timestamp_unix_ns
                    if r.container_id:
                        gpus = self._container_gpus.setdefault(r.container_id, {})
                        gpus[r.gpu_uuid] = r.timestamp_unix_ns
            self._trim()

    def _trim(self) -> None:
        horizon = self._newest_unix_ns - round(self.config.history_s * NS_PER_S)
        for series in self._samples.values():
            # keep one sample before the horizon so the first interval after it stays whole
            while len(series) > 1 and series[1].unix_ns <= horizon:
                series.popleft()
        while self._released and self._released[0].end_unix_ns < horizon:
            self._released.popleft()
        stale = self._newest_unix_ns - round(self.config.process_ttl_s * NS_PER_S)
        _expire(self._pid_gpus, stale)
        _expire(self._container_gpus, stale)

    def gpus_of(self, pid: int, workload: Workload | None = None) -> tuple[str, ...]:
        """The GPUs the process serving a call runs on (empty: not a GPU process)."""
        with self._lock:
            return self._gpus_of(pid, workload)

    def _gpus_of(self, pid: int, workload: Workload | None) -> tuple[str, ...]:
        configured = self.config.gpu_pids.get(pid)
        if configured is not None:
            return tuple(sorted(configured or self._samples))
        found = set(self._pid_gpus.get(pid, {}))
        if not found and workload is not None and workload.container_id:
            found = set(self._container_gpus.get(workload.container_id, {}))
        return tuple(sorted(found))

    def offer(self, call: InferenceCall, exchange: HttpExchange, workload: Workload | None) -> bool:
        """Hold the call (True) or refuse it, so the caller emits it now (False)."""
        if exchange.conn.role is not Role.SERVER:
            return False
        with self._lock:
            uuids = self._gpus_of(exchange.conn.pid, workload)
            if not uuids:
                return False
            if len(self._pending) >= self.config.max_held:
                self.counts["overflow"] += 1
                return False
            span = CallSpan(
                f"c{next(self._ids)}",
                self._to_unix_ns(exchange.start_mono_ns),
                self._to_unix_ns(end_mono_ns(exchange)),
                uuids,
                _tokens(call),
            )
            deadline = self._clock_mono_s() + self.config.hold_s
            self._pending.append(_Pending(HeldCall(call, exchange, workload), span, deadline))
        return True

    # ---- output ----

    def held(self) -> int:
        with self._lock:
            return len(self._pending)

    def release_due(self) -> int:
        """Emit the calls whose samples are in, and those whose hold ran out; returns how many."""
        return self._release(everything=False)

    def flush(self) -> int:
        """Emit every held call now (attributed where its samples are in); for shutdown."""
        return self._release(everything=True)

    def _covered(self, span: CallSpan) -> bool:
        for uuid in span.gpu_uuids:
            series = self._samples.get(uuid)
            if not series or series[-1].unix_ns < span.end_unix_ns:
                return False
        return True

    def _release(self, *, everything: bool) -> int:
        now_s = self._clock_mono_s()
        out: list[tuple[HeldCall, dict[str, AttributeValue] | None]] = []
        with self._lock:
            keep: list[_Pending] = []
            ready: list[_Pending] = []
            for p in self._pending:
                if self._covered(p.span):
                    ready.append(p)
                elif everything or now_s >= p.deadline_s:
                    out.append((p.item, None))
                    self.counts["unattributed"] += 1
                else:
                    keep.append(p)
            for p in ready:
                attrs = self._attribute(p.span)
                self.counts["attributed" if attrs is not None else "unattributed"] += 1
                out.append((p.item, attrs))
            self._pending = keep
            for p in ready:
                self._released.append(p.span)
        for item, attrs in out:
            self._emit(item, attrs)
        return len(out)

    def _attribute(self, span: CallSpan) -> dict[str, AttributeValue] | None:
        lo = span.start_unix_ns - round(self.config.context_s * NS_PER_S)
        samples: dict[str, list[EnergySample]] = {}
        hi = span.end_unix_ns
        for uuid in span.gpu_uuids:
            series = self._samples.get(uuid, deque())
            picked: list[EnergySample] = []
            for s in series:
                if s.unix_ns <= lo:
                    picked = [s]  # the newest sample at or before the window's start
                else:
                    picked.append(s)
                    if s.unix_ns >= span.end_unix_ns:
                        break
            samples[uuid] = picked
            if picked:
                hi = max(hi, picked[-1].unix_ns)
                lo = min(lo, picked[0].unix_ns)
        if any(len(series) < 2 for series in samples.values()):
            return None
        gpus = set(span.gpu_uuids)
        others = [
            c
            for c in itertools.chain(self._released, (p.span for p in self._pending))
            if c.call_id != span.call_id
            and gpus.intersection(c.gpu_uuids)
            and c.end_unix_ns > lo
            and c.start_unix_ns < hi
        ]
        result = attribute_energy(samples, [span, *others])
        usage = result.calls[span.call_id]
        attrs: dict[str, AttributeValue] = {
            GPU_SECONDS: usage.gpu_seconds,
            GPU_UUIDS: list(span.gpu_uuids),
        }
        measured = all(
            result.gpus[u].counter_intervals + result.gpus[u].power_intervals > 0
            for u in span.gpu_uuids
        )
        if measured:
            attrs[GPU_ENERGY_J] = usage.energy_j
        name = next((self._names[u] for u in span.gpu_uuids if u in self._names), None)
        if name is not None:
            attrs[GPU_NAME] = name
        return attrs

    # ---- self-metrics ----

    def register(self, meter: Meter) -> None:
        """Export the outcome counts and the calls held now."""

        def counted(_: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                counts = dict(self.counts)
            return [Observation(n, {"outcome": k}) for k, n in counts.items()]

        def held(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(self.held())]

        meter.create_observable_counter(
            "infersight.agent.gpu.calls",
            [counted],
            unit="{call}",
            description="Server calls offered for GPU attribution, by outcome",
        )
        meter.create_observable_gauge(
            "infersight.agent.gpu.calls.held",
            [held],
            unit="{call}",
            description="Server calls waiting for the GPU samples covering their end",
        )
