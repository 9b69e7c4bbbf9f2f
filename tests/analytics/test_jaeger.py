"""The Jaeger-compatible query API in the shapes Grafana's Jaeger data source decodes."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from tests.analytics import synth
from tests.analytics.conftest import Seeded

START_US = int(synth.BASE.timestamp() * 1_000_000) - 120_000_000
END_US = int(synth.BASE.timestamp() * 1_000_000) + 800_000_000


def spans_of(c: synth.Call) -> set[str]:
    ids = {c.root_span_id, c.span_id}
    if c.server_span_id:
        ids.add(c.server_span_id)
    return ids


def search(seeded: Seeded, **params: Any) -> list[dict[str, Any]]:
    resp = seeded.get("/jaeger/api/traces", **{"start": START_US, "end": END_US, **params})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["errors"] is None
    assert body["total"] == len(body["data"])
    data: list[dict[str, Any]] = body["data"]
    return data


def check_trace_shape(trace: dict[str, Any]) -> None:
    """What Grafana's TraceResponse/Span structs need, with the right JSON types."""
    assert isinstance(trace["traceID"], str)
    assert len(trace["traceID"]) == 32
    assert isinstance(trace["processes"], dict)
    for span in trace["spans"]:
        assert span["traceID"] == trace["traceID"]
        assert isinstance(span["spanID"], str)
        assert isinstance(span["operationName"], str)
        assert isinstance(span["startTime"], int)
        assert isinstance(span["duration"], int)
        assert span["processID"] in trace["processes"]
        assert isinstance(span["flags"], int)
        for t in span["tags"]:
            assert set(t) == {"key", "type", "value"}
            assert t["type"] in {"string", "bool", "int64", "float64"}
        for ref in span["references"]:
            assert ref["refType"] in {"CHILD_OF", "FOLLOWS_FROM"}
            assert ref["traceID"] == trace["traceID"]
        for log in span["logs"]:
            assert isinstance(log["timestamp"], int)
    for process in trace["processes"].values():
        assert isinstance(process["serviceName"], str)
        assert isinstance(process["tags"], list)


def test_services_and_operations(seeded: Seeded) -> None:
    body = seeded.get("/jaeger/api/services").json()
    assert body["data"] == sorted({c.service for c in seeded.calls} | {"vllm"})
    ops = seeded.get("/jaeger/api/services/chat-api/operations").json()["data"]
    want = {"POST /v1/ask"} | {
        f"{c.operation} {c.model}" for c in seeded.calls if c.service == "chat-api"
    }
    assert ops == sorted(want)
    kinds = seeded.get("/jaeger/api/operations", service="vllm", spanKind="server").json()
    assert kinds["data"] == [
        {"name": "chat meta-llama/Llama-3.1-8B-Instruct", "spanKind": "server"}
    ]
    assert seeded.get("/jaeger/api/services/nobody/operations").json()["data"] == []


def test_search_by_service_and_operation_returns_whole_traces(seeded: Seeded) -> None:
    op = "chat gpt-4o-2024-08-06"
    traces = search(seeded, service="chat-api", operation=op, limit=1500)
    want = {
        c.trace_id: c
        for c in seeded.calls
        if c.service == "chat-api" and c.model == "gpt-4o-2024-08-06"
    }
    assert {t["traceID"] for t in traces} == set(want)
    for trace in traces:
        check_trace_shape(trace)
        call = want[trace["traceID"]]
        assert {s["spanID"] for s in trace["spans"]} == spans_of(call)
        client = next(s for s in trace["spans"] if s["spanID"] == call.span_id)
        assert client["operationName"] == op
        assert client["references"] == [
            {"refType": "CHILD_OF", "traceID": call.trace_id, "spanID": call.root_span_id}
        ]
        assert client["startTime"] == synth.unix_ns(call.start_s) // 1000
        assert (
            client["duration"] == (synth.unix_ns(call.end_s) - synth.unix_ns(call.start_s)) // 1000
        )
        tags = {t["key"]: t for t in client["tags"]}
        assert tags["gen_ai.request.model"] == {
            "key": "gen_ai.request.model",
            "type": "string",
            "value": call.model,
        }
        assert tags["span.kind"]["value"] == "client"
        if call.errored:
            assert tags["error"] == {"key": "error", "type": "bool", "value": True}
        process = trace["processes"][client["processID"]]
        assert process["serviceName"] == "chat-api"
        assert {"key": "k8s.pod.name", "type": "string", "value": call.pod} in process["tags"]
    latest = [
        max(synth.unix_ns(c.start_s), synth.unix_ns(c.start_s - 0.01))
        for c in (want[t["traceID"]] for t in traces)
    ]
    assert latest == sorted(latest, reverse=True)


