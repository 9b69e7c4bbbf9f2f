"""GPU time and energy per call on `spans`: the agent's span attributes, sent through the real
OTel SDK and OTLP/HTTP exporter to a real collector, fill `infersight_gpu_seconds` and
`infersight_gpu_energy_j` (columns added by schema version 3)."""

from __future__ import annotations

import json

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from tests.conftest import CollectorProcess

GPU = "GPU-a1a1a1a1-0000-4000-8000-00000000000a"


def send_server_span(cp: CollectorProcess, attributes: dict[str, object]) -> str:
    provider = TracerProvider(resource=Resource.create({"service.name": "vllm"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{cp.otlp_http}/v1/traces", timeout=10))
    )
    tracer = provider.get_tracer("infersight.agent")
    with tracer.start_as_current_span(
        "chat llama-3-8b", kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        span_id = format(span.get_span_context().span_id, "016x")
    provider.shutdown()
    return span_id


def test_migration_adds_the_columns(collector: CollectorProcess) -> None:
    rows = collector.sql(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'spans' AND column_name LIKE 'infersight_gpu_%' "
        "ORDER BY column_name"
    )
    assert rows == [["infersight_gpu_energy_j", "DOUBLE"], ["infersight_gpu_seconds", "DOUBLE"]]
    assert collector.sql("SELECT name FROM infersight_schema WHERE version = 3") == [
        ["0003_gpu.sql"]
    ]


def test_attributes_reach_the_store(collector: CollectorProcess) -> None:
    span_id = send_server_span(
        collector,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "llama-3-8b",
            "infersight.gpu.seconds": 0.75,
            "infersight.gpu.energy_j": 310.0,
            "infersight.gpu.uuids": [GPU],
        },
    )
    [[attrs]] = collector.sql("SELECT attributes FROM spans WHERE span_id = ?", [span_id])
    stored = json.loads(attrs) if isinstance(attrs, str) else attrs
    assert stored["infersight.gpu.seconds"] == 0.75
    assert stored["infersight.gpu.energy_j"] == 310.0
    assert stored["infersight.gpu.uuids"] == [GPU]


def test_decoder_fills_the_gpu_columns(collector: CollectorProcess) -> None:
    span_id = send_server_span(
        collector,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "llama-3-8b",
            "infersight.gpu.seconds": 0.75,
            "infersight.gpu.energy_j": 310.0,
            "infersight.gpu.uuids": [GPU],
        },
    )
    other = send_server_span(
        collector, {"gen_ai.operation.name": "chat", "infersight.gpu.seconds": "not a number"}
    )
    rows = collector.sql(
        "SELECT span_id, infersight_gpu_seconds, infersight_gpu_energy_j "
        "FROM spans ORDER BY span_id"
    )
    got = {r[0]: (r[1], r[2]) for r in rows}
    assert got[span_id] == (0.75, 310.0)
    assert got[other] == (None, None)
