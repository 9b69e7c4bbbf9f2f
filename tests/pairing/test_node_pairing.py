"""Node-local pairing through the whole agent, without the kernel: SDK GenAI spans exported with
the real OTel SDK exporter through the agent's relay, captures handed to `Agent.handle` as the
capture would, a real collector behind. Each call ends as exactly one row, with the right
source; a paired SDK span keeps its ids and gains the wire fields, its capture is never
exported; unpaired sides go on after the hold window and no later."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from agent.capture.exchange import ConnectionInfo, HttpExchange, Role
from agent.main import Agent
from tests.conftest import CollectorProcess, start_collector
from tests.relay.support import metrics, relay_agent, wait_for

pytestmark = pytest.mark.timeout(120)

MS = 1_000_000
HOLD_S = 3.0
OTHER_PID = 999_001


def openai_exchange(
    *,
    start_unix_ns: int,
    dur_ns: int,
    model: str,
    response_id: str | None,
    tokens: tuple[int, int],
    pid: int,
    traceparent: str | None = None,
) -> HttpExchange:
    """A non-streamed chat call as the capture reassembles it, at the given wall-clock time."""
    offset = time.time_ns() - time.monotonic_ns()
    start = start_unix_ns - offset
    body = {"model": model, "messages": [{"role": "user", "content": f"call {start_unix_ns}"}]}
    headers = {"host": "llm.internal:8000", "content-type": "application/json"}
    if traceparent:
        headers["traceparent"] = traceparent
    answer: dict[str, Any] = {
        "object": "chat.completion",
        "created": 1700000000,
        "model": model + "-2025",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "fine"},
            }
        ],
        "usage": {
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "total_tokens": sum(tokens),
        },
    }
    if response_id:
        answer["id"] = response_id
    return HttpExchange(
        conn=ConnectionInfo(
            pid=pid,
            tid=pid,
            comm="python3",
            role=Role.CLIENT,
            local_addr="127.0.0.1",
            local_port=50123,
            peer_addr="127.0.0.1",
            peer_port=8000,
        ),
        method="POST",
        path="/v1/chat/completions",
        request_headers=headers,
        request_body=json.dumps(body).encode(),
        start_mono_ns=start,
        request_end_mono_ns=start + MS,
        status=200,
        response_headers={"content-type": "application/json", "x-request-id": f"req-{start}"},
        response_body=json.dumps(answer).encode(),
        first_byte_mono_ns=start + dur_ns - 2 * MS,
        end_mono_ns=start + dur_ns,
    )


@dataclass
class Call:
    kind: str  # traceparent | child | response_id | heuristic | capture_only | sdk_only
    sdk_span_id: str | None = None
    request_bytes: int | None = None
    exported_mono: float = 0.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Agent, CollectorProcess]]:
    collector = start_collector(
        tmp_path / "store.duckdb",
        tmp_path / "collector.log",
        env={"INFERSIGHT_PAIRING_INTERVAL_S": "0.3", "INFERSIGHT_PAIRING_SETTLE_S": "1"},
    )
    agent = relay_agent(
        collector.otlp_http,
        pairing={"hold_s": HOLD_S, "settle_s": 0.5, "hold_captures": "always"},
    )
    agent.start()
    assert agent.pairing is not None
    # the exchanges below are what the capture would deliver: pair as if it ran
    agent.pairing.capture_running = True
    yield agent, collector
    agent.stop()
    collector.stop()


def test_each_call_is_one_row_and_paired_captures_are_not_exported(
    stack: tuple[Agent, CollectorProcess],
) -> None:
    agent, collector = stack
    assert agent.relay is not None
    provider = TracerProvider(resource=Resource.create({"service.name": "chat-app"}))
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{agent.relay.http_port}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    kinds = ["traceparent", "child", "response_id", "heuristic", "capture_only", "sdk_only"] * 3
    calls: list[Call] = []
    for i, kind in enumerate(kinds):
        model = f"model-{i}"
        tokens = (100 + i, 10 + i)
        resp_id = f"chatcmpl-node-{i}"
        call = Call(kind)
        calls.append(call)
        start = time.time_ns()
        if kind == "capture_only":
            ex = openai_exchange(
                start_unix_ns=start + 2 * MS,
                dur_ns=40 * MS,
                model="model-x",
                response_id=f"chatcmpl-x-{i}",
                tokens=tokens,
                pid=OTHER_PID,
            )
            call.request_bytes = len(ex.request_body)
            agent.handle(ex)
            continue
        span = tracer.start_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            start_time=start,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.response.model": model + "-2025",
                "gen_ai.response.id": resp_id,
                "gen_ai.usage.input_tokens": tokens[0],
                "gen_ai.usage.output_tokens": tokens[1],
            },
        )
        ctx = span.get_span_context()
        call.sdk_span_id = format_span_id(ctx.span_id)
        parent = call.sdk_span_id
        http = None
        if kind == "child":
            http = tracer.start_span(
                "POST", context=trace.set_span_in_context(span), kind=SpanKind.CLIENT
            )
            parent = format_span_id(http.get_span_context().span_id)
        ex = None
        if kind != "sdk_only":
            ex = openai_exchange(
                start_unix_ns=start + 2 * MS,
                dur_ns=40 * MS,
                model=model,
                response_id=None if kind == "heuristic" else resp_id,
                tokens=tokens,
                pid=OTHER_PID if kind == "response_id" else os.getpid(),
                traceparent=(
                    f"00-{format_trace_id(ctx.trace_id)}-{parent}-01"
                    if kind in ("traceparent", "child")
                    else None
                ),
            )
            call.request_bytes = len(ex.request_body)
        time.sleep(0.045)
        if ex is not None and i % 2:
            agent.handle(ex)  # the capture first, as with a batching SDK
        if http is not None:
            http.end()
        span.end()
        call.exported_mono = time.monotonic()
        if ex is not None and not i % 2:
            agent.handle(ex)  # the SDK span first
    provider.shutdown()

    n_paired = sum(c.kind not in ("capture_only", "sdk_only") for c in calls)
    assert wait_for(
        lambda: collector.sql("SELECT count(*) FROM llm_calls")[0][0] == len(calls), timeout_s=40
    )
    time.sleep(2.5)  # more collector passes must change nothing
    rows = collector.sql(
        "SELECT span_id, source, input_tokens, output_tokens, model FROM llm_calls"
    )
    assert len(rows) == len(calls)
    by_span = {r[0]: r for r in rows}
    spans = {
        r[0]: (r[1], json.loads(r[2]), r[3])
        for r in collector.sql(
            "SELECT span_id, source, attributes, epoch_ns(received_time) FROM spans"
        )
    }
    want = {
        "traceparent": "traceparent",
        "child": "traceparent_child",
        "response_id": "response_id",
        "heuristic": "heuristic",
    }
    for call in calls:
        if call.kind == "capture_only":
            continue
        assert call.sdk_span_id is not None
        row = by_span[call.sdk_span_id]
        source, attrs, received_ns = spans[call.sdk_span_id]
        if call.kind == "sdk_only":
            assert (row[1], source) == ("sdk", "sdk")
            assert "infersight.wire.request_body_bytes" not in attrs
            # held for its capture no longer than the window (plus the way to the store)
            waited_s = received_ns / 1e9 - (time.time() - (time.monotonic() - call.exported_mono))
            assert waited_s < HOLD_S + 2.0, waited_s
            continue
        assert (row[1], source) == ("both", "both"), call
        assert attrs["infersight.source"] == "both"
        assert attrs["infersight.pair.method"] == want[call.kind], call
        assert attrs["infersight.wire.request_body_bytes"] == call.request_bytes
        assert attrs["http.response.status_code"] == 200
        assert attrs["infersight.wire.duration_s"] == pytest.approx(0.04)
        assert attrs["infersight.request_id"].startswith("req-")
    ebpf = collector.sql("SELECT gen_ai_request_model FROM spans WHERE source = 'ebpf'")
    # only the captures no SDK span claimed were exported as spans of their own
    assert [r[0] for r in ebpf] == ["model-x"] * kinds.count("capture_only")
    assert sum(r[1] == "ebpf" for r in rows) == kinds.count("capture_only")
    assert sum(r[1] == "both" for r in rows) == n_paired
    # the collector did not pair anything again
    assert collector.sql("SELECT count(*) FROM span_pairs")[0][0] == 0
    m = metrics(agent)
    for kind, method in want.items():
        assert m[f'infersight_agent_pairing_pairs_total{{method="{method}"}}'] == kinds.count(kind)
    assert m['infersight_agent_pairing_unpaired_total{side="capture"}'] == 3
    assert m['infersight_agent_pairing_unpaired_total{side="sdk"}'] == 3
    assert m['infersight_agent_pairing_held{side="sdk"}'] == 0
    assert m['infersight_agent_relay_items_total{outcome="accepted",signal="traces"}'] == (
        len(calls) - 3 + kinds.count("child")
    )
