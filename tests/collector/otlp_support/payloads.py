"""Builders for OTLP export payloads used by the receiver tests: good ones and hostile ones.

Everything here is built with the real protobuf classes, or by hand at the wire level where a
test needs bytes that the classes refuse to produce (too deep, bad UTF-8, compression bombs).
"""

from __future__ import annotations

import itertools
import struct
import zlib
from typing import Any

from google.protobuf.internal.encoder import _VarintBytes
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_ids = itertools.count(1)

TRACE_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_PATH = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOGS_PATH = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def fresh_ids() -> tuple[bytes, bytes]:
    """A new valid (trace_id, span_id) pair, unique in this test process."""
    n = next(_ids)
    return (0x5B8EFFF798038103D269B633813F0000 + n).to_bytes(16, "big"), (
        0xEEE19B7EC3C10000 + n
    ).to_bytes(8, "big")


def trace_request(
    n_spans: int = 1, service: str = "hostile-tests", name: str = "good span"
) -> ExportTraceServiceRequest:
    """A valid trace export with `n_spans` spans."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    ss = rs.scope_spans.add()
    ss.scope.name = "payloads"
    for _ in range(n_spans):
        tid, sid = fresh_ids()
        span = ss.spans.add()
        span.trace_id = tid
        span.span_id = sid
        span.name = name
        span.kind = 3
        span.start_time_unix_nano = 1_700_000_000_000_000_000
        span.end_time_unix_nano = 1_700_000_001_000_000_000
        span.attributes.add(key="k").value.string_value = "v"
    return req


def first_span(req: ExportTraceServiceRequest) -> Any:
    return req.resource_spans[0].scope_spans[0].spans[0]


def add_span(req: ExportTraceServiceRequest) -> Any:
    """Append one more valid span to `req` and return it."""
    tid, sid = fresh_ids()
    span = req.resource_spans[0].scope_spans[0].spans.add()
    span.trace_id = tid
    span.span_id = sid
    span.name = "extra span"
    span.start_time_unix_nano = 1_700_000_000_000_000_000
    span.end_time_unix_nano = 1_700_000_000_500_000_000
    return span


def nested_array(depth: int) -> AnyValue:
    """An AnyValue of `depth` nested arrays around one string (depth 0: the string)."""
    value = AnyValue(string_value="leaf")
    for _ in range(depth):
        outer = AnyValue()
        outer.array_value.values.append(value)
        value = outer
    return value


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _VarintBytes(number << 3 | 2) + _VarintBytes(len(payload)) + payload


def deep_trace_bytes(depth: int) -> bytes:
    """A trace export whose only span attribute nests `depth` arrays deep, built at the wire
    level because the protobuf runtime itself refuses such depth."""
    value = _field(1, b"leaf")  # AnyValue.string_value
    for _ in range(depth):
        value = _field(5, _field(1, value))  # AnyValue.array_value -> ArrayValue.values
    tid, sid = fresh_ids()
    attribute = _field(1, b"deep") + _field(2, value)  # KeyValue.key, KeyValue.value
    span = _field(1, tid) + _field(2, sid) + _field(5, b"deep span") + _field(9, attribute)
    return _field(1, _field(2, _field(2, span)))  # request -> resource_spans -> scope_spans


def metrics_request(service: str = "hostile-tests") -> ExportMetricsServiceRequest:
    """A valid metrics export with one gauge point."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name").value.string_value = service
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = "good.gauge"
    point = metric.gauge.data_points.add()
    point.time_unix_nano = 1_700_000_000_000_000_000
    point.as_double = 1.5
    return req


def logs_request(service: str = "hostile-tests") -> ExportLogsServiceRequest:
    """A valid logs export with one record."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = service
    rec = rl.scope_logs.add().log_records.add()
    rec.time_unix_nano = 1_700_000_000_000_000_000
    rec.body.string_value = "hello"
    return req


def gzip_bomb(total_bytes: int = 1 << 30) -> bytes:
    """A valid single-member gzip stream of `total_bytes` zeros (about 1 MB for 1 GiB).

    zlib output for a block of zeros after a full flush does not depend on what came before,
    so one compressed block is repeated instead of compressing the whole gigabyte.
    """
    block = 1 << 24
    assert total_bytes % block == 0
    chunk = bytes(block)
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    repeat = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    assert repeat == comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    n = total_bytes // block
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    # A final empty fixed-Huffman block, then the gzip trailer (CRC-32, size mod 2**32).
    return first + repeat * (n - 1) + b"\x03\x00" + struct.pack("<II", crc, total_bytes % 2**32)
