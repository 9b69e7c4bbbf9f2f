"""One timed run against a server: load from the sender pool, probes, and the stored count.

Takes a `Target`, a `SenderPool` aimed at it and how many exports to send; gives a `RunResult`:
spans per second STORED (spans acknowledged, divided by the time from the start of sending to
the moment a count query first sees all of them), the export-to-queryable delays of probe
spans sent until then, and the CPU the target used (per stored span) and the CPU the machine's
other tenants took meanwhile. `calibrate()` warms a target up and measures the rate that sizes
its timed runs. A probe is one span with a fresh id sent at a known time over the
same protocol; its delay runs from the start of its export to the first query that finds it
(queries every `probe_poll_s`, concurrently with the export, so a server that answers before
storing is not flattered and one that stores before answering is not penalized).
Must not: call a span stored before a query has counted it.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from _ingest.cpu import CpuSnapshot
from _ingest.load import PROBE_SENDER, probe_request
from _ingest.senders import (
    ExportOutcome,
    GrpcExporter,
    HttpExporter,
    Protocol,
    SenderPool,
    SendResult,
    make_exporter,
)
from _ingest.targets import Target

_START_DELAY_S = 0.3
_COUNT_POLL_S = 0.05
_STALL_S = 20.0


@dataclass(slots=True)
class RunResult:
    """One timed run."""

    spans_per_s: float
    acked_spans: int
    stored_spans: int
    elapsed_s: float
    drain_s: float
    complete: bool
    retries: int
    errors: int
    first_error: str
    rejected_spans: int
    sender_cpu_s: float
    export_mean_s: float
    probe_delays_s: list[float] = field(default_factory=list)
    probe_timeouts: int = 0
    target_cpu_s: float = 0.0
    """CPU the system under test used during the run (all its threads)."""
    others_cores: float = 0.0
    """Average CPUs busy with anything but the target and this benchmark during the run."""

    @property
    def target_cpu_us_per_span(self) -> float:
        """CPU microseconds the target spent per stored span."""
        return self.target_cpu_s / self.stored_spans * 1e6 if self.stored_spans else 0.0


class Prober(threading.Thread):
    """Sends a probe span every `interval_s` between two monotonic times and times it."""

    def __init__(
        self,
        target: Target,
        protocol: Protocol,
        start_mono_s: float,
        stop_mono_s: float,
        interval_s: float,
        poll_s: float,
        timeout_s: float,
        retry_backoff_s: float,
    ) -> None:
        super().__init__(name="bench-prober", daemon=True)
        self._target = target
        self._protocol = protocol
        self._start_mono = start_mono_s
        self._stop_mono = stop_mono_s
        self._interval = interval_s
        self._poll = poll_s
        self._timeout = timeout_s
        self._backoff = retry_backoff_s
        self._done = threading.Event()
        self.delays_s: list[float] = []
        self.timeouts = 0
        self.acked = 0
        self.error = ""

    def finish(self) -> None:
        """Send no more probes; wait for the one under way."""
        self._done.set()
        self.join()

    def _export(self, exporter: HttpExporter | GrpcExporter, body: bytes) -> bool:
        export = exporter.export
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            outcome, _, error = export(body)
            if outcome == ExportOutcome.OK:
                return True
            if outcome == ExportOutcome.ERROR:
                self.error = self.error or error
                return False
            time.sleep(self._backoff)
        return False

    def run(self) -> None:
        exporter = make_exporter(self._protocol, self._target.otlp_endpoint(self._protocol))
        check = self._target.new_checker()
        rng = random.Random()
        next_mono = self._start_mono + self._interval / 2
        with ThreadPoolExecutor(1, thread_name_prefix="bench-probe-export") as pool:
            while next_mono < self._stop_mono:
                if self._done.wait(max(next_mono - time.monotonic(), 0.0)):
                    break
                trace_id = bytes((PROBE_SENDER,)) + rng.randbytes(15)
                span_id = bytes((PROBE_SENDER,)) + rng.randbytes(7)
                body = probe_request(trace_id, span_id, time.time_ns())
                sent = time.monotonic()
                export = pool.submit(self._export, exporter, body)
                while not check(trace_id.hex(), span_id.hex()):
                    if time.monotonic() - sent > self._timeout:
                        self.timeouts += 1
                        break
                    time.sleep(self._poll)
                else:
                    self.delays_s.append(time.monotonic() - sent)
                if export.result():
                    self.acked += 1
                next_mono = max(next_mono + self._interval, time.monotonic() + self._poll)
        exporter.close()


def timed_run(
    target: Target,
    pool: SenderPool,
    protocol: Protocol,
    *,
    requests: int,
    deadline_s: float,
    probe_interval_s: float | None,
    probe_poll_s: float = 0.02,
    drain_timeout_s: float = 60.0,
    retry_backoff_s: float = 0.1,
) -> RunResult:
    """Send `requests` exports from the pool (sending stops at `deadline_s` whatever the
    count), then wait until a count query sees every acknowledged span."""
    baseline = target.stored_spans()
    start = time.monotonic() + _START_DELAY_S
    time.sleep(_START_DELAY_S / 2)
    cpu0 = CpuSnapshot.take(target.pid)
    cpu0_mono = time.monotonic()
    prober: Prober | None = None
    if probe_interval_s:
        prober = Prober(
            target,
            protocol,
            start,
            start + deadline_s + drain_timeout_s,
            probe_interval_s,
            probe_poll_s,
            drain_timeout_s,
            retry_backoff_s,
        )
        prober.start()
    try:
        sends: list[SendResult] = pool.run(start, start + deadline_s, requests)
        acked = sum(s.acked_spans for s in sends)
        last_ack = max((s.last_ack_mono_s for s in sends), default=time.monotonic())
        complete = True
        last_count, last_change = -1, time.monotonic()
        while True:
            # Probe spans land in the same table; those acknowledged so far are waited for too.
            probes_acked = prober.acked if prober is not None else 0
            count = target.stored_spans()
            now = time.monotonic()
            if count >= baseline + acked + probes_acked:
                break
            if count != last_count:
                last_count, last_change = count, now
            # Give up when the count stops moving, or when draining takes far too long.
            if now - last_change > _STALL_S or now - last_ack > drain_timeout_s:
                complete = False
                break
            time.sleep(_COUNT_POLL_S)
        cpu1 = CpuSnapshot.take(target.pid)
        cpu_window_s = time.monotonic() - cpu0_mono
    finally:
        if prober is not None:
            prober.finish()
    stored = min(max(count - baseline - probes_acked, 0), acked)
    elapsed = now - start
    sender_cpu_s = sum(s.cpu_s for s in sends)
    target_cpu_s = cpu1.target_s - cpu0.target_s
    others_s = (
        (cpu1.machine_s - cpu0.machine_s)
        - target_cpu_s
        - sender_cpu_s
        - (cpu1.self_s - cpu0.self_s)
    )
    export_times = [t for s in sends for t in s.export_s]
    return RunResult(
        spans_per_s=stored / elapsed if elapsed > 0 else 0.0,
        acked_spans=acked,
        stored_spans=stored,
        elapsed_s=elapsed,
        drain_s=max(now - last_ack, 0.0),
        complete=complete,
        retries=sum(s.retries for s in sends),
        errors=sum(s.errors for s in sends),
        first_error=next(
            (s.first_error for s in sends if s.first_error), prober.error if prober else ""
        ),
        rejected_spans=sum(s.rejected_spans for s in sends),
        sender_cpu_s=sender_cpu_s,
        export_mean_s=sum(export_times) / len(export_times) if export_times else 0.0,
        probe_delays_s=list(prober.delays_s) if prober else [],
        probe_timeouts=prober.timeouts if prober else 0,
        target_cpu_s=target_cpu_s,
        others_cores=max(others_s, 0.0) / cpu_window_s,
    )


def calibrate(
    target: Target,
    pool: SenderPool,
    protocol: Protocol,
    spans_per_request: int,
    *,
    min_run_s: float,
    drain_timeout_s: float,
    retry_backoff_s: float,
) -> float:
    """Warm the target up with growing runs until one lasts `min_run_s`; return its rate.

    The rate sizes the timed runs, so that each lasts about as long on a fast target as on
    a slow one, and a target that queues before storing is never handed a backlog it needs
    minutes to work off.
    """
    requests = pool.senders
    rate = 0.0
    for _ in range(10):
        result = timed_run(
            target,
            pool,
            protocol,
            requests=requests,
            deadline_s=4 * min_run_s,
            probe_interval_s=None,
            drain_timeout_s=drain_timeout_s,
            retry_backoff_s=retry_backoff_s,
        )
        if result.stored_spans:
            rate = result.spans_per_s
        if result.elapsed_s >= min_run_s or not result.complete:
            break
        grow = min_run_s * 1.2 / max(result.elapsed_s, 0.05)
        requests = max(requests * 2, min(int(requests * grow), requests * 16))
    return rate if rate > 0 else spans_per_request / min_run_s
