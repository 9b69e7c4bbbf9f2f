"""The OTLP decoders and body reader on their own, plus the GenAI hand-off to normalization.

Pure-function checks (AnyValue conversion, limits at their exact boundaries, rejection of
whole resources, exponential histograms with negative buckets, body inflation limits), and the
plumbing between the decoders and `collector.genai.normalize`, with stand-in normalizers whose
output the stored rows must carry, end to end through the HTTP receiver.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

import collector.otlp.decode_logs as decode_logs_mod
import collector.otlp.decode_traces as decode_traces_mod
from collector.genai.normalize import GenAIContent, NormalizedGenAI
from collector.otlp.body import BadEncodingError, BodyTooLargeError, read_body
from collector.otlp.decode_logs import decode_logs
from collector.otlp.decode_metrics import decode_metrics
from collector.otlp.decode_traces import decode_traces
from collector.otlp.jsonwire import JsonWireError, parse_json
from collector.otlp.limits import ReceiverLimits
from collector.otlp.values import DecodeStats, RejectedItemError, any_value, attributes
from tests.collector.otlp_support import running_receivers
from tests.collector.otlp_support.payloads import (
    first_span,
    logs_request,
    nested_array,
    trace_request,
)

LIMITS = ReceiverLimits()


def test_any_value_kinds() -> None:
    v = AnyValue()
    assert any_value(v, 1, 8) is None
    v.bytes_value = b"\x00\x01\xfe"
    assert any_value(v, 1, 8) == base64.b64encode(b"\x00\x01\xfe").decode()
    for x, expected in (
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        (-0.5, -0.5),
    ):
        v.double_value = x
        assert any_value(v, 1, 8) == expected
    v.int_value = -(2**63)
    assert any_value(v, 1, 8) == -(2**63)
    kv = AnyValue()
    entry = kv.kvlist_value.values.add(key="a")
    entry.value.array_value.values.add().bool_value = False
    kv.kvlist_value.values.add(key="a2").value.string_value = "ü"
    assert any_value(kv, 1, 8) == {"a": [False], "a2": "ü"}


@pytest.mark.parametrize(("depth", "ok"), [(32, True), (33, False)])
def test_depth_limit_boundary(depth: int, ok: bool) -> None:
    req = trace_request(1)
    first_span(req).attributes.add(key="nest").value.CopyFrom(nested_array(depth))
    out = decode_traces(req, LIMITS, 0)
    assert (out.accepted, out.rejected) == ((1, 0) if ok else (0, 1))
    if ok:
        stored = json.loads(out.tables["spans"].column("attributes")[0].as_py())["nest"]
        for _ in range(depth):
            (stored,) = stored
        assert stored == "leaf"
    else:
        assert out.reasons == {"too_deep": 1}


def test_attribute_limit_boundary() -> None:
    limits = ReceiverLimits(max_attributes=5)
    req = trace_request(2)  # each span has one attribute already
    spans = req.resource_spans[0].scope_spans[0].spans
    for i in range(4):
        spans[0].attributes.add(key=f"x{i}").value.int_value = i
    for i in range(5):
        spans[1].attributes.add(key=f"x{i}").value.int_value = i
    out = decode_traces(req, limits, 0)
    assert (out.accepted, out.rejected, out.reasons) == (1, 1, {"too_many_attributes": 1})
    with pytest.raises(RejectedItemError):
        attributes(spans[1].attributes, 5, 8)


def test_bad_resource_rejects_every_span_under_it() -> None:
    req = trace_request(3)
    for i in range(3):
        req.resource_spans[0].resource.attributes.add(key=f"r{i}").value.string_value = "v"
    out = decode_traces(req, ReceiverLimits(max_attributes=3), 0)
    assert (out.accepted, out.rejected) == (0, 3)
    assert out.error_message("spans").startswith("rejected 3 of 3 spans: more attributes")
    assert "spans" not in out.tables


def test_exponential_histogram_negative_buckets_and_bad_histogram() -> None:
    req = ExportMetricsServiceRequest()
    metrics = req.resource_metrics.add().scope_metrics.add().metrics
    exp = metrics.add(name="e").exponential_histogram
    exp.aggregation_temporality = 1
    p = exp.data_points.add(count=5, scale=3, zero_count=1, time_unix_nano=10_000)
    p.negative.offset = -4
    p.negative.bucket_counts.extend([2, 0, 1])
    p.positive.offset = 7
    p.positive.bucket_counts.extend([1])
    hist = metrics.add(name="h").histogram
    hist.data_points.add(count=1, bucket_counts=[1], explicit_bounds=[])
    hist.data_points.add(count=1, bucket_counts=[1], explicit_bounds=[1.0, 2.0])
    metrics.add(name="no data")
    out = decode_metrics(req, LIMITS, 0)
    assert (out.accepted, out.rejected, out.reasons) == (2, 1, {"invalid_histogram": 1})
    rows = out.tables["metric_points"].to_pylist()
    e = next(r for r in rows if r["metric_name"] == "e")
    assert (e["exp_scale"], e["exp_zero_count"], e["temporality"]) == (3, 1, "delta")
    assert (e["exp_negative_offset"], e["exp_negative_bucket_counts"]) == (-4, [2, 0, 1])
    assert (e["exp_positive_offset"], e["exp_positive_bucket_counts"]) == (7, [1])
    assert e["sum"] is None  # unset optional field stays NULL, not 0


def _body(*chunks: bytes) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    return gen()


def test_read_body_limits_after_decompression() -> None:
    data = b"a" * 5000
    run = asyncio.run
    assert run(read_body(_body(data[:10], data[10:]), "", 5000)) == data
    with pytest.raises(BodyTooLargeError):
        run(read_body(_body(data, b"b"), "identity", 5000))
    packed = gzip.compress(data)
    assert run(read_body(_body(packed[:7], packed[7:]), "gzip", 5000)) == data
    with pytest.raises(BodyTooLargeError):
        run(read_body(_body(packed), "gzip", 4999))
    two = gzip.compress(b"x" * 10) + gzip.compress(b"y" * 10)
    assert run(read_body(_body(two), "x-gzip", 100)) == b"x" * 10 + b"y" * 10
    with pytest.raises(BadEncodingError):
        run(read_body(_body(packed[:-4]), "gzip", 10_000))
    with pytest.raises(BadEncodingError):
        run(read_body(_body(packed + b"trailing junk"), "gzip", 10_000))
    assert run(read_body(_body(), "gzip", 10)) == b""


def test_json_parser_errors_name_the_problem() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    for body, needle in (
        (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"xyz1"}]}]}]}', "hex"),
        (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"abc"}]}]}]}', "hex"),
        (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":5}]}]}]}', "name field"),
        (b"null", "object"),
    ):
        with pytest.raises(JsonWireError, match=needle):
            parse_json(body, ExportTraceServiceRequest)


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        ReceiverLimits(max_body_bytes=10)
    with pytest.raises(ValueError, match="bearer_token"):
        ReceiverLimits(bearer_token="  ")
    assert ReceiverLimits().max_body_bytes == 20 * 1024 * 1024


# -- the hand-off to GenAI normalization ---------------------------------------------------


def _fake_normalize(
    attrs: dict[str, Any],
    name: str,
    events: list[tuple[str, dict[str, Any], int]],
    start_unix_ns: int | None = None,
) -> NormalizedGenAI | None:
    if attrs.get("gen_ai.operation.name") != "chat":
        return None
    return NormalizedGenAI(
        dialect="stand-in",
        columns={
            "gen_ai_operation_name": "chat",
            "gen_ai_request_model": attrs.get("gen_ai.request.model"),
            "gen_ai_usage_input_tokens": attrs.get("tokens"),
            "gen_ai_response_finish_reasons": ["stop", name],
            "gen_ai_request_temperature": "not a number",  # a bug must not sink the export
            "server_port": 443,
            "not_a_column": "ignored",
        },
        content=GenAIContent(
            input_messages=[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
            output_messages=[{"role": "assistant", "parts": [], "raw": b"\x01"}],
            origin="span_events" if events else "span_attributes",
        ),
    )


def test_normalization_fills_columns_and_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(decode_traces_mod, "normalize_span", _fake_normalize)
    req = trace_request(2)
    span = first_span(req)
    span.attributes.add(key="gen_ai.operation.name").value.string_value = "chat"
    span.attributes.add(key="gen_ai.request.model").value.string_value = "m-1"
    span.attributes.add(key="tokens").value.int_value = 99
    span.events.add(name="gen_ai.choice")
    with running_receivers(tmp_path / "store.duckdb") as rx:
        resp = requests.post(
            f"{rx.http_url}/v1/traces",
            data=req.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=10,
        )
        assert resp.status_code == 200
        rows = rx.rows(
            "SELECT span_id, gen_ai_dialect, gen_ai_operation_name, gen_ai_request_model,"
            " gen_ai_usage_input_tokens, gen_ai_response_finish_reasons,"
            " gen_ai_request_temperature, server_port FROM spans ORDER BY gen_ai_dialect"
        )
        assert rows[0][1:] == ("stand-in", "chat", "m-1", 99, ["stop", "good span"], None, 443)
        assert rows[1][1:] == (None,) * 7
        (content,) = rx.rows(
            "SELECT trace_id, span_id, epoch_ns(time), origin, input_messages, output_messages,"
            " system_instructions, tool_definitions FROM genai_content"
        )
        assert content[:4] == (
            span.trace_id.hex(),
            span.span_id.hex(),
            span.start_time_unix_nano,
            "span_events",
        )
        assert json.loads(content[4])[0]["parts"][0]["content"] == "hi"
        assert json.loads(content[5])[0]["raw"] == base64.b64encode(b"\x01").decode()
        assert content[6:] == (None, None)


def test_normalization_error_keeps_the_span(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> NormalizedGenAI | None:
        raise RuntimeError("normalizer bug")

    monkeypatch.setattr(decode_traces_mod, "normalize_span", broken)
    stats = DecodeStats()
    out = decode_traces(trace_request(3), LIMITS, 0, stats)
    assert (out.accepted, out.rejected, stats.normalize_errors) == (3, 0, 3)
    assert out.tables["spans"].column("gen_ai_dialect").null_count == 3


def test_log_events_yield_content(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, dict[str, Any], Any]] = []

    def fake(event_name: str, attrs: dict[str, Any], body: Any) -> GenAIContent | None:
        seen.append((event_name, attrs, body))
        if not event_name.startswith("gen_ai."):
            return None
        return GenAIContent(output_messages=[{"role": "assistant", "body": body}])

    monkeypatch.setattr(decode_logs_mod, "content_from_log_event", fake)
    req = logs_request()
    records = req.resource_logs[0].scope_logs[0].log_records
    rec = records.add(
        event_name="gen_ai.choice",
        trace_id=b"\x0a" * 16,
        span_id=b"\x0b" * 8,
        time_unix_nano=123_000,
    )
    rec.body.kvlist_value.values.add(key="index").value.int_value = 0
    other = records.add(observed_time_unix_nano=5_000)
    other.attributes.add(key="event.name").value.string_value = "app.other"
    out = decode_logs(req, LIMITS, 0)
    assert out.accepted == 3
    assert [s[0] for s in seen] == ["gen_ai.choice", "app.other"]
    (row,) = out.tables["genai_content"].to_pylist()
    assert (row["trace_id"], row["span_id"], row["origin"]) == ("0a" * 16, "0b" * 8, "log_events")
    assert json.loads(row["output_messages"]) == [{"role": "assistant", "body": {"index": 0}}]


def test_span_event_times_reach_the_normalizer() -> None:
    """OpenLLMetry marks the first streamed chunk with a span event; its time gives TTFC."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from collector.otlp.decode_traces import decode_traces
    from collector.otlp.limits import ReceiverLimits

    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = b"\x01" * 16
    span.span_id = b"\x02" * 8
    span.name = "openai.chat"
    span.start_time_unix_nano = 1_000_000_000
    span.end_time_unix_nano = 2_000_000_000
    for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai")):
        kv = span.attributes.add()
        kv.key = key
        kv.value.string_value = value
    event = span.events.add()
    event.name = "gen_ai.content.completion.chunk"
    event.time_unix_nano = 1_250_000_000
    table = decode_traces(req, ReceiverLimits(), 0).tables["spans"]
    assert table.column("gen_ai_response_time_to_first_chunk")[0].as_py() == 0.25


def test_pod_from_span_attributes_when_the_resource_has_none() -> None:
    """The node agent puts one node on its resource and each call's pod on the span."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from collector.otlp.decode_traces import decode_traces
    from collector.otlp.limits import ReceiverLimits

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "k8s.node.name", "node-a"
    spans = rs.scope_spans.add().spans
    for i, (ns, pod) in enumerate([("team-a", "chat-0"), ("team-b", "rag-1")]):
        span = spans.add()
        span.trace_id = bytes([i + 1]) * 16
        span.span_id = bytes([i + 1]) * 8
        span.name = "chat m"
        for key, value in (("k8s.namespace.name", ns), ("k8s.pod.name", pod)):
            a = span.attributes.add()
            a.key, a.value.string_value = key, value
    table = decode_traces(req, ReceiverLimits(), 0).tables["spans"]
    assert table.column("k8s_namespace").to_pylist() == ["team-a", "team-b"]
    assert table.column("k8s_pod").to_pylist() == ["chat-0", "rag-1"]
    assert table.column("k8s_node").to_pylist() == ["node-a", "node-a"]
