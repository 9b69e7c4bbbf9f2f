"""Hostile and malformed exports against both OTLP receivers, served for real on loopback.

Every case checks the answer (HTTP status and `google.rpc.Status` body, or gRPC status code),
that nothing of a refused export reached the store (row counts of every table), that items
rejected one by one are reported in `partial_success` while their valid neighbours are stored,
and that the receivers still take a good export afterwards.
"""

from __future__ import annotations

import functools
import gzip
import json
import random
import resource
import socket
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.otlp.limits import MIB
from tests.collector.otlp_support import Receivers, running_receivers
from tests.collector.otlp_support.payloads import (
    LOGS_PATH,
    METRICS_PATH,
    TRACE_PATH,
    add_span,
    deep_trace_bytes,
    first_span,
    gzip_bomb,
    logs_request,
    metrics_request,
    nested_array,
    trace_request,
)

PB = "application/x-protobuf"
LIMIT_BYTES = 20 * MIB  # the default; the tests rely on it being the receivers' limit


@pytest.fixture(scope="module")
def rx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    with running_receivers(tmp_path_factory.mktemp("hostile") / "store.duckdb") as r:
        assert r.limits.max_body_bytes == LIMIT_BYTES
        yield r


@functools.cache
def _bomb() -> bytes:
    return gzip_bomb(1 << 30)


# -- payload builders -----------------------------------------------------------------------


def _good_bytes() -> bytes:
    return trace_request().SerializeToString()


def _truncated() -> bytes:
    data = trace_request(3).SerializeToString()
    return data[: len(data) - 7]


def _garbage() -> bytes:
    data = random.Random(20240611).randbytes(4096)
    with pytest.raises(Exception):  # noqa: B017, PT011 - proves the bytes are not an export
        ExportTraceServiceRequest.FromString(data)
    return data


def _bad_utf8() -> bytes:
    req = trace_request(name="MARKERNAME")
    return req.SerializeToString().replace(b"MARKERNAME", b"MARK\xff\xfeNAME")


def _wrong_wire_type() -> bytes:
    # resource_spans (field 1, a message) sent as a varint.
    return b"\x08\x96\x01"


# The partial-success payloads return (bytes, number of spans the receiver must reject).


def _short_trace_id() -> tuple[bytes, int]:
    req = trace_request(2)
    first_span(req).trace_id = b"\x01" * 8
    return req.SerializeToString(), 1


def _zero_trace_id() -> tuple[bytes, int]:
    req = trace_request(3)
    first_span(req).trace_id = bytes(16)
    return req.SerializeToString(), 1


def _long_span_id() -> tuple[bytes, int]:
    req = trace_request(1)
    add_span(req).span_id = b"\x02" * 9
    return req.SerializeToString(), 1


def _too_deep_but_parseable() -> tuple[bytes, int]:
    req = trace_request(2)
    first_span(req).attributes.add(key="deep").value.CopyFrom(nested_array(40))
    return req.SerializeToString(), 1


def _many_attributes() -> tuple[bytes, int]:
    req = trace_request(2)
    span = first_span(req)
    for i in range(100_000):
        kv = span.attributes.add(key=f"attr.{i}")
        kv.value.int_value = i
    return req.SerializeToString(), 1


def _time_overflow() -> tuple[bytes, int]:
    req = trace_request(2)
    first_span(req).end_time_unix_nano = 2**64 - 1
    return req.SerializeToString(), 1


def _huge_attribute() -> bytes:
    req = trace_request()
    first_span(req).attributes.add(key="huge").value.string_value = "x" * (LIMIT_BYTES + MIB)
    return req.SerializeToString()


# -- HTTP --------------------------------------------------------------------------------------


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpCase:
    send: Callable[[Receivers], HttpReply]
    status: int
    body_encoding: str | None = "protobuf"  # google.rpc.Status encoding of an error reply
    stored_spans: int = 0
    rejected: int | None = None
    table: str = "spans"
    extra: dict[str, Any] = field(default_factory=dict)


def _post(
    rx: Receivers,
    data: bytes | Iterator[bytes],
    ctype: str | None = PB,
    path: str = "/v1/traces",
    **headers: str,
) -> HttpReply:
    hdrs = dict(headers)
    if ctype is not None:
        hdrs["Content-Type"] = ctype
    resp = requests.post(f"{rx.http_url}{path}", data=data, headers=hdrs, timeout=60)
    return HttpReply(resp.status_code, dict(resp.headers), resp.content)


def _partial(make: Callable[[], tuple[bytes, int]]) -> Callable[[Receivers], HttpReply]:
    def send(rx: Receivers) -> HttpReply:
        data, _ = make()
        return _post(rx, data)

    return send


