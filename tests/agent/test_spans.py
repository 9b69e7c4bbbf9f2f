"""Span and metric building: captured exchange -> parsed call -> SDK span and GenAI histograms.

Exchanges go through the real provider parsers and the real OpenTelemetry SDK (tracer provider
with the in-memory span exporter, meter provider with the in-memory metric reader); the clock
conversion runs on injected clocks so that every wire time can be checked to the nanosecond.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, StatusCode

from agent.capture.exchange import HttpExchange, Role
from agent.genai import registry
from agent.genai.call import InferenceCall
from agent.k8s.resolver import Workload
from agent.otel.clock import MonoToUnix
from agent.otel.metrics import DURATION_BUCKETS_S, TTFT_BUCKETS_S, GenAiMetrics, genai_views
from agent.otel.spans import SpanEmitter, parent_context, span_name
from tests.agent.exchanges import MS, START_MONO_NS, chat_exchange

OFFSET_NS = 1_700_000_000_000_000_000 - START_MONO_NS  # wall = mono + this, exactly
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@dataclass
class Env:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    emitter: SpanEmitter
    metrics: GenAiMetrics

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def histograms(self) -> dict[str, list[HistogramDataPoint]]:
        data = self.reader.get_metrics_data()
        out: dict[str, list[HistogramDataPoint]] = {}
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = [
                        p for p in m.data.data_points if isinstance(p, HistogramDataPoint)
                    ]
        return out


class FakeClocks:
    """Monotonic and wall clocks that move together, with a fixed offset."""

    def __init__(self) -> None:
        self.mono_ns = START_MONO_NS
        self.offset_ns = OFFSET_NS

    def mono(self) -> int:
        return self.mono_ns

    def wall(self) -> int:
        return self.mono_ns + self.offset_ns


@pytest.fixture
def env() -> Iterator[Env]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(sampler=ALWAYS_ON)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], views=genai_views())
    clocks = FakeClocks()
    clock = MonoToUnix(10.0, wall_ns=clocks.wall, mono_ns=clocks.mono)
    yield Env(
        exporter, reader, SpanEmitter(tp.get_tracer("t"), clock), GenAiMetrics(mp.get_meter("t"))
    )
    tp.shutdown()
    mp.shutdown()


def _parse(ex: HttpExchange, mode: str = "off") -> InferenceCall:
    call = registry.parse_exchange(ex, mode)
    assert call is not None
    return call


def _record(
    env: Env, ex: HttpExchange, workload: Workload | None = None, mode: str = "off"
) -> ReadableSpan:
    call = _parse(ex, mode)
    env.emitter.emit(call, ex, workload)
    env.metrics.record(call, ex.conn.role, workload)
    spans = env.finished()
    return spans[-1]


def test_client_call_becomes_a_client_span_with_wire_times_and_genai_attributes(env: Env) -> None:
    ex = chat_exchange(role=Role.CLIENT, stream=False)
    span = _record(env, ex)
    assert span.name == "chat gpt-4o"
    assert span.kind is SpanKind.CLIENT
    assert span.start_time == START_MONO_NS + OFFSET_NS
    assert span.end_time == START_MONO_NS + 401 * MS + OFFSET_NS
    assert span.status.status_code is StatusCode.UNSET
    a: dict[str, Any] = dict(span.attributes or {})
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert a["gen_ai.response.id"] == "chatcmpl-42"
    assert a["gen_ai.usage.input_tokens"] == 17
    assert a["gen_ai.usage.output_tokens"] == 3
    assert a["gen_ai.usage.cache_read.input_tokens"] == 8
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.request.stream"] is False
    assert "gen_ai.response.time_to_first_chunk" not in a
    assert a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.request.max_tokens"] == 64
    assert a["server.address"] == "api.example.test"
    assert a["server.port"] == 8000
    assert a["http.request.method"] == "POST"
    assert a["http.response.status_code"] == 200
    assert a["url.path"] == "/v1/chat/completions"
    assert a["network.peer.address"] == "10.0.0.9"
    assert a["process.pid"] == 4242
    assert a["thread.id"] == 4243
    assert a["process.executable.name"] == "python3"
    assert a["infersight.source"] == "ebpf"
    assert a["infersight.api"] == "openai.chat_completions"
    assert a["infersight.comm"] == "python3"
    assert a["infersight.tls"] is False
    assert a["infersight.truncated"] is False
    assert a["infersight.request_id"] == "req_abc"
    assert a["infersight.wire.request_body_bytes"] == len(ex.request_body)
    assert a["infersight.wire.response_body_bytes"] == len(ex.response_body)
    assert a["infersight.wire.time_to_first_byte_s"] == pytest.approx(0.4)
    # no content unless asked for
    assert not any(
        k.startswith("gen_ai.input") or k.startswith("gen_ai.output.messages") for k in a
    )
    # no traceparent: a new trace, no parent
    assert span.parent is None


def test_server_side_streaming_call(env: Env) -> None:
    ex = chat_exchange(role=Role.SERVER, stream=True, pid=777, comm="vllm")
    span = _record(env, ex)
    assert span.kind is SpanKind.SERVER
    assert span.start_time == START_MONO_NS + OFFSET_NS
    assert span.end_time == START_MONO_NS + 344 * MS + OFFSET_NS
    a: dict[str, Any] = dict(span.attributes or {})
    assert a["gen_ai.request.stream"] is True
    # the first chunk that carried output ("Hello") arrived 250 ms after the request began
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.250)
    assert a["gen_ai.usage.output_tokens"] == 3
    assert a["client.address"] == "10.0.0.5"
    assert a["client.port"] == 51000
    assert a["infersight.wire.stream_events"] == 7
    hist = env.histograms()
    assert "gen_ai.client.operation.duration" not in hist
    (duration,) = hist["gen_ai.server.request.duration"]
    assert duration.count == 1
    assert duration.sum == pytest.approx(0.344)
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS_S
    (ttft,) = hist["gen_ai.server.time_to_first_token"]
    assert ttft.sum == pytest.approx(0.250)
    assert tuple(ttft.explicit_bounds) == TTFT_BUCKETS_S
    (tpot,) = hist["gen_ai.server.time_per_output_token"]
    assert tpot.sum == pytest.approx((0.344 - 0.250) / 2)
    assert dict(ttft.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "server.address": "api.example.test",
        "server.port": 8000,
    }


def test_client_metrics(env: Env) -> None:
    _record(env, chat_exchange(role=Role.CLIENT, stream=True))
    _record(env, chat_exchange(role=Role.CLIENT, stream=False))
    hist = env.histograms()
    (duration,) = hist["gen_ai.client.operation.duration"]
    assert duration.count == 2
    assert duration.sum == pytest.approx(0.344 + 0.401)
    tokens = {p.attributes["gen_ai.token.type"]: p for p in hist["gen_ai.client.token.usage"]}
    assert tokens["input"].sum == 34
    assert tokens["input"].count == 2
    assert tokens["output"].sum == 6
    (ttfc,) = hist["gen_ai.client.operation.time_to_first_chunk"]
    assert ttfc.count == 1
    assert ttfc.sum == pytest.approx(0.250)
    (tpoc,) = hist["gen_ai.client.operation.time_per_output_chunk"]
    # gaps between the three output chunks: 40 ms and 50 ms
    assert tpoc.count == 2
    assert tpoc.sum == pytest.approx(0.090)
    assert "gen_ai.server.request.duration" not in hist


def test_traceparent_makes_the_span_a_child_of_the_caller(env: Env) -> None:
    for role in (Role.CLIENT, Role.SERVER):
        ex = chat_exchange(role=role, traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01")
        span = _record(env, ex)
        assert span.context is not None
        assert f"{span.context.trace_id:032x}" == TRACE_ID
        assert span.parent is not None
        assert f"{span.parent.span_id:016x}" == PARENT_ID
        assert span.parent.is_remote
        assert span.context.span_id != int(PARENT_ID, 16)


def test_unsampled_caller_is_still_recorded(env: Env) -> None:
    ex = chat_exchange(traceparent=f"00-{TRACE_ID}-{PARENT_ID}-00")
    span = _record(env, ex)
    assert span.context is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID


def test_parent_context_rejects_invalid_values() -> None:
    assert parent_context(None) is None
    assert parent_context("garbage") is None
    assert parent_context(f"00-{'0' * 32}-{PARENT_ID}-01") is None
    assert parent_context(f"00-{TRACE_ID}-zz-01") is None


def test_error_response_sets_error_status_and_type(env: Env) -> None:
    span = _record(env, chat_exchange(status=503))
    assert span.status.status_code is StatusCode.ERROR
    a: dict[str, Any] = dict(span.attributes or {})
    assert a["error.type"] == span.status.description
    assert a["http.response.status_code"] == 503
    (duration,) = env.histograms()["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == a["error.type"]


def test_content_only_when_enabled_and_as_json(env: Env) -> None:
    span = _record(env, chat_exchange(), mode="full")
    a: dict[str, Any] = dict(span.attributes or {})
    inputs = json.loads(a["gen_ai.input.messages"])
    outputs = json.loads(a["gen_ai.output.messages"])
    # OpenAI chat keeps its system message among the input messages (the parser's choice)
    assert inputs == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Say hello to my friend"}]},
    ]
    assert "gen_ai.system_instructions" not in a
    assert outputs[0]["role"] == "assistant"
    assert outputs[0]["parts"] == [{"type": "text", "content": "Hello there friend"}]
    assert outputs[0]["finish_reason"] == "stop"
    meta = _record(env, chat_exchange(), mode="metadata")
    m: dict[str, Any] = dict(meta.attributes or {})
    assert "Hello there friend" not in m["gen_ai.output.messages"]
    assert "Say hello" not in m["gen_ai.input.messages"]


def test_kubernetes_and_process_attributes_come_from_the_workload(env: Env) -> None:
    workload = Workload(
        pid=4242,
        comm="python3",
        executable="python3.11",
        container_id="a" * 64,
        pod_uid="0d5f0e5c-1111-2222-3333-444455556666",
        namespace="inference",
        pod="chatbot-7d9f",
        container="app",
    )
    span = _record(env, chat_exchange(tls=True), workload)
    a: dict[str, Any] = dict(span.attributes or {})
    assert a["k8s.namespace.name"] == "inference"
    assert a["k8s.pod.name"] == "chatbot-7d9f"
    assert a["k8s.pod.uid"] == "0d5f0e5c-1111-2222-3333-444455556666"
    assert a["k8s.container.name"] == "app"
    assert a["container.id"] == "a" * 64
    assert a["process.executable.name"] == "python3.11"
    assert a["infersight.tls"] is True
    (duration,) = env.histograms()["gen_ai.client.operation.duration"]
    assert duration.attributes["k8s.pod.name"] == "chatbot-7d9f"
    assert duration.attributes["k8s.namespace.name"] == "inference"


def test_span_name_falls_back_to_the_response_model_then_the_operation() -> None:
    call = InferenceCall(provider="openai", operation="chat", api="x")
    assert span_name(call) == "chat"
    call.response_model = "served-model"
    assert span_name(call) == "chat served-model"
    call.request_model = "asked-model"
    assert span_name(call) == "chat asked-model"


def test_clock_offset_is_measured_and_refreshed() -> None:
    clocks = FakeClocks()
    clock = MonoToUnix(1.0, wall_ns=clocks.wall, mono_ns=clocks.mono)
    assert clock.to_unix_ns(START_MONO_NS + 5) == START_MONO_NS + 5 + OFFSET_NS
    assert clock.measurements == 1
    clocks.offset_ns += 3_000_000  # the wall clock is stepped by 3 ms
    clocks.mono_ns += 500_000_000
    assert clock.offset_ns() == OFFSET_NS  # not stale yet
    clocks.mono_ns += 600_000_000
    assert clock.offset_ns() == OFFSET_NS + 3_000_000
    assert clock.measurements == 2


def test_real_clocks_agree_with_time_module() -> None:
    import time

    clock = MonoToUnix()
    mono = time.monotonic_ns()
    wall = time.time_ns()
    assert abs(clock.to_unix_ns(mono) - wall) < 2_000_000
