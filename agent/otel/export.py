"""The agent's tracer and meter providers and their OTLP exporters.

Takes in: where to send (`ExportSettings`: an endpoint URL or nothing, a protocol or `auto`) and
the node's resource attributes. Gives out: `Telemetry` with an SDK `TracerProvider` (batch span
processor, every span recorded whatever the caller's sampling flag: the agent reports what
happened on the wire) and `MeterProvider` (periodic OTLP export, the GenAI bucket views), and
`flush()` / `shutdown()` (both safe twice).

Protocol choice: an explicit protocol wins; otherwise a `grpc://`/`grpcs://` URL or port 4317
means OTLP/gRPC, anything else OTLP/HTTP (protobuf). With no endpoint at all the exporters read
the standard `OTEL_EXPORTER_OTLP_*` variables themselves (endpoint, headers, certificates,
timeout, compression), and `OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL` picks the protocol.
Tests may pass their own span exporter and metric readers.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from agent.otel.metrics import genai_views

log = logging.getLogger(__name__)

GRPC: Final = "grpc"
HTTP: Final = "http/protobuf"
PROTOCOLS: Final = ("auto", GRPC, HTTP)
SCOPE: Final = "infersight.agent"


@dataclass(frozen=True)
class ExportSettings:
    """Where and how the agent exports."""

    endpoint: str | None = None
    protocol: str = "auto"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    metric_interval_s: float | None = None


@dataclass(frozen=True)
class Target:
    """A resolved export target: protocol and the endpoints of each signal (None: from env)."""

    protocol: str
    traces: str | None
    metrics: str | None
    insecure: bool | None = None


def _env_protocol(signal: str) -> str | None:
    for key in (f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = os.environ.get(key, "").strip().lower()
        if value:
            return value
    return None


def resolve_target(settings: ExportSettings, signal: str = "TRACES") -> Target:
    """Which protocol and endpoint one signal (`TRACES` or `METRICS`) is exported with."""
    protocol = settings.protocol.lower()
    endpoint = settings.endpoint
    if endpoint is None:
        chosen = protocol if protocol != "auto" else (_env_protocol(signal) or HTTP)
        # "http/json" is not offered by the Python exporters; protobuf is the closest.
        return Target(GRPC if chosen == GRPC else HTTP, None, None)
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    scheme = parts.scheme.lower()
    if protocol == "auto":
        protocol = GRPC if scheme in ("grpc", "grpcs") or parts.port == 4317 else HTTP
    if protocol == GRPC:
        secure = scheme in ("https", "grpcs")
        url = urlunsplit(("https" if secure else "http", parts.netloc, "", "", ""))
        return Target(GRPC, url, url, insecure=not secure)
    base = urlunsplit(
        (
            scheme if scheme in ("http", "https") else "http",
            parts.netloc,
            parts.path.rstrip("/"),
            "",
            "",
        )
    )
    for suffix in ("/v1/traces", "/v1/metrics"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return Target(HTTP, f"{base}/v1/traces", f"{base}/v1/metrics")


def make_span_exporter(settings: ExportSettings) -> SpanExporter:
    """The OTLP span exporter for these settings."""
    target = resolve_target(settings, "TRACES")
    headers = dict(settings.headers) or None
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(
            endpoint=target.traces,
            insecure=target.insecure,
            headers=headers,
            timeout=settings.timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=target.traces, headers=headers, timeout=settings.timeout_s)


def make_metric_exporter(settings: ExportSettings) -> MetricExporter:
    """The OTLP metric exporter for these settings."""
    target = resolve_target(settings, "METRICS")
    headers = dict(settings.headers) or None
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return GrpcMetricExporter(
            endpoint=target.metrics,
            insecure=target.insecure,
            headers=headers,
            timeout=settings.timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(endpoint=target.metrics, headers=headers, timeout=settings.timeout_s)


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter and counts the spans it delivered and the ones it failed to deliver."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            log.exception("span export raised")
            result = SpanExportResult.FAILURE
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class Telemetry:
    """The agent's tracer and meter providers (one of each for the whole node)."""

    def __init__(
        self,
        settings: ExportSettings,
        resource: Resource,
        *,
        span_exporter: SpanExporter | None = None,
        metric_readers: Sequence[MetricReader] | None = None,
    ) -> None:
        if metric_readers is None:
            interval_ms = (
                settings.metric_interval_s * 1000
                if settings.metric_interval_s is not None
                else None
            )
            metric_readers = [
                PeriodicExportingMetricReader(
                    make_metric_exporter(settings), export_interval_millis=interval_ms
                )
            ]
        self.meter_provider = MeterProvider(
            metric_readers=metric_readers,
            resource=resource,
            views=genai_views(),
            shutdown_on_exit=False,
        )
        self.spans = CountingSpanExporter(span_exporter or make_span_exporter(settings))
        self.tracer_provider = TracerProvider(
            resource=resource, sampler=ALWAYS_ON, shutdown_on_exit=False
        )
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(self.spans, meter_provider=self.meter_provider)
        )
        self.tracer = self.tracer_provider.get_tracer(SCOPE)
        self.meter = self.meter_provider.get_meter(SCOPE)
        self._closed = False
        self._lock = threading.Lock()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Export what is pending now; False when an export did not finish in time."""
        ok = self.tracer_provider.force_flush(int(timeout_s * 1000))
        return bool(self.meter_provider.force_flush(int(timeout_s * 1000))) and ok

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Flush and close both providers (safe twice)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Spans first: the span processor records its own metrics on the meter provider.
        self.tracer_provider.force_flush(int(timeout_s * 1000))
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown(timeout_millis=timeout_s * 1000)