def _declared_too_large(rx: Receivers) -> HttpReply:
    """Announce a 100 MiB body and send none of it: the answer must come before the body."""
    with socket.create_connection(("127.0.0.1", rx.http_port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            + f"Content-Length: {100 * MIB}\r\n\r\n".encode()
        )
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        while len(rest) < int(headers["content-length"]):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return HttpReply(int(lines[0].split()[1]), headers, rest)


def _chunked_over_limit(rx: Receivers) -> HttpReply:
    def chunks() -> Iterator[bytes]:
        yield _good_bytes()
        for _ in range(22):
            yield b"\x00" * MIB

    return _post(rx, chunks())


HTTP_CASES: dict[str, HttpCase] = {
    "truncated_protobuf": HttpCase(lambda rx: _post(rx, _truncated()), 400),
    "garbage_bytes": HttpCase(lambda rx: _post(rx, _garbage()), 400),
    "wrong_wire_type": HttpCase(lambda rx: _post(rx, _wrong_wire_type()), 400),
    "invalid_utf8_string": HttpCase(lambda rx: _post(rx, _bad_utf8()), 400),
    "nesting_200_levels": HttpCase(lambda rx: _post(rx, deep_trace_bytes(200)), 400),
    "garbage_metrics": HttpCase(lambda rx: _post(rx, _garbage(), path="/v1/metrics"), 400),
    "garbage_logs": HttpCase(lambda rx: _post(rx, _truncated(), path="/v1/logs"), 400),
    "gzip_bomb_1gib": HttpCase(lambda rx: _post(rx, _bomb(), **{"Content-Encoding": "gzip"}), 413),
    "declared_length_over_limit": HttpCase(_declared_too_large, 413),
    "chunked_body_over_limit": HttpCase(_chunked_over_limit, 413),
    "huge_single_attribute": HttpCase(lambda rx: _post(rx, _huge_attribute()), 413),
    "text_plain": HttpCase(lambda rx: _post(rx, _good_bytes(), "text/plain"), 415, "json"),
    "missing_content_type": HttpCase(lambda rx: _post(rx, _good_bytes(), None), 415, "json"),
    "unknown_content_encoding": HttpCase(
        lambda rx: _post(rx, _good_bytes(), **{"Content-Encoding": "br"}), 415
    ),
    "corrupt_gzip": HttpCase(
        lambda rx: _post(
            rx, b"\x1f\x8b\x08\x00garbage-not-deflate" * 10, **{"Content-Encoding": "gzip"}
        ),
        400,
    ),
    "truncated_gzip": HttpCase(
        lambda rx: _post(rx, gzip.compress(_good_bytes())[:-12], **{"Content-Encoding": "gzip"}),
        400,
    ),
    "gzip_header_lies": HttpCase(
        lambda rx: _post(rx, _good_bytes(), **{"Content-Encoding": "gzip"}), 400
    ),
    "json_syntax_error": HttpCase(
        lambda rx: _post(rx, b'{"resourceSpans": [', "application/json"), 400, "json"
    ),
    "json_wrong_top_type": HttpCase(
        lambda rx: _post(rx, b'[{"resourceSpans": []}]', "application/json"), 400, "json"
    ),
    "json_wrong_field_type": HttpCase(
        lambda rx: _post(rx, b'{"resourceSpans": 5}', "application/json"), 400, "json"
    ),
    "json_string_for_timestamp": HttpCase(
        lambda rx: _post(
            rx,
            json.dumps(
                {
                    "resourceSpans": [
                        {
                            "scopeSpans": [
                                {
                                    "spans": [
                                        {
                                            "traceId": "5b8efff798038103d269b633813fc60c",
                                            "spanId": "eee19b7ec3c1b174",
                                            "name": "x",
                                            "startTimeUnixNano": "yesterday",
                                        }
                                    ]
                                }
                            ]
                        }
                    ]
                }
            ).encode(),
            "application/json",
        ),
        400,
        "json",
    ),
    "json_non_hex_id": HttpCase(
        lambda rx: _post(
            rx,
            json.dumps(
                {
                    "resourceSpans": [
                        {
                            "scopeSpans": [
                                {
                                    "spans": [
                                        {
                                            "traceId": "W47/95gDgQPSabYzgT/GDA==",
                                            "spanId": "eee19b7ec3c1b174",
                                            "name": "base64 id",
                                        }
                                    ]
                                }
                            ]
                        }
                    ]
                }
            ).encode(),
            "application/json",
        ),
        400,
        "json",
    ),
    "json_number_id": HttpCase(
        lambda rx: _post(
            rx,
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":5}]}]}]}',
            "application/json",
        ),
        400,
        "json",
    ),
    "json_invalid_utf8": HttpCase(
        lambda rx: _post(
            rx,
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\xff"}]}]}]}',
            "application/json",
        ),
        400,
        "json",
    ),
    "json_empty_body": HttpCase(lambda rx: _post(rx, b"", "application/json"), 400, "json"),
    "protobuf_empty_body": HttpCase(lambda rx: _post(rx, b""), 200, None),
    "get_method": HttpCase(
        lambda rx: HttpReply(
            (r := requests.get(f"{rx.http_url}/v1/traces", timeout=10)).status_code, {}, r.content
        ),
        405,
        None,
    ),
    "unknown_path": HttpCase(lambda rx: _post(rx, _good_bytes(), path="/v1/profiles"), 404, None),
    "short_trace_id": HttpCase(_partial(_short_trace_id), 200, None, 1, 1),
    "zero_trace_id": HttpCase(_partial(_zero_trace_id), 200, None, 2, 1),
    "long_span_id": HttpCase(_partial(_long_span_id), 200, None, 1, 1),
    "nesting_over_limit": HttpCase(_partial(_too_deep_but_parseable), 200, None, 1, 1),
    "100k_attributes": HttpCase(_partial(_many_attributes), 200, None, 1, 1),
    "timestamp_overflow": HttpCase(_partial(_time_overflow), 200, None, 1, 1),
}


def _histogram_mismatch(rx: Receivers) -> HttpReply:
    req = metrics_request()
    metric = req.resource_metrics[0].scope_metrics[0].metrics.add()
    metric.name = "bad.histogram"
    point = metric.histogram.data_points.add()
    point.bucket_counts.extend([1, 2, 3])
    point.explicit_bounds.extend([1.0])
    return _post(rx, req.SerializeToString(), path="/v1/metrics")


def _log_bad_span_id(rx: Receivers) -> HttpReply:
    req = logs_request()
    rec = req.resource_logs[0].scope_logs[0].log_records.add()
    rec.span_id = b"\x01\x02\x03"
    rec.body.string_value = "bad id"
    return _post(rx, req.SerializeToString(), path="/v1/logs")


HTTP_CASES["histogram_bucket_mismatch"] = HttpCase(
    _histogram_mismatch, 200, None, 1, 1, table="metric_points"
)
HTTP_CASES["log_bad_span_id"] = HttpCase(_log_bad_span_id, 200, None, 1, 1, table="log_records")

_RESPONSES = {
    "spans": ExportTraceServiceResponse,
    "metric_points": ExportMetricsServiceResponse,
    "log_records": ExportLogsServiceResponse,
}


def _assert_good_export_still_works(rx: Receivers) -> None:
    before = rx.count("spans")
    resp = requests.post(
        f"{rx.http_url}/v1/traces", data=_good_bytes(), headers={"Content-Type": PB}, timeout=30
    )
    assert resp.status_code == 200
    with grpc.insecure_channel(rx.grpc_target) as channel:
        channel.unary_unary(TRACE_PATH)(_good_bytes(), timeout=30)
    assert rx.count("spans") == before + 2
    assert rx.alive()


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_hostile_http(rx: Receivers, case: str) -> None:
    spec = HTTP_CASES[case]
    before = rx.counts()
    reply = spec.send(rx)
    assert reply.status == spec.status, (reply.status, reply.body[:300])
    after = rx.counts()
    expected = dict(before)
    expected[spec.table] += spec.stored_spans
    assert after == expected

    if spec.status >= 400 and spec.body_encoding is not None:
        status = status_pb2.Status()
        if spec.body_encoding == "json":
            assert reply.headers.get("content-type") == "application/json"
            doc = json.loads(reply.body)
            status.code = doc.get("code", 0)
            status.message = doc["message"]
        else:
            assert reply.headers.get("content-type") == PB
            status.ParseFromString(reply.body)
        assert status.message
    if spec.rejected is not None:
        response = _RESPONSES[spec.table].FromString(reply.body)
        assert response.HasField("partial_success")
        partial = response.partial_success
        rejected = (
            getattr(partial, "rejected_spans", 0)
            or getattr(partial, "rejected_data_points", 0)
            or getattr(partial, "rejected_log_records", 0)
        )
        assert rejected == spec.rejected
        assert partial.error_message.startswith(f"rejected {spec.rejected} of")
    elif spec.status == 200:
        response = ExportTraceServiceResponse.FromString(reply.body)
        assert not response.HasField("partial_success")
    _assert_good_export_still_works(rx)


# -- gRPC --------------------------------------------------------------------------------------


@dataclass
class GrpcCase:
    payload: Callable[[], bytes | tuple[bytes, int]]
    code: grpc.StatusCode
    path: str = TRACE_PATH
    compression: grpc.Compression = grpc.Compression.NoCompression
    stored: int = 0
    table: str = "spans"


def _big_compressible() -> bytes:
    """64 MiB once inflated, about 64 KiB on the wire with gzip."""
    req = trace_request()
    first_span(req).attributes.add(key="zeros").value.string_value = "0" * (64 * MIB)
    return req.SerializeToString()


GRPC_CASES: dict[str, GrpcCase] = {
    "garbage_bytes": GrpcCase(_garbage, grpc.StatusCode.INVALID_ARGUMENT),
    "truncated_protobuf": GrpcCase(_truncated, grpc.StatusCode.INVALID_ARGUMENT),
    "invalid_utf8_string": GrpcCase(_bad_utf8, grpc.StatusCode.INVALID_ARGUMENT),
    "wrong_wire_type": GrpcCase(_wrong_wire_type, grpc.StatusCode.INVALID_ARGUMENT),
    "nesting_200_levels": GrpcCase(lambda: deep_trace_bytes(200), grpc.StatusCode.INVALID_ARGUMENT),
    "garbage_metrics": GrpcCase(_garbage, grpc.StatusCode.INVALID_ARGUMENT, METRICS_PATH),
    "truncated_logs": GrpcCase(_truncated, grpc.StatusCode.INVALID_ARGUMENT, LOGS_PATH),
    "huge_single_attribute": GrpcCase(_huge_attribute, grpc.StatusCode.RESOURCE_EXHAUSTED),
    "gzip_inflates_past_limit": GrpcCase(
        _big_compressible, grpc.StatusCode.RESOURCE_EXHAUSTED, compression=grpc.Compression.Gzip
    ),
    "empty_message": GrpcCase(lambda: b"", grpc.StatusCode.OK),
    "unknown_method": GrpcCase(
        _good_bytes,
        grpc.StatusCode.UNIMPLEMENTED,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
    ),
    "short_trace_id": GrpcCase(_short_trace_id, grpc.StatusCode.OK, stored=1),
    "zero_trace_id": GrpcCase(_zero_trace_id, grpc.StatusCode.OK, stored=2),
    "long_span_id": GrpcCase(_long_span_id, grpc.StatusCode.OK, stored=1),
    "nesting_over_limit": GrpcCase(_too_deep_but_parseable, grpc.StatusCode.OK, stored=1),
    "100k_attributes": GrpcCase(_many_attributes, grpc.StatusCode.OK, stored=1),
    "timestamp_overflow": GrpcCase(_time_overflow, grpc.StatusCode.OK, stored=1),
}


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_hostile_grpc(rx: Receivers, case: str) -> None:
    spec = GRPC_CASES[case]
    made = spec.payload()
    data, rejected = made if isinstance(made, tuple) else (made, None)
    before = rx.counts()
    with grpc.insecure_channel(rx.grpc_target) as channel:
        call = channel.unary_unary(spec.path)
        details = ""
        try:
            raw = call(data, timeout=60, compression=spec.compression)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            details = exc.details()
            raw = None
    assert code == spec.code
    assert raw is not None or details
    expected = dict(before)
    expected[spec.table] += spec.stored
    assert rx.counts() == expected
    if raw is not None:
        response = ExportTraceServiceResponse.FromString(raw)
        if rejected is None:
            assert not response.HasField("partial_success")
        else:
            assert response.partial_success.rejected_spans == rejected
            assert response.partial_success.error_message
    _assert_good_export_still_works(rx)


def test_deflate_codings_accepted(rx: Receivers) -> None:
    """zlib-wrapped and raw deflate, and two concatenated gzip members, all decode."""
    before = rx.count("spans")
    body = _good_bytes()
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    raw_deflate = raw.compress(body) + raw.flush()
    for encoded, coding in (
        (zlib.compress(body), "deflate"),
        (raw_deflate, "deflate"),
    ):
        reply = _post(rx, encoded, **{"Content-Encoding": coding})
        assert reply.status == 200
    req = ExportTraceServiceRequest.FromString(_good_bytes())
    more = ExportTraceServiceRequest.FromString(_good_bytes())
    # Two serialized messages concatenated merge into one with both resource_spans.
    two_members = gzip.compress(req.SerializeToString()) + gzip.compress(more.SerializeToString())
    assert _post(rx, two_members, **{"Content-Encoding": "gzip"}).status == 200
    assert rx.count("spans") == before + 4


def test_gzip_bomb_is_refused_without_inflating_it(rx: Receivers) -> None:
    """The receiver runs in this process: had it inflated the gigabyte, the process's peak
    memory would have grown by about that much."""
    bomb = _bomb()
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(3):
        assert _post(rx, bomb, **{"Content-Encoding": "gzip"}).status == 413
        assert _post(rx, bomb, "application/json", **{"Content-Encoding": "gzip"}).status == 413
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib) / 1024
    assert grown_mib < 256
