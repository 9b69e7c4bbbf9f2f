"""Pairing quality as Prometheus metrics.

Takes a `PairingStage`; gives a `prometheus_client` collector that, at scrape time and without
touching the store, exposes the pairs made and the retried attempts folded per method since
start, the SDK spans and captures the last pass left unpaired within its lookback window, the
passes, failed passes and the last pass's duration.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from collector.pairing.stage import PairingStage


class PairingCollector(Collector):
    """`infersight_pairing_*` metrics of one stage."""

    def __init__(self, stage: PairingStage) -> None:
        self._stage = stage

    def collect(self) -> Iterator[Metric]:
        s = self._stage.snapshot()
        pairs = CounterMetricFamily(
            "infersight_pairing_pairs",
            "SDK spans paired with an eBPF capture, by matching method.",
            labels=["method"],
        )
        for method, n in sorted(s.pairs_by_method.items()):
            pairs.add_metric([method], n)
        yield pairs
        retries = CounterMetricFamily(
            "infersight_pairing_retries",
            "Failed attempts folded into the call that retried them, by method.",
            labels=["method"],
        )
        for method, n in sorted(s.retries_by_method.items()):
            retries.add_metric([method], n)
        yield retries
        yield GaugeMetricFamily(
            "infersight_pairing_unpaired_sdk_spans",
            "GenAI SDK client spans within the lookback window that no capture matched"
            " (llm_calls rows with source sdk, last pass).",
            value=s.unpaired_sdk,
        )
        yield GaugeMetricFamily(
            "infersight_pairing_unpaired_captures",
            "eBPF captures within the lookback window that no SDK span matched (last pass).",
            value=s.unpaired_captures,
        )
        yield CounterMetricFamily(
            "infersight_pairing_passes", "Pairing passes completed.", value=s.passes
        )
        yield CounterMetricFamily(
            "infersight_pairing_errors", "Pairing passes that failed.", value=s.errors
        )
        yield GaugeMetricFamily(
            "infersight_pairing_last_pass_seconds",
            "Duration of the last pairing pass.",
            value=s.last_pass_s,
        )
