"""Ground truth through a real collector: SDK spans and agent captures of known calls, exported
in mixed, concurrent, shuffled batches with re-sent duplicates, give one `llm_calls` row per call
with the right source and the fields of both sides."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
from tests.conftest import CollectorProcess, start_collector

MS = 1_000_000
APP_PID = 4242


@dataclass
class Expected:
    """What the test knows about one call (the collector never sees this)."""

    kind: str  # traceparent | child | response_id | heuristic | ebpf_only | sdk_only
    row_span_id: str
    capture_span_id: str | None
    input_tokens: int
    output_tokens: int
    request_bytes: int | None
    server_gpu_s: float | None = None


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    cp = start_collector(
        tmp_path / "store.duckdb",
        tmp_path / "collector.log",
        env={"INFERSIGHT_PAIRING_INTERVAL_S": "0.2", "INFERSIGHT_PAIRING_SETTLE_S": "1"},
    )
    yield cp
    cp.stop()


class Workload:
    """Builds SDK spans (OTel SDK, GenAI attributes as the instrumentations set them) and
    captures (the agent's own `SpanEmitter`)."""

    def __init__(self) -> None:
        self.sdk_mem = InMemorySpanExporter()
        self.app = TracerProvider(
            resource=Resource({"service.name": "chat-app", "process.pid": APP_PID})
        )
        self.app.add_span_processor(SimpleSpanProcessor(self.sdk_mem))
        self.agent_mem = InMemorySpanExporter()
        self.agent = TracerProvider(resource=Resource({"service.name": "infersight-agent"}))
        self.agent.add_span_processor(SimpleSpanProcessor(self.agent_mem))
        self.clock = MonoToUnix()
        self.emitter = SpanEmitter(self.agent.get_tracer("infersight.agent"), self.clock)
        self.tracer = self.app.get_tracer("opentelemetry.instrumentation.openai")
        self.expected: list[Expected] = []
        self.t0 = time.time_ns() - 5_000 * MS

    def sdk_span(
        self, start: int, model: str, resp_id: str, tin: int, tout: int
    ) -> tuple[str, str, object]:
        span = self.tracer.start_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            start_time=start,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.response.model": model + "-2025",
                "gen_ai.response.id": resp_id,
                "gen_ai.usage.input_tokens": tin,
                "gen_ai.usage.output_tokens": tout,
                "server.address": "llm.internal",
            },
        )
        ctx = span.get_span_context()
        return format_trace_id(ctx.trace_id), format_span_id(ctx.span_id), span

    def capture(
        self,
        start: int,
        dur: int,
        model: str,
        resp_id: str | None,
        tin: int,
        tout: int,
        traceparent: str | None,
        *,
        pid: int = APP_PID,
        role: Role = Role.CLIENT,
        gpu_s: float | None = None,
    ) -> tuple[str, int]:
        body = f'{{"model":"{model}","messages":[{{"role":"user","content":"hi {start}"}}]}}'
        off = self.clock.offset_ns()
        headers = {"content-type": "application/json"}
        if traceparent:
            headers["traceparent"] = traceparent
        exchange = HttpExchange(
            conn=ConnectionInfo(pid=pid, role=role, peer_addr="10.0.0.5", peer_port=8000),
            method="POST",
            path="/v1/chat/completions",
            request_headers=headers,
            request_body=body.encode(),
            start_mono_ns=start - off,
            request_end_mono_ns=start - off + MS,
            status=200,
            response_body=b'{"id":"x"}' * 3,
            first_byte_mono_ns=start - off + dur // 2,
            end_mono_ns=start - off + dur,
        )
        call = InferenceCall(
            provider="openai",
            operation="chat",
            api="openai.chat_completions",
            request_model=model,
            response_model=model + "-2025",
            response_id=resp_id,
            input_tokens=tin,
            output_tokens=tout,
            http_status=200,
            traceparent=traceparent,
        )
        extra = (
            {"infersight.gpu.seconds": gpu_s, "infersight.gpu.energy_j": gpu_s * 300}
            if gpu_s
            else None
        )
        ctx = self.emitter.emit(call, exchange, extra=extra)
        return format_span_id(ctx.span_id), len(body)

    def build(self, rng: random.Random) -> None:
        kinds = (
            ["traceparent"] * 12
            + ["child"] * 8
            + ["response_id"] * 8
            + ["heuristic"] * 6
            + ["ebpf_only"] * 5
            + ["sdk_only"] * 5
        )
        for i, kind in enumerate(kinds):
            start = self.t0 + i * 150 * MS
            tin, tout = 100 + i, 10 + i
            model = f"model-{i % 4}"
            resp_id = f"chatcmpl-{i:05d}"
            if kind == "ebpf_only":
                cap_id, nbytes = self.capture(
                    start, 80 * MS, "model-e", f"chatcmpl-e{i}", tin, tout, None, pid=999
                )
                self.expected.append(Expected(kind, cap_id, None, tin, tout, nbytes))
                continue
            trace_id, span_id, span = self.sdk_span(start, model, resp_id, tin, tout)
            exp = Expected(kind, span_id, None, tin, tout, None)
            if kind in ("traceparent", "child"):
                parent = span_id
                if kind == "child":
                    http = self.tracer.start_span(
                        "POST",
                        context=_ctx(span),
                        kind=SpanKind.CLIENT,
                        start_time=start + MS,
                        attributes={"http.request.method": "POST"},
                    )
                    parent = format_span_id(http.get_span_context().span_id)
                tp = f"00-{trace_id}-{parent}-01"
                exp.capture_span_id, exp.request_bytes = self.capture(
                    start + 2 * MS, 100 * MS, model, resp_id, tin, tout, tp
                )
                if i % 3 == 0:  # the server side, captured on the inference server's node
                    self.capture(
                        start + 4 * MS,
                        90 * MS,
                        model,
                        resp_id,
                        tin,
                        tout,
                        tp,
                        pid=31337,
                        role=Role.SERVER,
                        gpu_s=0.25 + i / 100,
                    )
                    exp.server_gpu_s = 0.25 + i / 100
                if kind == "child":
                    http.end(end_time=start + 104 * MS)
            elif kind == "response_id":
                exp.capture_span_id, exp.request_bytes = self.capture(
                    start + 2 * MS, 100 * MS, model, resp_id, tin, tout, None
                )
            elif kind == "heuristic":
                exp.capture_span_id, exp.request_bytes = self.capture(
                    start + 2 * MS, 100 * MS, model, None, tin, tout, None
                )
            span.end(end_time=start + 105 * MS)  # type: ignore[attr-defined]
            self.expected.append(exp)

    def spans(self) -> list[ReadableSpan]:
        return [*self.sdk_mem.get_finished_spans(), *self.agent_mem.get_finished_spans()]


