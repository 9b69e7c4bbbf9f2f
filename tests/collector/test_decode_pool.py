"""Exports decoded in worker processes answer and store exactly as exports decoded in place.

The receivers are served for real on loopback with a `DecodePool` of spawned workers; the
round-trip and hostile-input suites of the in-process receivers run against them unchanged, and
the pool's own failure modes are provoked for real: a worker killed mid-stream, the collector
killed with SIGKILL (its workers must not outlive it), a collector started with no workers.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.otlp.decode_traces import decode_traces
from collector.otlp.ingest import TRACES, ExportError, parse_protobuf
from collector.otlp.limits import ReceiverLimits
from collector.otlp.pool import DecodePool, decode_in_worker
from tests.collector import test_otlp_hostile as hostile
from tests.collector import test_otlp_roundtrip as roundtrip
from tests.collector.otlp_support import Receivers
from tests.collector.otlp_support.payloads import TRACE_PATH, first_span, trace_request
from tests.conftest import CollectorProcess, start_collector

PB = {"Content-Type": "application/x-protobuf"}


class PooledReceivers(Receivers):
    """`Receivers` whose HTTP and gRPC servers decode in a two-worker `DecodePool`."""

    pool: DecodePool

    def __init__(self, db_path: Path, limits: ReceiverLimits | None = None) -> None:
        self.pool = DecodePool(2, limits or ReceiverLimits())
        for ready in self.pool.start():
            ready.result(timeout=120)
        super().__init__(db_path, limits)

    def stop(self) -> None:
        super().stop()
        self.pool.stop()


@pytest.fixture(scope="module")
def prx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PooledReceivers]:
    rx = PooledReceivers(tmp_path_factory.mktemp("pooled") / "store.duckdb")
    yield rx
    rx.stop()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return out


def _worker_pids(pid: int) -> list[int]:
    """The spawned decode workers among the children of `pid`."""
    out = []
    for child in _children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    out.append(child)
        except OSError:
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- the worker function against the in-process decoder -------------------------------------


def test_worker_result_equals_in_process_decoding() -> None:
    req = trace_request(3)
    first_span(req).trace_id = b"\x00" * 16  # rejected: partial success must carry over
    body = req.SerializeToString()
    result = decode_in_worker("traces", body, 123)
    local = decode_traces(ExportTraceServiceRequest.FromString(body), ReceiverLimits(), 123)
    assert result.error_kind is None
    assert (result.accepted, result.rejected, result.reasons) == (
        local.accepted,
        local.rejected,
        local.reasons,
    )
    import pyarrow as pa

    table = pa.ipc.open_stream(result.tables["spans"]).read_all()
    assert table.equals(local.tables["spans"])
    assert table.schema.equals(local.tables["spans"].schema)


@pytest.mark.parametrize("body", [b"\xff\xff\xff", hostile._wrong_wire_type()])
def test_worker_refuses_what_the_receiving_process_refuses(body: bytes) -> None:
    with pytest.raises(ExportError) as local:
        parse_protobuf(TRACES, body)
    result = decode_in_worker("traces", body, 0)
    assert (result.error_kind, result.error_message) == ("invalid", local.value.message)
    assert not result.tables


# -- the receivers' own suites, through the pool --------------------------------------------


@pytest.mark.parametrize("transport", roundtrip.TRANSPORTS)
def test_spans_round_trip_pooled(prx: PooledReceivers, transport: str) -> None:
    roundtrip.test_spans_round_trip(prx, transport)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_genai_columns_pooled(prx: PooledReceivers, transport: str) -> None:
    roundtrip.test_span_genai_columns_follow_normalization(prx, transport)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_metrics_and_logs_pooled(prx: PooledReceivers, transport: str) -> None:
    roundtrip.test_metrics_round_trip_all_point_types(prx, transport)
    roundtrip.test_logs_round_trip(prx, transport)


@pytest.mark.parametrize("case", list(hostile.HTTP_CASES))
def test_hostile_http_pooled(prx: PooledReceivers, case: str) -> None:
    hostile.test_hostile_http(prx, case)


@pytest.mark.parametrize("case", list(hostile.GRPC_CASES))
def test_hostile_grpc_pooled(prx: PooledReceivers, case: str) -> None:
    hostile.test_hostile_grpc(prx, case)


def test_undecodable_body_same_answer_both_ways(prx: PooledReceivers, tmp_path: Path) -> None:
    """The 400 / INVALID_ARGUMENT message is the in-process one, word for word."""
    body = hostile._truncated()
    with pytest.raises(ExportError) as local:
        parse_protobuf(TRACES, body)
    resp = requests.post(f"{prx.http_url}/v1/traces", data=body, headers=PB, timeout=10)
    assert resp.status_code == 400
    assert status_pb2.Status.FromString(resp.content).message == local.value.message
    with grpc.insecure_channel(prx.grpc_target) as channel, pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(TRACE_PATH)(body, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == local.value.message


def test_a_killed_worker_costs_a_retry_not_an_export(prx: PooledReceivers) -> None:
    """A worker that dies makes the exports it held answer 503 with Retry-After (clients
    retry); the pool is rebuilt and the next exports are stored."""
    victims = prx.pool.worker_pids()
    assert len(victims) == 2, "the pool has no worker processes"
    restarts = prx.pool.restarts
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    stored: list[str] = []
    answers: list[int] = []
    deadline = time.monotonic() + 60
    while len(stored) < 5 and time.monotonic() < deadline:
        req = trace_request(2, service="after-kill")
        resp = requests.post(
            f"{prx.http_url}/v1/traces", data=req.SerializeToString(), headers=PB, timeout=60
        )
        answers.append(resp.status_code)
        assert resp.status_code in (200, 503), resp.content
        if resp.status_code == 503:
            assert resp.headers["retry-after"]
            assert status_pb2.Status.FromString(resp.content).code == code_pb2.UNAVAILABLE
            time.sleep(0.2)
            continue
        assert not ExportTraceServiceResponse.FromString(resp.content).HasField("partial_success")
        stored.append(first_span(req).span_id.hex())
    assert len(stored) == 5, answers
    assert prx.pool.restarts > restarts or 503 not in answers
    rows = prx.rows(
        "SELECT count(*) FROM spans WHERE service_name = 'after-kill' AND span_id IN "
        f"({', '.join(repr(s) for s in stored)})"
    )
    assert rows == [(5,)]
    assert set(prx.pool.worker_pids()).isdisjoint(victims)


# -- a collector process with and without workers -------------------------------------------


def _content_span(tag: str) -> ExportTraceServiceRequest:
    req = trace_request(2, service=f"content-{tag}")
    spans = req.resource_spans[0].scope_spans[0].spans
    semconv = json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": f"hello {tag}"}]}],
        separators=(",", ":"),
    )
    openai_shaped = json.dumps([{"role": "user", "content": f"hi {tag}"}])
    for span, messages in zip(spans, (semconv, openai_shaped), strict=True):
        span.attributes.add(key="gen_ai.operation.name").value.string_value = "chat"
        span.attributes.add(key="gen_ai.provider.name").value.string_value = "openai"
        span.attributes.add(key="gen_ai.input.messages").value.string_value = messages
    return req


def _stored_content(cp: CollectorProcess, tag: str) -> list[tuple[dict[str, object], str]]:
    rows = cp.sql(
        "SELECT s.attributes, c.input_messages FROM spans s JOIN genai_content c"
        " USING (trace_id, span_id) WHERE s.service_name = ? ORDER BY s.span_id",
        [f"content-{tag}"],
    )
    return [(json.loads(a), m) for a, m in rows]


@pytest.mark.slow
def test_collector_workers_store_content_once_and_die_with_it(tmp_path: Path) -> None:
    cp = start_collector(tmp_path / "s.duckdb", tmp_path / "c.log")
    try:
        deadline = time.monotonic() + 60
        while len(workers := _worker_pids(cp.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) == 2, "the default configuration decodes in two worker processes"
        helpers = _children(cp.proc.pid)
        req = _content_span("once")
        resp = requests.post(
            f"{cp.otlp_http}/v1/traces", data=req.SerializeToString(), headers=PB, timeout=30
        )
        assert resp.status_code == 200
        (semconv_attrs, semconv_msgs), (openai_attrs, openai_msgs) = _stored_content(cp, "once")
        sent = [
            kv.value.string_value
            for span in req.resource_spans[0].scope_spans[0].spans
            for kv in span.attributes
            if kv.key == "gen_ai.input.messages"
        ]
        # Sent in the conventions' schema: kept once, in genai_content, as the producer wrote it.
        assert "gen_ai.input.messages" not in semconv_attrs
        assert semconv_attrs["gen_ai.operation.name"] == "chat"
        assert semconv_msgs == sent[0]
        # Rewritten by normalization: the original stays in attributes as sent.
        assert openai_attrs["gen_ai.input.messages"] == sent[1]
        assert json.loads(openai_msgs) == [
            {"role": "user", "parts": [{"type": "text", "content": "hi once"}]}
        ]
    finally:
        cp.proc.send_signal(signal.SIGKILL)
        cp.proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in helpers if _alive(p)], "decode workers outlived a killed collector"


@pytest.mark.slow
def test_collector_without_workers_keeping_content_twice(tmp_path: Path) -> None:
    cp = start_collector(
        tmp_path / "s.duckdb",
        tmp_path / "c.log",
        env={
            "INFERSIGHT_OTLP_DECODE_WORKERS": "0",
            "INFERSIGHT_OTLP_CONTENT_IN_ATTRIBUTES": "true",
        },
    )
    try:
        assert _worker_pids(cp.proc.pid) == []
        req = _content_span("twice")
        resp = requests.post(
            f"{cp.otlp_http}/v1/traces", data=req.SerializeToString(), headers=PB, timeout=30
        )
        assert resp.status_code == 200
        for attrs, messages in _stored_content(cp, "twice"):
            assert json.loads(str(attrs["gen_ai.input.messages"]))[0]["role"] == "user"
            assert json.loads(messages)[0]["parts"][0]["type"] == "text"
        assert _worker_pids(cp.proc.pid) == []
    finally:
        assert cp.stop() == 0
