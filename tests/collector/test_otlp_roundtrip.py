"""Round trips through both OTLP receivers with the real OpenTelemetry SDK exporters.

Spans, metrics (gauge, sum, histogram, exponential histogram from the SDK; summary, which the
SDK cannot produce, as a raw protobuf export) and logs go out over OTLP/HTTP (plain and gzip)
and OTLP/gRPC; the rows in DuckDB must equal what the SDK recorded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest
import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExportResult,
    NumberDataPoint,
)
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode

from collector.genai.normalize import normalize_span
from store.schema import GENAI_COLUMNS
from tests.collector.otlp_support import Receivers, running_receivers

BIG_INT = 2**62 + 7  # exact only if int64 survives the trip as an integer


@pytest.fixture(scope="module")
def rx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    with running_receivers(tmp_path_factory.mktemp("roundtrip") / "store.duckdb") as r:
        yield r


def _resource(service: str) -> Resource:
    return Resource.create(
        {
            "service.name": service,
            "k8s.namespace.name": "ml",
            "k8s.pod.name": f"{service}-pod",
            "k8s.node.name": "node-7",
            "deployment.replicas": 3,
        }
    )


def _jsonable(value: Any) -> Any:
    """What an SDK attribute value looks like once stored as JSON."""
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _attrs(mapping: Any) -> dict[str, Any]:
    return {k: _jsonable(v) for k, v in dict(mapping or {}).items()}


# -- spans ---------------------------------------------------------------------------------

TRANSPORTS = ["http", "http_gzip", "grpc", "grpc_gzip"]


def _span_exporter(rx: Receivers, transport: str) -> HttpSpans | GrpcSpans:
    if transport.startswith("http"):
        comp = HttpCompression.Gzip if transport.endswith("gzip") else HttpCompression.NoCompression
        return HttpSpans(endpoint=f"{rx.http_url}/v1/traces", compression=comp, timeout=20)
    gcomp = grpc.Compression.Gzip if transport.endswith("gzip") else grpc.Compression.NoCompression
    return GrpcSpans(endpoint=rx.grpc_target, insecure=True, compression=gcomp, timeout=20)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_spans_round_trip(rx: Receivers, transport: str) -> None:
    service = f"spans-{transport}"
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=_resource(service))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(_span_exporter(rx, transport)))
    tracer = provider.get_tracer("roundtrip.tests", "1.2.3")
    linked = SpanContext(0xABCDEF0123456789ABCDEF0123456789, 0x1122334455667788, is_remote=True)
    with tracer.start_as_current_span("handle request", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/v1/chat")
        with tracer.start_as_current_span(
            "chat gpt-test",
            kind=SpanKind.CLIENT,
            links=[Link(linked, {"link.reason": "retry", "link.n": 2})],
        ) as child:
            child.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-test",
                    "gen_ai.usage.input_tokens": 1234,
                    "big.int": BIG_INT,
                    "neg.int": -5,
                    "ratio": 0.25,
                    "flag": True,
                    "words": ["a", "b", "ü"],
                    "ints": [1, 2, BIG_INT],
                    "floats": [0.5, 1.5],
                    "bools": [True, False],
                    "infersight.source": "ebpf",
                }
            )
            child.add_event(
                "gen_ai.content.completion.chunk",
                {"index": 0, "text": "Hi"},
                timestamp=1_700_000_000_123_456_789,
            )
            child.set_status(Status(StatusCode.ERROR, "upstream 500"))
        with tracer.start_as_current_span("ok step") as ok:
            ok.set_status(Status(StatusCode.OK))
    provider.shutdown()

    sent = memory.get_finished_spans()
    assert len(sent) == 3
    stored = {
        row[1]: row
        for row in rx.rows(
            "SELECT trace_id, span_id, parent_span_id, name, kind, start_unix_ns, end_unix_ns,"
            " duration_s, status_code, status_message, scope_name, scope_version, attributes,"
            " resource, events, links, service_name, k8s_namespace, k8s_pod, k8s_node, source,"
            " epoch_ns(start_time), epoch_ns(end_time), received_time IS NOT NULL"
            " FROM spans WHERE service_name = ?",
            [service],
        )
    }
    assert len(stored) == 3
    kinds = {SpanKind.SERVER: "server", SpanKind.CLIENT: "client", SpanKind.INTERNAL: "internal"}
    codes = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}
    for span in sent:
        ctx = span.get_span_context()
        assert ctx is not None
        row = stored[f"{ctx.span_id:016x}"]
        assert row[0] == f"{ctx.trace_id:032x}"
        assert row[2] == (f"{span.parent.span_id:016x}" if span.parent else None)
        assert row[3] == span.name
        assert row[4] == kinds[span.kind]
        assert (row[5], row[6]) == (span.start_time, span.end_time)
        assert span.start_time is not None
        assert span.end_time is not None
        # TIMESTAMPTZ keeps microseconds; the *_unix_ns columns keep the nanoseconds.
        assert (row[21], row[22]) == (span.start_time // 1000 * 1000, span.end_time // 1000 * 1000)
        assert math.isclose(row[7], (span.end_time - span.start_time) / 1e9)
        assert row[8] == codes[span.status.status_code]
        assert row[9] == span.status.description
        assert (row[10], row[11]) == ("roundtrip.tests", "1.2.3")
        assert json.loads(row[12]) == _attrs(span.attributes)
        assert json.loads(row[13]) == _attrs(span.resource.attributes)
        assert json.loads(row[14]) == [
            {"name": e.name, "time_unix_nano": e.timestamp, "attributes": _attrs(e.attributes)}
            for e in span.events
        ]
        assert json.loads(row[15]) == [
            {
                "trace_id": f"{ln.context.trace_id:032x}",
                "span_id": f"{ln.context.span_id:016x}",
                "attributes": _attrs(ln.attributes),
                # W3C flags plus "has is_remote" (0x100) and "is remote" (0x200).
                "flags": 0x300 | int(ln.context.trace_flags),
            }
            for ln in span.links
        ]
        assert row[16:20] == (service, "ml", f"{service}-pod", "node-7")
        assert row[20] == ("ebpf" if span.name == "chat gpt-test" else "sdk")
        assert row[23] is True
    # int64 exactness, checked in SQL too: DuckDB reads the JSON number as a BIGINT.
    exact = rx.rows(
        "SELECT CAST(attributes->>'$.\"big.int\"' AS BIGINT) FROM spans"
        " WHERE service_name = ? AND name = 'chat gpt-test'",
        [service],
    )
    assert exact == [(BIG_INT,)]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_span_genai_columns_follow_normalization(rx: Receivers, transport: str) -> None:
    """Whatever `normalize_span` makes of a span is what the GenAI columns hold."""
    service = f"genai-{transport}"
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=_resource(service))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(_span_exporter(rx, transport)))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 34,
                "gen_ai.response.finish_reasons": ["stop"],
                "server.address": "api.openai.com",
                "server.port": 443,
            }
        )
    provider.shutdown()
    (sent,) = memory.get_finished_spans()
    expected = normalize_span(
        _attrs(sent.attributes), sent.name, [(e.name, _attrs(e.attributes)) for e in sent.events]
    )
    cols = ", ".join(GENAI_COLUMNS)
    (row,) = rx.rows(f"SELECT {cols} FROM spans WHERE service_name = ?", [service])
    got = dict(zip(GENAI_COLUMNS, row, strict=True))
    if expected is None:
        assert all(v is None for v in got.values()), got
    else:
        assert got["gen_ai_dialect"] == expected.dialect
        for name, value in expected.columns.items():
            if name in got and name != "gen_ai_dialect":
                assert got[name] == value, name


# -- metrics -------------------------------------------------------------------------------


def _record_metrics(service: str) -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=_resource(service),
        metric_readers=[reader],
        views=[
            View(
                instrument_name="exp.latency",
                aggregation=ExponentialBucketHistogramAggregation(max_size=20),
            ),
            View(
                instrument_name="req.latency",
                aggregation=ExplicitBucketHistogramAggregation(boundaries=[0.1, 0.5, 1.0, 5.0]),
            ),
        ],
    )
    meter = provider.get_meter("roundtrip.metrics", "0.1")
    counter = meter.create_counter("req.count", unit="{request}", description="Requests.")
    updown = meter.create_up_down_counter("queue.depth")
    hist = meter.create_histogram("req.latency", unit="s")
    exp = meter.create_histogram("exp.latency", unit="s")

    def observe(_options: CallbackOptions) -> Sequence[Observation]:
        return [Observation(71.5, {"gpu": "0"}), Observation(42.0, {"gpu": "1"})]

    meter.create_observable_gauge("gpu.temp", callbacks=[observe], unit="Cel")
    counter.add(3, {"route": "/a"})
    counter.add(BIG_INT, {"route": "/b"})
    updown.add(5)
    updown.add(-7)
    for v in (0.05, 0.2, 0.3, 0.7, 2.0, 9.0):
        hist.record(v, {"model": "m1"})
    for v in (0.001, 0.01, 0.1, 1.0, 10.0, 0.0):
        exp.record(v)
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def _summary_request(service: str) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = service
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = "legacy.latency"
    metric.unit = "ms"
    point = metric.summary.data_points.add()
    point.start_time_unix_nano = 1_700_000_000_000_000_000
    point.time_unix_nano = 1_700_000_010_000_000_000
    point.count = 17
    point.sum = 123.5
    for q, v in ((0.0, 1.0), (0.5, 6.5), (0.99, 30.25), (1.0, 31.0)):
        qv = point.quantile_values.add()
        qv.quantile = q
        qv.value = v
    point.attributes.add(key="route").value.string_value = "/s"
    return req


def _send_summary(rx: Receivers, transport: str, req: ExportMetricsServiceRequest) -> None:
    if transport == "http":
        resp = requests.post(
            f"{rx.http_url}/v1/metrics",
            data=req.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=20,
        )
        assert resp.status_code == 200, resp.content
        assert resp.headers["content-type"] == "application/x-protobuf"
        assert not ExportMetricsServiceResponse.FromString(resp.content).HasField("partial_success")
        return
    with grpc.insecure_channel(rx.grpc_target) as channel:
        call = channel.unary_unary(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            request_serializer=ExportMetricsServiceRequest.SerializeToString,
            response_deserializer=ExportMetricsServiceResponse.FromString,
        )
        response = call(req, timeout=20)
        assert not response.HasField("partial_success")


def _metric_rows(rx: Receivers, service: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    rows = rx.rows(
        "SELECT metric_name, attributes, metric_type, temporality, is_monotonic, value, count,"
        " sum, min, max, bucket_counts, explicit_bounds, exp_scale, exp_zero_count,"
        " exp_positive_offset, exp_positive_bucket_counts, exp_negative_offset,"
        " exp_negative_bucket_counts, quantiles, quantile_values, time_unix_ns,"
        " epoch_ns(start_time), unit, description, scope_name, resource, k8s_pod"
        " FROM metric_points WHERE service_name = ?",
        [service],
    )
    return {(r[0], json.dumps(json.loads(r[1]), sort_keys=True)): r for r in rows}


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_metrics_round_trip_all_point_types(rx: Receivers, transport: str) -> None:
    service = f"metrics-{transport}"
    data = _record_metrics(service)
    exporter: HttpMetrics | GrpcMetrics
    if transport == "http":
        exporter = HttpMetrics(endpoint=f"{rx.http_url}/v1/metrics", timeout=20)
    else:
        exporter = GrpcMetrics(endpoint=rx.grpc_target, insecure=True, timeout=20)
    assert exporter.export(data) == MetricExportResult.SUCCESS
    exporter.shutdown()
    summary = _summary_request(service)
    _send_summary(rx, transport, summary)

    rows = _metric_rows(rx, service)
    seen = 0
    types_seen = set()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    key = (metric.name, json.dumps(_attrs(p.attributes), sort_keys=True))
                    row = rows[key]
                    seen += 1
                    types_seen.add(row[2])
                    assert row[20] == p.time_unix_nano
                    start = p.start_time_unix_nano  # None for SDK gauges
                    assert row[21] == (start // 1000 * 1000 if start else None)
                    assert row[22] == (metric.unit or None)
                    assert row[23] == (metric.description or None)
                    assert row[24] == "roundtrip.metrics"
                    assert json.loads(row[25])["service.name"] == service
                    assert row[26] == f"{service}-pod"
                    if isinstance(p, NumberDataPoint):
                        assert row[5] == float(p.value)
                        if metric.name == "gpu.temp":
                            assert (row[2], row[3], row[4]) == ("gauge", None, None)
                        else:
                            assert (row[2], row[3]) == ("sum", "cumulative")
                            assert row[4] is metric.data.is_monotonic
                    elif isinstance(p, HistogramDataPoint):
                        assert (row[2], row[3]) == ("histogram", "cumulative")
                        assert (row[6], row[7], row[8], row[9]) == (p.count, p.sum, p.min, p.max)
                        assert row[10] == list(p.bucket_counts)
                        assert row[11] == list(p.explicit_bounds)
                        assert row[11] == [0.1, 0.5, 1.0, 5.0]
                        assert row[10] == [1, 2, 1, 1, 1]
                    else:
                        assert isinstance(p, ExponentialHistogramDataPoint)
                        assert (row[2], row[3]) == ("exponential_histogram", "cumulative")
                        assert (row[6], row[7], row[8], row[9]) == (p.count, p.sum, p.min, p.max)
                        assert row[12] == p.scale
                        assert row[13] == p.zero_count == 1
                        assert row[14] == p.positive.offset
                        assert row[15] == list(p.positive.bucket_counts)
                        assert row[16] == p.negative.offset
                        assert row[17] == list(p.negative.bucket_counts)
                        assert sum(row[15]) == 5
                        assert row[8] == 0.0
                        assert row[9] == 10.0
    assert types_seen == {"gauge", "sum", "histogram", "exponential_histogram"}
    big = rows[("req.count", json.dumps({"route": "/b"}))]
    assert big[5] == float(BIG_INT)

    (srow,) = [r for (name, _), r in rows.items() if name == "legacy.latency"]
    point = summary.resource_metrics[0].scope_metrics[0].metrics[0].summary.data_points[0]
    assert srow[2] == "summary"
    assert (srow[6], srow[7]) == (17, 123.5)
    assert srow[18] == [0.0, 0.5, 0.99, 1.0]
    assert srow[19] == [1.0, 6.5, 30.25, 31.0]
    assert (srow[20], srow[21]) == (point.time_unix_nano, point.start_time_unix_nano)
    assert point.start_time_unix_nano % 1000 == 0
    assert len(rows) == seen + 1


# -- logs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_logs_round_trip(rx: Receivers, transport: str) -> None:
    service = f"logs-{transport}"
    memory = InMemoryLogRecordExporter()
    exporter: HttpLogs | GrpcLogs
    if transport == "http":
        exporter = HttpLogs(endpoint=f"{rx.http_url}/v1/logs", timeout=20)
    else:
        exporter = GrpcLogs(endpoint=rx.grpc_target, insecure=True, timeout=20)
    provider = LoggerProvider(resource=_resource(service))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("roundtrip.logs")
    span_ctx = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=trace.TraceFlags(1),
    )
    ctx = trace.set_span_in_context(NonRecordingSpan(span_ctx))
    from opentelemetry._logs import SeverityNumber

    logger.emit(
        timestamp=1_700_000_000_000_000_001,
        observed_timestamp=1_700_000_000_000_000_999,
        context=ctx,
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        body={"message": "cache miss", "keys": [1, BIG_INT], "nested": {"ok": False}},
        attributes={"cache.name": "kv", "attempt": 2},
        event_name="cache.miss",
    )
    logger.emit(
        body="plain text line",
        severity_number=SeverityNumber.INFO,
        attributes={"event.name": "from.attribute"},
    )
    provider.shutdown()

    sent = memory.get_finished_logs()
    assert len(sent) == 2
    rows = rx.rows(
        "SELECT time_unix_ns, epoch_ns(observed_time), severity_number, severity_text,"
        " event_name, body, attributes, trace_id, span_id, flags, scope_name, resource,"
        " k8s_namespace FROM log_records WHERE service_name = ? ORDER BY event_name",
        [service],
    )
    assert len(rows) == 2
    first, second = rows
    rec = next(r.log_record for r in sent if r.log_record.event_name == "cache.miss")
    assert first[0] == rec.timestamp == 1_700_000_000_000_000_001
    assert first[1] == 1_700_000_000_000_000_000  # TIMESTAMPTZ: microseconds
    assert (first[2], first[3], first[4]) == (13, "WARN", "cache.miss")
    assert json.loads(first[5]) == _jsonable(rec.body)
    assert json.loads(first[6]) == _attrs(rec.attributes)
    assert (first[7], first[8]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert first[9] == 1
    assert first[10] == "roundtrip.logs"
    assert json.loads(first[11])["service.name"] == service
    assert first[12] == "ml"
    # The second record has no timestamp: time falls back to the observed time.
    rec2 = next(r.log_record for r in sent if r.log_record.event_name != "cache.miss")
    assert second[0] == rec2.observed_timestamp
    assert second[4] == "from.attribute"
    assert json.loads(second[5]) == "plain text line"
    assert (second[7], second[8]) == (None, None)