def _ctx(span: object) -> object:
    from opentelemetry import trace

    return trace.set_span_in_context(span)  # type: ignore[arg-type]


def _export(endpoint: str, batches: Sequence[Sequence[ReadableSpan]], threads: int = 4) -> None:
    """Export the batches from several threads at once; every export must be acknowledged."""
    failures: list[str] = []

    def worker(mine: Sequence[Sequence[ReadableSpan]]) -> None:
        exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=30)
        for batch in mine:
            if exporter.export(batch) is not SpanExportResult.SUCCESS:
                failures.append("export failed")
        exporter.shutdown()

    parts = [batches[i::threads] for i in range(threads)]
    ts = [threading.Thread(target=worker, args=(p,)) for p in parts]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not failures


def test_ground_truth_one_row_per_call(collector: CollectorProcess) -> None:
    rng = random.Random(11)
    w = Workload()
    w.build(rng)
    spans = w.spans()
    rng.shuffle(spans)
    batches: list[list[ReadableSpan]] = []
    i = 0
    while i < len(spans):
        n = rng.randint(1, 9)
        batches.append(spans[i : i + n])
        i += n
    resent = rng.sample(batches, len(batches) // 3)  # re-sent exports (lost acknowledgements)
    # the first half goes, the pairing pass runs over it, then the rest and the re-sends arrive
    half = len(batches) // 2
    _export(collector.otlp_http, batches[:half])
    time.sleep(0.5)
    late = batches[half:] + resent
    rng.shuffle(late)
    _export(collector.otlp_http, late)

    n_calls = len(w.expected)
    n_both = sum(e.capture_span_id is not None for e in w.expected)
    deadline = time.monotonic() + 30
    both = 0
    while time.monotonic() < deadline:
        both = collector.sql("SELECT count(*) FROM llm_calls WHERE source = 'both'")[0][0]
        if both >= n_both:
            break
        time.sleep(0.2)
    time.sleep(1.5)  # more passes must not add anything
    assert collector.sql("SELECT count(*) FROM spans")[0][0] > len(spans)  # duplicates stored
    rows = collector.sql(
        "SELECT span_id, source, pair_method, capture_span_id, input_tokens, output_tokens,"
        " wire_request_bytes, http_status_code, wire_ttft_s, wire_duration_s,"
        " server_duration_s, gpu_seconds, gpu_energy_j, duration_s, model FROM llm_calls"
    )
    assert len(rows) == n_calls
    by_span = {r[0]: r for r in rows}
    assert len(by_span) == n_calls
    want_method = {
        "traceparent": "traceparent",
        "child": "traceparent_child",
        "response_id": "response_id",
        "heuristic": "heuristic",
    }
    for e in w.expected:
        r = by_span[e.row_span_id]
        (
            _,
            source,
            method,
            cap_id,
            tin,
            tout,
            req_bytes,
            status,
            ttft,
            wire_dur,
            server_dur,
            gpu_s,
            gpu_j,
            dur,
            _model,
        ) = r
        assert (tin, tout) == (e.input_tokens, e.output_tokens), e
        if e.kind == "sdk_only":
            assert (source, method, cap_id, req_bytes) == ("sdk", None, None, None), r
            continue
        assert req_bytes == e.request_bytes, r
        assert status == 200, r
        assert ttft == pytest.approx(0.04 if e.kind == "ebpf_only" else 0.05, abs=1e-6), r
        if e.kind == "ebpf_only":
            assert (source, method, cap_id) == ("ebpf", None, None), r
            assert wire_dur == pytest.approx(0.08), r
            continue
        assert (source, method, cap_id) == ("both", want_method[e.kind], e.capture_span_id), r
        assert dur == pytest.approx(0.105), r  # the client-seen duration of the SDK span
        assert wire_dur == pytest.approx(0.1), r
        if e.server_gpu_s is not None:
            assert server_dur == pytest.approx(0.09), r
            assert gpu_s == pytest.approx(e.server_gpu_s), r
            assert gpu_j == pytest.approx(e.server_gpu_s * 300), r
        else:
            assert server_dur is None, r
            assert gpu_s is None, r
    # one pair per call, however often spans were re-sent
    pairs = collector.sql(
        "SELECT count(*), count(DISTINCT sdk_span_id), count(DISTINCT capture_span_id)"
        " FROM span_pairs"
    )[0]
    assert pairs == [n_both, n_both, n_both]
    metrics = httpx.get(f"{collector.api}/metrics", timeout=10).text
    assert 'infersight_pairing_pairs_total{method="traceparent"} 12.0' in metrics
    assert 'infersight_pairing_pairs_total{method="traceparent_child"} 8.0' in metrics
    assert 'infersight_pairing_pairs_total{method="heuristic"} 6.0' in metrics
    assert "infersight_pairing_unpaired_sdk_spans 5.0" in metrics
    assert "infersight_pairing_unpaired_captures" in metrics
