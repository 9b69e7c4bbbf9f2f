"""Retried calls through a real collector: the failed attempts are folded into their call, so
`llm_calls` has one row per logical call with `attempts` counting its wire exchanges.

Captures are made by the agent's own `SpanEmitter` (so they carry the request digest it
computes), SDK spans by the OTel SDK; both go to the collector over OTLP/HTTP. Cases: an
instrumented call without trace context whose first attempt got a 429 (folded by digest into
the SDK span, paired by response id); an uninstrumented call retried twice; an uninstrumented
call whose every attempt failed; a 429 followed by a different request (two calls); and a
failed attempt that reaches the collector only after its call was paired.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from agent.capture.exchange import ConnectionInfo, HttpExchange, Role
from agent.genai.call import InferenceCall
from agent.otel.clock import MonoToUnix
from agent.otel.spans import SpanEmitter
from tests.conftest import CollectorProcess
from tests.pairing.conftest import start_pairing_collector

MS = 1_000_000
APP_PID = 5151


class Calls:
    """SDK spans of an instrumented app and captures of the node agent, kept in memory."""

    def __init__(self) -> None:
        self.sdk_mem = InMemorySpanExporter()
        app = TracerProvider(resource=Resource({"service.name": "app", "process.pid": APP_PID}))
        app.add_span_processor(SimpleSpanProcessor(self.sdk_mem))
        self.tracer = app.get_tracer("opentelemetry.instrumentation.openai_v2")
        self.agent_mem = InMemorySpanExporter()
        agent = TracerProvider(resource=Resource({"service.name": "infersight-agent"}))
        agent.add_span_processor(SimpleSpanProcessor(self.agent_mem))
        self.clock = MonoToUnix()
        self.emitter = SpanEmitter(agent.get_tracer("infersight.agent"), self.clock)
        self.t0 = time.time_ns() - 20_000 * MS
        self.trace_of: dict[str, str] = {}  # span id -> trace id

    def capture(
        self, start_ms: int, dur_ms: int, body: str, status: int, pid: int, resp_id: str | None
    ) -> str:
        off = self.clock.offset_ns()
        start = self.t0 + start_ms * MS - off
        exchange = HttpExchange(
            conn=ConnectionInfo(pid=pid, role=Role.CLIENT, peer_addr="10.0.0.9", peer_port=8000),
            method="POST",
            path="/v1/chat/completions",
            request_headers={"content-type": "application/json"},
            request_body=body.encode(),
            start_mono_ns=start,
            request_end_mono_ns=start + MS,
            status=status,
            response_body=b'{"error":{}}' if status >= 400 else b'{"id":"x"}',
            first_byte_mono_ns=start + dur_ms * MS // 2,
            end_mono_ns=start + dur_ms * MS,
        )
        ok = status < 400
        call = InferenceCall(
            provider="openai",
            operation="chat",
            api="openai.chat_completions",
            request_model="m1",
            response_model="m1" if ok else None,
            response_id=resp_id,
            input_tokens=11 if ok else None,
            output_tokens=22 if ok else None,
            http_status=status,
            error_type=None if ok else str(status),
        )
        ctx = self.emitter.emit(call, exchange)
        self.trace_of[format_span_id(ctx.span_id)] = format_trace_id(ctx.trace_id)
        return format_span_id(ctx.span_id)

    def sdk_span(self, start_ms: int, end_ms: int, resp_id: str) -> str:
        span = self.tracer.start_span(
            "chat m1",
            kind=SpanKind.CLIENT,
            start_time=self.t0 + start_ms * MS,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "m1",
                "gen_ai.response.model": "m1",
                "gen_ai.response.id": resp_id,
                "gen_ai.usage.input_tokens": 11,
                "gen_ai.usage.output_tokens": 22,
            },
        )
        span.end(end_time=self.t0 + end_ms * MS)
        ctx = span.get_span_context()
        self.trace_of[format_span_id(ctx.span_id)] = format_trace_id(ctx.trace_id)
        return format_span_id(ctx.span_id)

    def take(self) -> list[ReadableSpan]:
        spans = [*self.sdk_mem.get_finished_spans(), *self.agent_mem.get_finished_spans()]
        self.sdk_mem.clear()
        self.agent_mem.clear()
        return spans


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    # a call whose every attempt failed is folded once no retry can follow any more: 5 s here
    cp = start_pairing_collector(tmp_path, {"INFERSIGHT_PAIRING_RETRY_GAP_S": "5"})
    yield cp
    cp.stop()


def _export(collector: CollectorProcess, spans: list[ReadableSpan]) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{collector.otlp_http}/v1/traces", timeout=30)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()


def _rows(collector: CollectorProcess) -> dict[str, tuple[object, ...]]:
    rows = collector.sql(
        "SELECT span_id, source, status, http_status_code, attempts, pair_method FROM llm_calls"
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def _wait_rows(collector: CollectorProcess, want: dict[str, tuple[object, ...]]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _rows(collector) != want:
        time.sleep(0.3)
    time.sleep(1.5)  # more passes change nothing
    collector.calls_settled()
    assert _rows(collector) == want


def test_retried_attempts_are_folded_into_their_call(collector: CollectorProcess) -> None:
    c = Calls()
    want: dict[str, tuple[object, ...]] = {}
    # instrumented, no traceparent: 429, then the same request answered
    body1 = '{"model":"m1","messages":[{"role":"user","content":"one"}]}'
    c.capture(0, 20, body1, 429, APP_PID, None)
    cap_ok = c.capture(600, 400, body1, 200, APP_PID, "chatcmpl-1")
    span = c.sdk_span(-2, 1002, "chatcmpl-1")
    want[span] = ("both", "ok", 200, 2, "response_id")
    # uninstrumented, retried twice
    body2 = '{"model":"m1","messages":[{"role":"user","content":"two"}]}'
    c.capture(2000, 20, body2, 503, 6262, None)
    c.capture(2500, 20, body2, 502, 6262, None)
    last = c.capture(3500, 300, body2, 200, 6262, "chatcmpl-2")
    want[last] = ("ebpf", "ok", 200, 3, None)
    # uninstrumented, every attempt failed: one call, in error
    body3 = '{"model":"m1","messages":[{"role":"user","content":"three"}]}'
    c.capture(5000, 20, body3, 500, 6262, None)
    failed_last = c.capture(5500, 20, body3, 500, 6262, None)
    want[failed_last] = ("ebpf", "error", 500, 2, None)
    # a 429, then another request of the same process: two calls
    body4 = '{"model":"m1","messages":[{"role":"user","content":"four"}]}'
    body5 = '{"model":"m1","messages":[{"role":"user","content":"five!"}]}'
    refused = c.capture(7000, 20, body4, 429, 6262, None)
    other = c.capture(7200, 100, body5, 200, 6262, "chatcmpl-5")
    want[refused] = ("ebpf", "error", 429, 1, None)
    want[other] = ("ebpf", "ok", 200, 1, None)
    _export(collector, c.take())
    _wait_rows(collector, want)
    assert cap_ok not in want

    # a failed attempt that arrives after its call was paired still folds into it
    body6 = '{"model":"m1","messages":[{"role":"user","content":"six"}]}'
    late_attempt = c.capture(9000, 20, body6, 429, APP_PID, None)
    spans = c.take()
    c.capture(9400, 200, body6, 200, APP_PID, "chatcmpl-6")
    span6 = c.sdk_span(8998, 9602, "chatcmpl-6")
    _export(collector, c.take())
    want[span6] = ("both", "ok", 200, 1, "response_id")
    _wait_rows(collector, want)
    _export(collector, spans)
    want[span6] = ("both", "ok", 200, 2, "response_id")
    _wait_rows(collector, want)

    # the call's drill-down lists the attempt it folded, with the status the client got
    detail = httpx.get(
        f"{collector.api}/api/v1/calls/{c.trace_of[span6]}/{span6}", timeout=10
    ).json()
    assert detail["call"]["attempts"] == 2
    assert [
        (a["span_id"], a["http_status_code"], a["method"]) for a in detail["retried_attempts"]
    ] == [(late_attempt, 429, "retry_digest")]
    uninstrumented = httpx.get(
        f"{collector.api}/api/v1/calls/{c.trace_of[last]}/{last}", timeout=10
    ).json()
    assert [a["http_status_code"] for a in uninstrumented["retried_attempts"]] == [503, 502]

    methods = collector.sql("SELECT method, count(*) FROM span_pairs GROUP BY 1 ORDER BY 1")
    assert methods == [["response_id", 2], ["retry_digest", 5]]
    hidden = collector.sql("SELECT count(*) FROM llm_calls WHERE span_id = ?", [late_attempt])[0][0]
    assert hidden == 0
    metrics = httpx.get(f"{collector.api}/metrics", timeout=10).text
    assert 'infersight_pairing_retries_total{method="retry_digest"} 5.0' in metrics
