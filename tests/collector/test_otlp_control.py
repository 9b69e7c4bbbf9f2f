"""Authentication, back-pressure and self-metrics of the OTLP receivers, over both transports.

Real receivers on loopback, real SDK exporters where the behaviour is the client's (sending the
bearer token), raw requests and gRPC stubs where the exact status matters.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.otlp.decode_traces import decode_traces
from collector.otlp.limits import ReceiverLimits
from tests.collector.otlp_support import Receivers, running_receivers
from tests.collector.otlp_support.payloads import TRACE_PATH, first_span, trace_request

PB = {"Content-Type": "application/x-protobuf"}
TOKEN = "s3cret-token"


# -- bearer token --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    limits = ReceiverLimits(bearer_token=TOKEN)
    with running_receivers(tmp_path_factory.mktemp("auth") / "store.duckdb", limits) as rx:
        yield rx


def _sdk_spans(service: str) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("auth").start_as_current_span("authorized span"):
        pass
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer "]
)
def test_http_refuses_missing_or_wrong_token(secured: Receivers, header: str | None) -> None:
    before = secured.counts()
    headers = dict(PB)
    if header is not None:
        headers["Authorization"] = header
    resp = requests.post(
        f"{secured.http_url}/v1/traces",
        data=trace_request().SerializeToString(),
        headers=headers,
        timeout=10,
    )
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert status_pb2.Status.FromString(resp.content).code == code_pb2.UNAUTHENTICATED
    assert secured.counts() == before


def test_http_accepts_token(secured: Receivers) -> None:
    before = secured.count("spans")
    resp = requests.post(
        f"{secured.http_url}/v1/traces",
        data=trace_request().SerializeToString(),
        headers={**PB, "Authorization": f"bearer {TOKEN}"},
        timeout=10,
    )
    assert resp.status_code == 200
    exporter = HttpSpans(
        endpoint=f"{secured.http_url}/v1/traces",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert exporter.export(_sdk_spans("auth-http")) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert secured.count("spans") == before + 2
    assert secured.rows("SELECT name FROM spans WHERE service_name = 'auth-http'") == [
        ("authorized span",)
    ]


@pytest.mark.parametrize("token", [None, "wrong"])
def test_grpc_refuses_missing_or_wrong_token(secured: Receivers, token: str | None) -> None:
    before = secured.counts()
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    with (
        grpc.insecure_channel(secured.grpc_target) as channel,
        pytest.raises(grpc.RpcError) as err,
    ):
        channel.unary_unary(TRACE_PATH)(
            trace_request().SerializeToString(), timeout=10, metadata=metadata
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert secured.counts() == before
    assert (
        secured.metric(
            "infersight_otlp_requests_total",
            {"signal": "traces", "transport": "grpc", "status": "UNAUTHENTICATED"},
        )
        >= 1
    )


def test_grpc_accepts_token(secured: Receivers) -> None:
    before = secured.count("spans")
    exporter = GrpcSpans(
        endpoint=secured.grpc_target,
        insecure=True,
        timeout=10,
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert exporter.export(_sdk_spans("auth-grpc")) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert secured.count("spans") == before + 1


# -- back-pressure ---------------------------------------------------------------------------


def test_full_queue_answers_503_and_unavailable(tmp_path: Path) -> None:
    """A writer that is not draining, with a one-batch queue already full: both transports
    must refuse (retryably) without storing anything, and recover once the writer runs."""
    limits = ReceiverLimits(retry_after_s=7)
    with running_receivers(
        tmp_path / "store.duckdb", limits, start_writer=False, max_queue_batches=1
    ) as rx:
        blocker = decode_traces(trace_request(), limits, 0)
        queued = rx.writer.submit(blocker.tables)  # fills the queue; nothing drains it yet

        resp = requests.post(
            f"{rx.http_url}/v1/traces",
            data=trace_request().SerializeToString(),
            headers=PB,
            timeout=10,
        )
        assert resp.status_code == 503
        assert resp.headers["retry-after"] == "7"
        assert status_pb2.Status.FromString(resp.content).code == code_pb2.UNAVAILABLE

        with (
            grpc.insecure_channel(rx.grpc_target) as channel,
            pytest.raises(grpc.RpcError) as err,
        ):
            channel.unary_unary(TRACE_PATH)(trace_request().SerializeToString(), timeout=10)
        exc = err.value
        assert exc.code() == grpc.StatusCode.UNAVAILABLE
        details = dict(exc.trailing_metadata())
        status = status_pb2.Status.FromString(details["grpc-status-details-bin"])
        assert status.code == code_pb2.UNAVAILABLE
        retry = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(retry)
        assert retry.retry_delay.seconds == 7

        assert rx.count("spans") == 0
        assert (
            rx.metric(
                "infersight_otlp_requests_total",
                {"signal": "traces", "transport": "http", "status": "503"},
            )
            == 1
        )
        assert (
            rx.metric(
                "infersight_otlp_requests_total",
                {"signal": "traces", "transport": "grpc", "status": "UNAVAILABLE"},
            )
            == 1
        )
        refused = {"signal": "traces", "reason": "queue_full"}
        assert rx.metric("infersight_otlp_rejected_total", refused) == 2

        rx.start_writer()
        assert queued.result(timeout=30) == 1
        resp = requests.post(
            f"{rx.http_url}/v1/traces",
            data=trace_request().SerializeToString(),
            headers=PB,
            timeout=10,
        )
        assert resp.status_code == 200
        with grpc.insecure_channel(rx.grpc_target) as channel:
            channel.unary_unary(TRACE_PATH)(trace_request().SerializeToString(), timeout=10)
        assert rx.count("spans") == 3


# -- self-metrics ------------------------------------------------------------------------------


def test_counters_follow_exports(tmp_path: Path) -> None:
    with running_receivers(tmp_path / "store.duckdb") as rx:
        req = trace_request(3)
        first_span(req).span_id = b"\x00" * 8
        resp = requests.post(
            f"{rx.http_url}/v1/traces", data=req.SerializeToString(), headers=PB, timeout=10
        )
        assert resp.status_code == 200
        partial = ExportTraceServiceResponse.FromString(resp.content).partial_success
        assert partial.rejected_spans == 1
        with grpc.insecure_channel(rx.grpc_target) as channel:
            channel.unary_unary(TRACE_PATH)(trace_request(2).SerializeToString(), timeout=10)
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(TRACE_PATH)(b"\xff\xff", timeout=10)
        requests.post(f"{rx.http_url}/v1/traces", data=b"junk", headers=PB, timeout=10)

        m = rx.metric
        assert m("infersight_otlp_received_total", {"signal": "traces", "transport": "http"}) == 3
        assert m("infersight_otlp_accepted_total", {"signal": "traces", "transport": "http"}) == 2
        assert m("infersight_otlp_received_total", {"signal": "traces", "transport": "grpc"}) == 2
        assert m("infersight_otlp_accepted_total", {"signal": "traces", "transport": "grpc"}) == 2
        assert (
            m(
                "infersight_otlp_rejected_total",
                {"signal": "traces", "reason": "invalid_span_id"},
            )
            == 1
        )
        assert (
            m(
                "infersight_otlp_requests_total",
                {"signal": "traces", "transport": "http", "status": "200"},
            )
            == 1
        )
        assert (
            m(
                "infersight_otlp_requests_total",
                {"signal": "traces", "transport": "http", "status": "400"},
            )
            == 1
        )
        assert (
            m(
                "infersight_otlp_requests_total",
                {"signal": "traces", "transport": "grpc", "status": "OK"},
            )
            == 1
        )
        assert (
            m(
                "infersight_otlp_requests_total",
                {"signal": "traces", "transport": "grpc", "status": "INVALID_ARGUMENT"},
            )
            == 1
        )
        assert rx.count("spans") == 4
