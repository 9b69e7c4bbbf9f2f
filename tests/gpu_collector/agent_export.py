"""The agent's GPU metric path, as the agent runs it: `GpuMetrics` on a real OTel SDK
`MeterProvider` whose reader exports through the real OTLP/HTTP metric exporter.

`collect()` is one collection of the agent's metric reader: every series the agent holds is
exported once, with one timestamp, and the call returns after the collector acknowledged it
(the collector acknowledges after its commit, so the rows are queryable right away).
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from agent.gpu.metrics import GpuMetrics
from agent.gpu.types import GpuRecord


class AgentGpuExport:
    """GpuMetrics -> OTel SDK -> OTLP/HTTP -> a collector."""

    def __init__(self, otlp_http: str, node_name: str) -> None:
        self.exporter = OTLPMetricExporter(endpoint=f"{otlp_http}/v1/metrics", timeout=10)
        # exports only when told to: each collect() is one agent collection
        self.reader = PeriodicExportingMetricReader(self.exporter, export_interval_millis=3_600_000)
        resource = Resource.create({"service.name": "infersight-agent", "k8s.node.name": node_name})
        self.provider = MeterProvider(metric_readers=[self.reader], resource=resource)
        self.metrics = GpuMetrics(
            self.provider.get_meter("infersight.agent.gpu"), node_name=node_name, dropped=lambda: 0
        )
        self._closed = False

    def collect(self, records: list[GpuRecord] | None = None) -> None:
        if records:
            self.metrics.record_all(records)
        assert self.provider.force_flush(timeout_millis=20_000), "export did not complete"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.provider.shutdown()
