"""The collector's pairing pass leaves spans the node agent paired already (`source=both`)
alone: a capture that would match one exactly is not paired with it, while the same capture
does pair with an ordinary SDK span (the control)."""

from __future__ import annotations

import time

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from agent.capture.exchange import ConnectionInfo, HttpExchange, Role
from agent.genai.call import InferenceCall
from agent.otel.clock import MonoToUnix
from agent.otel.spans import SpanEmitter
from tests.conftest import CollectorProcess
from tests.relay.support import wait_for

pytestmark = pytest.mark.timeout(120)

MS = 1_000_000


def _send(collector: CollectorProcess, source: str | None, resp_id: str) -> tuple[str, str]:
    """An SDK span (marked with `source` when given) and the agent's capture of the same call
    under it, both exported to the collector; returns the SDK span's and the capture's ids."""
    exporter = OTLPSpanExporter(endpoint=f"{collector.otlp_http}/v1/traces")
    app = TracerProvider(resource=Resource({"service.name": "app"}))
    app.add_span_processor(SimpleSpanProcessor(exporter))
    start = time.time_ns() - 500 * MS
    attrs: dict[str, str | int] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m1",
        "gen_ai.response.id": resp_id,
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 7,
    }
    if source:
        attrs["infersight.source"] = source
    span = app.get_tracer("t").start_span(
        "chat m1", kind=SpanKind.CLIENT, start_time=start, attributes=attrs
    )
    ctx = span.get_span_context()
    span.end(end_time=start + 100 * MS)
    app.shutdown()

    agent = TracerProvider(resource=Resource({"service.name": "infersight-agent"}))
    agent.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{collector.otlp_http}/v1/traces"))
    )
    clock = MonoToUnix()
    off = clock.offset_ns()
    traceparent = f"00-{format_trace_id(ctx.trace_id)}-{format_span_id(ctx.span_id)}-01"
    exchange = HttpExchange(
        conn=ConnectionInfo(pid=4242, role=Role.CLIENT, peer_addr="10.0.0.5", peer_port=8000),
        method="POST",
        path="/v1/chat/completions",
        request_headers={"content-type": "application/json", "traceparent": traceparent},
        request_body=b'{"model":"m1"}',
        start_mono_ns=start + 2 * MS - off,
        request_end_mono_ns=start + 3 * MS - off,
        status=200,
        response_body=b"{}",
        first_byte_mono_ns=start + 50 * MS - off,
        end_mono_ns=start + 98 * MS - off,
    )
    call = InferenceCall(
        provider="openai",
        operation="chat",
        api="openai.chat_completions",
        request_model="m1",
        response_id=resp_id,
        input_tokens=5,
        output_tokens=7,
        http_status=200,
        traceparent=traceparent,
    )
    cap = SpanEmitter(agent.get_tracer("infersight.agent"), clock).emit(call, exchange)
    agent.shutdown()
    return format_span_id(ctx.span_id), format_span_id(cap.span_id)


def test_spans_paired_on_the_node_are_not_paired_again(collector: CollectorProcess) -> None:
    node_sdk, node_cap = _send(collector, "both", "chatcmpl-node")
    plain_sdk, plain_cap = _send(collector, None, "chatcmpl-plain")
    # the control pairs, so the pass ran over both
    assert wait_for(lambda: collector.sql("SELECT count(*) FROM span_pairs")[0][0] == 1)
    time.sleep(1.5)  # several more passes
    pairs = collector.sql("SELECT sdk_span_id, capture_span_id, method FROM span_pairs")
    assert pairs == [[plain_sdk, plain_cap, "traceparent"]]
    sources = dict(
        collector.sql(
            "SELECT span_id, source FROM spans WHERE span_id IN (?, ?)", [node_sdk, node_cap]
        )
    )
    assert sources == {node_sdk: "both", node_cap: "ebpf"}
