"""The collector's call-table stage: keeps `call_rows` (behind `llm_calls`) up to date.

Takes the open `Database` and `CallTableSettings`; a background thread runs
`store.call_rows.CallRows.refresh` every `interval_s` on its own cursor, and once more when
stopped so that everything acknowledged before shutdown is in `llm_calls`. A pass re-reads the
recent spans of the traces it refreshes, so its cost grows with the ingest rate; after a slow
pass the next one waits long enough that the thread stays busy at most `max_busy_share` of the
time (never more than `max_interval_s`), trading freshness for the writer's CPU. Gives out the stage
(start / stop / run_once) and, through `CallTableCollector`, its figures on `/metrics`: passes,
failed passes, traces and rows re-derived, and the last pass's duration.

`llm_calls` therefore trails `spans` by about one interval (longer under heavy ingest): a span
is queryable in `spans` as soon as its export is acknowledged, and in `llm_calls` after the
next pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from store.call_rows import CallRows, CallRowSettings, RefreshResult
from store.database import Database

log = logging.getLogger("infersight.call_table")


@dataclass(frozen=True, slots=True)
class CallTableSettings:
    """How often the stage runs, and what `CallRows` assumes about arrival."""

    interval_s: float = 1.0
    rows: CallRowSettings = field(default_factory=CallRowSettings)
    max_busy_share: float = 0.25
    max_interval_s: float = 10.0

    def wait_after(self, pass_s: float) -> float:
        """Seconds to wait after a pass that took `pass_s`."""
        stretched = pass_s / self.max_busy_share - pass_s
        return min(max(self.interval_s, stretched), max(self.max_interval_s, self.interval_s))


@dataclass(slots=True)
class CallTableStats:
    """What the passes did, for `/metrics`."""

    passes: int = 0
    errors: int = 0
    traces: int = 0
    rows_inserted: int = 0
    rows_deleted: int = 0
    last_pass_s: float = 0.0
    wait_s: float = 0.0  # the wait before the next pass


class CallTableStage:
    """The periodic refresh of `call_rows`."""

    def __init__(self, db: Database, settings: CallTableSettings | None = None) -> None:
        self.db = db
        self.settings = settings or CallTableSettings()
        self._rows = CallRows(self.settings.rows)
        self._stats = CallTableStats()
        self._stats_lock = threading.Lock()
        self._pass_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run passes on a daemon thread until `stop()`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="infersight-calls", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the thread, then run one last pass; safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join(timeout_s)
        if not thread.is_alive():
            self._guarded_pass()

    def run_once(self) -> RefreshResult:
        """One pass on a fresh cursor (tests and bulk loads call this directly)."""
        cur = self.db.cursor()
        try:
            return self._pass(cur)
        finally:
            cur.close()

    def snapshot(self) -> CallTableStats:
        """A copy of the counters, safe to read from another thread."""
        with self._stats_lock:
            s = self._stats
            return CallTableStats(
                s.passes,
                s.errors,
                s.traces,
                s.rows_inserted,
                s.rows_deleted,
                s.last_pass_s,
                s.wait_s,
            )

    def _pass(self, cur: object) -> RefreshResult:
        with self._pass_lock:
            result = self._rows.refresh(cur)
        with self._stats_lock:
            s = self._stats
            s.passes += 1
            s.traces += result.traces
            s.rows_inserted += result.rows_inserted
            s.rows_deleted += result.rows_deleted
            s.last_pass_s = result.seconds
        return result

    def _guarded_pass(self, cur: object | None = None) -> None:
        try:
            if cur is None:
                self.run_once()
            else:
                self._pass(cur)
        except Exception:  # the next pass sees the same work again
            with self._stats_lock:
                self._stats.errors += 1
            log.exception("call-table pass failed")

    def _run(self) -> None:
        cur = self.db.cursor()
        wait_s = self.settings.interval_s
        try:
            while not self._stop.wait(wait_s):
                started = time.perf_counter()
                self._guarded_pass(cur)
                wait_s = self.settings.wait_after(time.perf_counter() - started)
                with self._stats_lock:
                    self._stats.wait_s = wait_s
        finally:
            cur.close()


class CallTableCollector(Collector):
    """`infersight_call_table_*` metrics of one stage."""

    def __init__(self, stage: CallTableStage) -> None:
        self._stage = stage

    def collect(self) -> Iterator[Metric]:
        s = self._stage.snapshot()
        yield CounterMetricFamily(
            "infersight_call_table_passes", "Refresh passes of llm_calls completed.", s.passes
        )
        yield CounterMetricFamily(
            "infersight_call_table_errors", "Refresh passes of llm_calls that failed.", s.errors
        )
        yield CounterMetricFamily(
            "infersight_call_table_traces",
            "Traces whose calls were re-derived because they gained spans or pairs.",
            s.traces,
        )
        yield CounterMetricFamily(
            "infersight_call_table_rows_inserted", "Rows written to call_rows.", s.rows_inserted
        )
        yield GaugeMetricFamily(
            "infersight_call_table_last_pass_seconds",
            "Duration of the last refresh pass.",
            s.last_pass_s,
        )
        yield GaugeMetricFamily(
            "infersight_call_table_wait_seconds",
            "Wait before the next refresh pass (longer than the interval after slow passes).",
            s.wait_s,
        )


def start_call_table(
    db: Database,
    registry: CollectorRegistry | None = None,
    settings: CallTableSettings | None = None,
) -> CallTableStage:
    """Start the stage on `db` and expose its metrics on `registry`."""
    stage = CallTableStage(db, settings)
    if registry is not None:
        registry.register(CallTableCollector(stage))
    stage.start()
    return stage
