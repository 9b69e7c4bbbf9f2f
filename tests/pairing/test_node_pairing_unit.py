"""`NodePairing` on its own, with a clock the test moves: what is held and for how long, what is
forwarded and emitted, overflow, the `auto` capture hold, and the flush at stop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from agent.genai.call import InferenceCall
from agent.pair.node import HeldCapture, NodePairing, NodePairingSettings, SenderOrigin

S = 1_000_000_000
MS = 1_000_000
T0 = 1_800_000_000 * S


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def app() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider.get_tracer("opentelemetry.instrumentation.openai_v2"), memory
    provider.shutdown()


def genai_span(tracer: Any, start: int, model: str = "m1", resp_id: str = "r1") -> Any:
    span = tracer.start_span(
        f"chat {model}",
        kind=SpanKind.CLIENT,
        start_time=start,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.response.id": resp_id,
            "gen_ai.usage.input_tokens": 5,
            "gen_ai.usage.output_tokens": 7,
        },
    )
    span.end(end_time=start + 100 * MS)
    return span


def request_of(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(encode_spans(spans).SerializeToString())
    return request


def names(request: ExportTraceServiceRequest) -> list[str]:
    return [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


class Sink:
    def __init__(self) -> None:
        self.forwarded: list[ExportTraceServiceRequest] = []
        self.emitted: list[HeldCapture] = []

    def forward(self, request: ExportTraceServiceRequest, n: int) -> None:
        assert n == len(names(request))
        self.forwarded.append(request)

    def emit(self, held: HeldCapture) -> None:
        self.emitted.append(held)

    def spans(self) -> list[Any]:
        return [
            s
            for r in self.forwarded
            for rs in r.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]


def pairing(clock: Clock, sink: Sink, **kw: Any) -> NodePairing:
    settings = NodePairingSettings(
        **{"hold_s": 5.0, "settle_s": 1.0, "hold_captures": "always", **kw}
    )
    p = NodePairing(settings, sink.forward, sink.emit, clock_ns=clock)
    p.capture_running = True
    return p


def capture_call(resp_id: str | None = "r1", traceparent: str | None = None) -> InferenceCall:
    return InferenceCall(
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


def test_sdk_span_is_held_for_the_window_and_no_longer(app: Any) -> None:
    tracer, memory = app
    clock, sink = Clock(), Sink()
    p = pairing(clock, sink)
    genai_span(tracer, T0 - S)
    with tracer.start_as_current_span("not genai"):
        pass
    request = request_of(list(memory.get_finished_spans()))
    assert p.take_from(request, [SenderOrigin(pid=7)]) == 1
    assert names(request) == ["not genai"]  # the rest goes on at once
    clock.now += 4 * S
    p.run_once()
    assert sink.forwarded == []
    clock.now += S
    p.run_once()
    (span,) = sink.spans()
    assert span.name == "chat m1"
    assert not any(kv.key == "infersight.source" for kv in span.attributes)
    assert p.stats().unpaired["sdk"] == 1
    assert p.stats().held == {"sdk": 0, "capture": 0}


def test_a_pair_goes_on_at_once_as_one_span(app: Any) -> None:
    tracer, memory = app
    clock, sink = Clock(), Sink()
    p = pairing(clock, sink)
    span = genai_span(tracer, T0 - S)
    ctx = span.get_span_context()
    tp = f"00-{format_trace_id(ctx.trace_id)}-{format_span_id(ctx.span_id)}-01"
    attrs = {"infersight.wire.request_body_bytes": 321, "http.response.status_code": 200}
    assert p.offer_capture(
        capture_call(traceparent=tp),
        attrs,
        "payload",
        start_unix_ns=T0 - S + 2 * MS,
        end_unix_ns=T0 - S + 90 * MS,
        pid=7,
        pod=None,
    )
    p.take_from(request_of(list(memory.get_finished_spans())), [SenderOrigin(pid=7)])
    p.run_once()
    (merged,) = sink.spans()
    assert merged.span_id == ctx.span_id.to_bytes(8, "big")
    got = {kv.key: kv.value for kv in merged.attributes}
    assert got["infersight.source"].string_value == "both"
    assert got["infersight.pair.method"].string_value == "traceparent"
    assert got["infersight.wire.request_body_bytes"].int_value == 321
    assert got["infersight.wire.duration_s"].double_value == pytest.approx(0.088)
    assert sink.emitted == []  # the capture is not exported on its own
    assert p.stats().pairs["traceparent"] == 1


def test_captures_held_only_while_sdk_spans_come_in_auto_mode(app: Any) -> None:
    tracer, memory = app
    clock, sink = Clock(), Sink()
    p = pairing(clock, sink, hold_captures="auto", active_s=60.0)
    kw: dict[str, Any] = {"start_unix_ns": T0, "end_unix_ns": T0 + MS, "pid": 1, "pod": None}
    assert not p.offer_capture(capture_call(), {}, None, **kw)
    genai_span(tracer, T0)
    p.take_from(request_of(list(memory.get_finished_spans())), [SenderOrigin()])
    assert p.offer_capture(capture_call("r2"), {}, None, **kw)
    clock.now += 61 * S
    assert not p.offer_capture(capture_call("r3"), {}, None, **kw)
    never = pairing(clock, Sink(), hold_captures="never")
    assert not never.offer_capture(capture_call(), {}, None, **kw)


def test_overflow_and_no_capture_mean_no_hold(app: Any) -> None:
    tracer, memory = app
    clock, sink = Clock(), Sink()
    p = pairing(clock, sink, max_held=2)
    for i in range(3):
        genai_span(tracer, T0, resp_id=f"r{i}")
    request = request_of(list(memory.get_finished_spans()))
    assert p.take_from(request, [SenderOrigin()]) == 2
    assert len(names(request)) == 1
    assert p.stats().overflow["sdk"] == 1
    off = pairing(clock, Sink())
    off.capture_running = False
    again = request_of(list(memory.get_finished_spans()))
    assert off.take_from(again, [SenderOrigin()]) == 0
    assert len(names(again)) == 3


def test_stop_releases_everything(app: Any) -> None:
    tracer, memory = app
    clock, sink = Clock(), Sink()
    p = pairing(clock, sink, hold_captures="always")
    genai_span(tracer, T0, model="m1", resp_id="r-sdk")
    p.take_from(request_of(list(memory.get_finished_spans())), [SenderOrigin(pid=1)])
    kw: dict[str, Any] = {"start_unix_ns": T0, "end_unix_ns": T0 + MS, "pid": 2, "pod": None}
    p.offer_capture(capture_call("r-cap"), {}, "c", **kw)
    p.start()
    p.stop()
    p.stop()  # safe twice
    assert len(sink.spans()) == 1
    assert [h.payload for h in sink.emitted] == ["c"]
    assert not p.offer_capture(capture_call("late"), {}, None, **kw)
