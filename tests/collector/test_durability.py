"""Acknowledged means stored: `kill -9` after acknowledged exports, and overload with retries.

Real collector processes, real OTel SDK exporters (HTTP and gRPC). The checks compare the set of
span ids the exporters saw acknowledged with the set in the store after a restart.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import CollectorProcess, start_collector


def make_spans(n: int, tag: str, payload_bytes: int = 200) -> list[ReadableSpan]:
    """`n` finished GenAI-looking spans from the real SDK."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": f"svc-{tag}"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("durability")
    for i in range(n):
        with tracer.start_as_current_span(f"chat model-{i % 3}") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.request.model", f"model-{i % 3}")
            span.set_attribute("test.tag", tag)
            span.set_attribute("test.payload", "x" * payload_bytes)
    provider.shutdown()
    return list(memory.get_finished_spans())


def ids(spans: Sequence[ReadableSpan]) -> set[tuple[str, str]]:
    out = set()
    for s in spans:
        ctx = s.get_span_context()
        assert ctx is not None
        out.add((f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"))
    return out


def stored_ids(cp: CollectorProcess) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in cp.sql("SELECT trace_id, span_id FROM spans")]


def exporter(cp: CollectorProcess, transport: str) -> SpanExporter:
    if transport == "http":
        return HttpSpanExporter(endpoint=f"{cp.otlp_http}/v1/traces", timeout=30)
    return GrpcSpanExporter(endpoint=cp.otlp_grpc, insecure=True, timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_acknowledged_exports_survive_kill_9(tmp_path: Path, transport: str) -> None:
    db, log = tmp_path / "s.duckdb", tmp_path / "c.log"
    cp = start_collector(db, log)
    acked: set[tuple[str, str]] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def sender(k: int) -> None:
        exp = exporter(cp, transport)
        batch_no = 0
        while not stop.is_set():
            spans = make_spans(50, f"{k}-{batch_no}")
            batch_no += 1
            if exp.export(spans) == SpanExportResult.SUCCESS:
                with lock:
                    acked.update(ids(spans))
        exp.shutdown()

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    # Let a good number of exports be acknowledged, then kill the collector mid-stream.
    deadline = time.monotonic() + 30
    while len(acked) < 3000 and time.monotonic() < deadline:
        time.sleep(0.05)
    cp.proc.send_signal(signal.SIGKILL)
    cp.proc.wait()
    with lock:
        acknowledged = set(acked)
    stop.set()
    for t in threads:
        t.join(60)
    assert len(acknowledged) >= 3000

    restarted = start_collector(db, log)
    try:
        stored = stored_ids(restarted)
        assert acknowledged <= set(stored), "an acknowledged span is missing after kill -9"
        assert len(stored) == len(set(stored)), "a span was stored twice"
    finally:
        restarted.stop()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_overload_answers_retry_and_every_span_lands_once(tmp_path: Path, transport: str) -> None:
    # A one-batch queue and many concurrent senders of heavy spans: the writer cannot keep up,
    # the receivers must push back, the SDK exporters must retry, and nothing may be lost.
    cp = start_collector(
        tmp_path / "s.duckdb",
        tmp_path / "c.log",
        env={"INFERSIGHT_STORE_MAX_QUEUE_BATCHES": "1", "INFERSIGHT_OTLP_RETRY_AFTER_S": "1"},
    )
    try:
        batches = [make_spans(200, f"o{k}", payload_bytes=4000) for k in range(24)]
        results: list[SpanExportResult] = []

        def send(spans: list[ReadableSpan]) -> None:
            exp = exporter(cp, transport)
            results.append(exp.export(spans))
            exp.shutdown()

        threads = [threading.Thread(target=send, args=(b,)) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results == [SpanExportResult.SUCCESS] * len(batches)
        metrics = httpx.get(f"{cp.api}/metrics").text
        pushed_back = [
            line
            for line in metrics.splitlines()
            if line.startswith("infersight_otlp_rejected")
            and "queue_full" in line
            and not line.rstrip().endswith(" 0.0")
        ]
        assert pushed_back, "the receivers never pushed back; the test did not overload them"
        expected = set().union(*(ids(b) for b in batches))
        stored = stored_ids(cp)
        assert len(stored) == len(expected)
        assert set(stored) == expected
    finally:
        cp.stop()


def test_sigterm_flushes_and_exits_zero(tmp_path: Path) -> None:
    db, log = tmp_path / "s.duckdb", tmp_path / "c.log"
    cp = start_collector(db, log)
    spans = make_spans(100, "term")
    assert exporter(cp, "http").export(spans) == SpanExportResult.SUCCESS
    assert cp.stop(signal.SIGTERM) == 0
    again = start_collector(db, log)
    try:
        assert set(stored_ids(again)) == ids(spans)
    finally:
        again.stop()


def test_second_collector_on_same_file_fails_clearly(tmp_path: Path) -> None:
    cp = start_collector(tmp_path / "s.duckdb", tmp_path / "c.log")
    try:
        import subprocess
        import sys

        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "collector.cli",
                "collector",
                "--db",
                str(cp.db),
                "--host",
                "127.0.0.1",
                "--otlp-grpc-port",
                "0",
                "--otlp-http-port",
                "0",
                "--api-port",
                "0",
                "--pg-port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2
        assert "lock" in out.stderr.lower()
        assert "Traceback" not in out.stderr
    finally:
        cp.stop()


def test_port_in_use_fails_clearly(collector_process: CollectorProcess, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector.cli",
            "collector",
            "--db",
            str(tmp_path / "o.duckdb"),
            "--host",
            "127.0.0.1",
            "--otlp-http-port",
            str(collector_process.http_port),
            "--otlp-grpc-port",
            "0",
            "--api-port",
            "0",
            "--pg-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--otlp-http-port" in out.stderr
