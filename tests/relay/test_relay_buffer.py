"""The relay's bounded buffer: with the collector down it accepts until the bound, then answers
503 / UNAVAILABLE with a retry delay (which the SDK exporters honour); once the collector is up
everything acknowledged arrives, and every item is in the books. Permanent refusals and
endless failures end as counted failures, and a stop never waits past its drain time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent.main import Agent
from tests.conftest import free_port, start_collector
from tests.relay.support import metrics, relay_agent, relay_items, trace_request, wait_for

pytestmark = pytest.mark.timeout(120)

PROTOBUF = {"content-type": "application/x-protobuf"}
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _relay_url(agent: Agent) -> str:
    assert agent.relay is not None
    return f"http://127.0.0.1:{agent.relay.http_port}/v1/traces"


def _sdk_spans(n: int, service: str) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for i in range(n):
        with provider.get_tracer("t").start_as_current_span(f"late {i}"):
            pass
    return list(memory.get_finished_spans())


def test_full_buffer_pushes_back_and_nothing_acknowledged_is_lost(tmp_path: Path) -> None:
    grpc_port, http_port, api_port = free_port(), free_port(), free_port()
    agent = relay_agent(
        f"http://127.0.0.1:{http_port}",  # the collector is not there yet
        relay={"buffer_bytes": 200_000, "max_body_bytes": 100_000, "retry_after_s": 2},
    )
    agent.start()
    url = _relay_url(agent)
    accepted: list[bytes] = []
    refused = 0
    collector = None
    try:
        with httpx.Client(timeout=10) as client:
            for _ in range(40):
                request = trace_request(4, service="buffered", pad_bytes=5000)
                resp = client.post(url, content=request.SerializeToString(), headers=PROTOBUF)
                if resp.status_code == 200:
                    accepted += [s.span_id for s in request.resource_spans[0].scope_spans[0].spans]
                    continue
                assert resp.status_code == 503, resp.text
                assert resp.headers["retry-after"] == "2"
                status = status_pb2.Status()
                status.ParseFromString(resp.content)
                assert "full" in status.message
                refused += 1
        assert 5 <= len(accepted) // 4 <= 10  # the bound, not the collector, decided
        assert refused >= 30
        # gRPC: UNAVAILABLE with a RetryInfo, where the SDK's gRPC exporter looks for it
        assert agent.relay is not None
        with grpc.insecure_channel(f"127.0.0.1:{agent.relay.grpc_port}") as channel:
            export = channel.unary_unary(TRACE_EXPORT)
            with pytest.raises(grpc.RpcError) as failed:
                export(trace_request(4, pad_bytes=5000).SerializeToString(), timeout=10)
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
        trailers = dict(failed.value.trailing_metadata())
        info = error_details_pb2.RetryInfo()
        info.ParseFromString(trailers["google.rpc.retryinfo-bin"])
        assert info.retry_delay.seconds == 2
        m = metrics(agent)
        assert m['infersight_agent_relay_requests_total{outcome="refused_full"}'] == refused + 1
        assert relay_items(agent, "refused_full") == 4 * (refused + 1)
        assert m["infersight_agent_relay_buffer_bytes"] > 150_000

        # An SDK exporter meets the full buffer and retries; meanwhile the collector starts.
        late = _sdk_spans(9, "late-sdk")
        outcome: list[SpanExportResult] = []
        exporter = OTLPSpanExporter(endpoint=url, timeout=60)
        sender = threading.Thread(target=lambda: outcome.append(exporter.export(late)))
        sender.start()
        time.sleep(0.5)
        collector = start_collector(
            tmp_path / "store.duckdb",
            tmp_path / "collector.log",
            ports=(grpc_port, http_port, api_port),
        )
        sender.join(60)
        assert outcome == [SpanExportResult.SUCCESS]
        total = len(accepted) + len(late)
        assert wait_for(lambda: relay_items(agent, "relayed") == total, timeout_s=60)
        assert relay_items(agent, "accepted") == total
        assert relay_items(agent, "failed") == 0
        assert m["infersight_agent_relay_retries_total"] >= 0
        stored = collector.sql(
            "SELECT span_id FROM spans WHERE service_name IN ('buffered', 'late-sdk')"
        )
        assert sorted(r[0] for r in stored) == sorted(
            [s.hex() for s in accepted] + [format(s.context.span_id, "016x") for s in late]
        )
        assert metrics(agent)["infersight_agent_relay_buffer_bytes"] == 0
    finally:
        agent.stop()
        if collector is not None:
            collector.stop()


class _Answering(BaseHTTPRequestHandler):
    status = 400
    seen: ClassVar[list[int]] = []

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/v1/traces":  # the agent's own metrics go here too
            type(self).seen.append(self.status)
        self.send_response(self.status)
        self.send_header("content-length", "0")
        self.end_headers()


@pytest.fixture
def answering() -> Iterator[tuple[ThreadingHTTPServer, type[_Answering]]]:
    handler = type("Handler", (_Answering,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "retried"), [(400, False), (503, True)])
def test_permanent_and_endless_failures_are_counted(
    answering: tuple[ThreadingHTTPServer, type[_Answering]], status: int, retried: bool
) -> None:
    server, handler = answering
    handler.status = status
    agent = relay_agent(
        f"http://127.0.0.1:{server.server_address[1]}", relay={"max_elapsed_s": 2.5}
    )
    agent.start()
    try:
        resp = httpx.post(
            _relay_url(agent), content=trace_request(3).SerializeToString(), headers=PROTOBUF
        )
        assert resp.status_code == 200  # accepted: the relay owns it now
        assert wait_for(lambda: relay_items(agent, "failed") == 3, timeout_s=30)
        m = metrics(agent)
    finally:
        agent.stop()
    assert relay_items_from(m, "relayed") == 0
    if retried:
        assert len(handler.seen) >= 2
        assert m["infersight_agent_relay_retries_total"] == len(handler.seen) - 1
    else:
        assert handler.seen == [400]
        assert m["infersight_agent_relay_retries_total"] == 0


def relay_items_from(m: dict[str, float], outcome: str) -> float:
    return m[f'infersight_agent_relay_items_total{{outcome="{outcome}",signal="traces"}}']


def test_stop_gives_up_after_the_drain_time_and_says_so() -> None:
    agent = relay_agent(f"http://127.0.0.1:{free_port()}", relay={"drain_timeout_s": 1.0})
    agent.start()
    resp = httpx.post(
        _relay_url(agent), content=trace_request(5).SerializeToString(), headers=PROTOBUF
    )
    assert resp.status_code == 200
    assert agent.relay is not None
    relay = agent.relay
    started = time.monotonic()
    relay.stop()  # what agent.stop() does first; the agent's own exporters then take theirs
    assert time.monotonic() - started < 5
    agent.stop()
    snap = relay.stats.snapshot()["items"]
    assert snap[("traces", "accepted")] == 5
    assert snap[("traces", "failed")] == 5
    assert snap[("traces", "relayed")] == 0
    assert relay.buffer.bytes == 0
