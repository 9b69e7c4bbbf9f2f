"""The collector's own Prometheus metrics: writer state in, a `CollectorRegistry` out.

Takes the store writer (read on every scrape, never locked) and commit observations pushed by
the writer thread; gives the registry served on `/metrics` beside the receivers' counters.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from store.writer import StoreWriter


class WriterCollector(Collector):
    """Exposes queue depth and commit totals of a `StoreWriter` at scrape time."""

    def __init__(self, writer: StoreWriter) -> None:
        self._writer = writer

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        w = self._writer
        stats = w.stats
        yield GaugeMetricFamily(
            "infersight_writer_queue_depth",
            "Export batches waiting for the writer.",
            value=w.queue_depth,
        )
        yield GaugeMetricFamily(
            "infersight_writer_queue_capacity",
            "Batches the write queue holds before 503.",
            value=w.max_queue_batches,
        )
        yield CounterMetricFamily(
            "infersight_writer_commits", "Group commits.", value=stats.commits
        )
        yield CounterMetricFamily(
            "infersight_writer_failed_commits",
            "Group commits that failed and were split.",
            value=stats.failed_commits,
        )
        yield CounterMetricFamily(
            "infersight_writer_batches_failed",
            "Export batches that could not be stored.",
            value=stats.batches_failed,
        )
        rows = CounterMetricFamily(
            "infersight_writer_rows", "Rows committed, by table.", labels=["table"]
        )
        for table, count in sorted(stats.rows_committed.items()):
            rows.add_metric([table], count)
        yield rows


class SelfMetrics:
    """The registry plus the histograms the writer feeds."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.commit_seconds = Histogram(
            "infersight_writer_commit_seconds",
            "Time to write and commit one group of export batches.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.group_batches = Histogram(
            "infersight_writer_group_batches",
            "Export batches folded into one commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.group_rows = Histogram(
            "infersight_writer_group_rows",
            "Rows in one commit.",
            buckets=(10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000),
            registry=self.registry,
        )

    def observe_commit(self, seconds: float, batches: int, rows: int) -> None:
        """Writer-thread callback after each commit."""
        self.commit_seconds.observe(seconds)
        self.group_batches.observe(batches)
        self.group_rows.observe(rows)

    def watch_writer(self, writer: StoreWriter) -> None:
        """Export the writer's gauges and counters from now on."""
        self.registry.register(WriterCollector(writer))