def test_tags_durations_and_limit(seeded: Seeded) -> None:
    tags = orjson.dumps({"gen_ai.request.model": "mystery-model-7b", "error": "true"}).decode()
    traces = search(seeded, tags=tags, limit=1500)
    assert {t["traceID"] for t in traces} == {
        c.trace_id for c in seeded.calls if c.model == "mystery-model-7b" and c.errored
    }
    logfmt = search(seeded, tags='gen_ai.request.model="mystery-model-7b" error=true', limit=1500)
    assert {t["traceID"] for t in logfmt} == {t["traceID"] for t in traces}
    # a resource attribute matches too
    by_pod = search(seeded, tags=orjson.dumps({"k8s.pod.name": "chat-api-2"}).decode(), limit=1500)
    assert {t["traceID"] for t in by_pod} == {
        c.trace_id for c in seeded.calls if c.pod == "chat-api-2"
    }
    slow = search(seeded, service="chat-api", minDuration="2s", maxDuration="3500ms", limit=1500)
    want = {
        c.trace_id
        for c in seeded.calls
        if c.service == "chat-api"
        and (2.0 <= c.duration_s <= 3.5 or 2.0 <= c.duration_s + 0.02 <= 3.5)
    }
    assert {t["traceID"] for t in slow} == want
    top = search(seeded, limit=5)
    assert len(top) == 5
    newest = sorted(seeded.calls, key=lambda c: c.start_s, reverse=True)
    newest_ids = []
    for c in newest:
        if c.trace_id not in newest_ids:
            newest_ids.append(c.trace_id)
    assert [t["traceID"] for t in top] == newest_ids[:5]


def test_time_window_in_microseconds_and_milliseconds(seeded: Seeded) -> None:
    mid_us = int(synth.ts(300).timestamp() * 1_000_000)
    first_half = search(seeded, start=START_US, end=mid_us, limit=1500)
    in_ms = search(seeded, start=START_US // 1000, end=mid_us // 1000, limit=1500)
    assert {t["traceID"] for t in first_half} == {t["traceID"] for t in in_ms}
    assert {t["traceID"] for t in first_half} == {
        c.trace_id for c in seeded.calls if c.start_s - 0.01 <= 300
    }


def test_trace_by_id(seeded: Seeded) -> None:
    call = next(c for c in seeded.calls if c.server_span_id)
    body = seeded.get(f"/jaeger/api/traces/{call.trace_id}").json()
    assert len(body["data"]) == 1
    trace = body["data"][0]
    check_trace_shape(trace)
    assert {s["spanID"] for s in trace["spans"]} == spans_of(call)
    services = {p["serviceName"] for p in trace["processes"].values()}
    assert services == {call.service, "vllm"}
    server = next(s for s in trace["spans"] if s["spanID"] == call.server_span_id)
    assert {
        "key": "gen_ai.latency.time_in_queue",
        "type": "float64",
        "value": call.queue_s,
    } in server["tags"]
    # content kept in genai_content only comes back as the attribute it arrived as
    with_content = next(c for c in seeded.calls if c.user_text is not None)
    got = seeded.get(f"/jaeger/api/traces/{with_content.trace_id}").json()["data"][0]
    llm = next(s for s in got["spans"] if s["spanID"] == with_content.span_id)
    tags = {t["key"]: t["value"] for t in llm["tags"]}
    assert json.loads(tags["gen_ai.input.messages"]) == with_content.input_messages()
    assert json.loads(tags["gen_ai.output.messages"]) == with_content.output_messages()
    stripped = call.trace_id.lstrip("0")
    assert (
        seeded.get(f"/jaeger/api/traces/{stripped}").json()["data"][0]["traceID"] == call.trace_id
    )
    missing = seeded.get(f"/jaeger/api/traces/{'f' * 32}")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == 404


def test_dependencies(seeded: Seeded) -> None:
    end_ms = int(synth.ts(700).timestamp() * 1000)
    body = seeded.get("/jaeger/api/dependencies", endTs=end_ms, lookback=900_000).json()
    expected: dict[tuple[str, str], int] = {}
    for c in seeded.calls:
        if c.server_span_id:
            expected[(c.service, "vllm")] = expected.get((c.service, "vllm"), 0) + 1
    assert {(d["parent"], d["child"]): d["callCount"] for d in body["data"]} == expected


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "lots"},
        {"minDuration": "fast"},
        {"tags": "{not json"},
        {"minDuration": "2s", "maxDuration": "1s"},
        {"start": "abc"},
        {"start": str(END_US), "end": str(START_US)},
    ],
)
def test_bad_search_parameters(seeded: Seeded, params: dict[str, str]) -> None:
    resp = seeded.get("/jaeger/api/traces", **params)
    assert resp.status_code == 400
    body = resp.json()
    assert body["data"] is None
    assert body["errors"][0]["code"] == 400
    assert seeded.get("/jaeger/api/traces/zz-not-hex").status_code == 400
