"""End to end: real LLM clients -> real eBPF capture in `infersight agent` -> OTLP -> collector.

A collector process, the agent as a process (the real `infersight agent` command, exporting
OTLP/HTTP to the collector, capturing only the model servers' ports), and the OpenAI-compatible
test server as a process in plaintext and behind TLS. The test process is the client: the real
`openai` package makes a prime number of calls of every kind (streamed with and without usage,
non-streamed, cut by max_tokens, legacy completions, one carrying a W3C traceparent); `curl`
and `requests` make more. Each call must arrive in the collector's store exactly once as a
CLIENT span and once as a SERVER span with `source='ebpf'`, and model, tokens, finish reasons
and ids must equal what the server says it sent; streamed time to first chunk must be within
5 ms of the server's own measurement. Finally the agent is stopped with SIGTERM and must flush
and exit 0, and its `/metrics` must account for every exchange.

Needs root and bcc (`.ci/ebpf-setup.sh`); skips with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.capture.bcc_binding import bcc_unavailable_reason
from tests.agent.e2e_support import spans_where
from tests.agent.processes import AgentProcess, ModelServerProcess
from tests.conftest import CollectorProcess, free_port, start_collector
from tests.support.certs import make_cert

_REASON = bcc_unavailable_reason()
pytestmark = [
    pytest.mark.ebpf,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(300),
]

OPENAI_CALLS = 23  # a prime: no accidental agreement with batch or pool sizes
TTFT_TOLERANCE_S = 0.005  # server span against the server's own clock readings (median)
# One call's reading may lag when the scheduler holds the server thread between its clock
# reading and its write on a loaded 2-core machine; that bound catches a wrong computation
# (off by the whole think time) without failing on a scheduling hiccup.
TTFT_OUTLIER_S = 0.05
# The client's first chunk also crossed loopback and waited for the client's thread; on a busy
# two-core machine that is a few ms. Its request transit is taken out exactly (both spans are
# stamped by the same kernel clock); the response transit is what this extra allows.
CLIENT_EXTRA_TOLERANCE_S = 0.010
CURL = shutil.which("curl")


@dataclass
class Stack:
    collector: CollectorProcess
    plain: ModelServerProcess
    tls: ModelServerProcess
    agent: AgentProcess
    cert: Path
    tmp: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("agent-e2e")
    cert, key = make_cert(tmp)
    collector = start_collector(tmp / "store.duckdb", tmp / "collector.log")
    plain = ModelServerProcess.start(free_port(), id_prefix="p")
    tls = ModelServerProcess.start(free_port(), id_prefix="t", cert=cert, key=key)
    agent = AgentProcess.start(
        [
            "--collector",
            collector.otlp_http,
            "--port",
            str(plain.port),
            "--port",
            str(tls.port),
            "--no-gpu",
        ],
        tmp / "agent.log",
        free_port(),
        env={"INFERSIGHT_K8S_MODE": "off", "INFERSIGHT_EXPORTER_METRIC_INTERVAL_S": "1"},
    )
    try:
        agent.wait_for_metric("infersight_agent_capture_up", 1.0)
        yield Stack(collector, plain, tls, agent, cert, tmp)
    finally:
        agent.stop()
        plain.stop()
        tls.stop()
        collector.stop()


# --- helpers --------------------------------------------------------------------------------


def _spans(collector: CollectorProcess, model: str) -> list[dict[str, Any]]:
    return spans_where(collector, "gen_ai_request_model = ?", [model])


def _wait_spans(
    collector: CollectorProcess, model: str, count: int, timeout_s: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    spans = _spans(collector, model)
    while len(spans) < count and time.monotonic() < deadline:
        time.sleep(0.25)
        spans = _spans(collector, model)
    # a little longer, so that a duplicate would have time to show up too
    time.sleep(1.5)
    return _spans(collector, model)


def _by_kind(
    spans: list[dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    client = [s for s in spans if s["kind"] == "client"]
    server = [s for s in spans if s["kind"] == "server"]
    by_client = {s["gen_ai_response_id"]: s for s in client}
    by_server = {s["gen_ai_response_id"]: s for s in server}
    assert len(by_client) == len(client), "two client spans with one response id"
    assert len(by_server) == len(server), "two server spans with one response id"
    return by_client, by_server


def _check_against_truth(span: dict[str, Any], truth: dict[str, Any], operation: str) -> None:
    assert span["source"] == "ebpf"
    assert span["service_name"] == "infersight-agent"
    assert span["name"] == f"{operation} {truth['request_model']}"
    assert span["gen_ai_operation_name"] == operation
    assert span["gen_ai_provider_name"] == "openai"
    assert span["gen_ai_response_model"] == truth["response_model"]
    assert span["gen_ai_request_stream"] is truth["stream"]
    assert span["gen_ai_response_finish_reasons"] == truth["finish_reasons"]
    tokens_sent = not truth["stream"] or truth["include_usage"]
    if tokens_sent:
        assert span["gen_ai_usage_input_tokens"] == truth["input_tokens"]
        assert span["gen_ai_usage_output_tokens"] == truth["output_tokens"]
        assert span["gen_ai_usage_cache_read_input_tokens"] == truth["cached_input_tokens"]
    else:  # the wire never carried a count: none may be invented
        assert span["gen_ai_usage_input_tokens"] is None
        assert span["gen_ai_usage_output_tokens"] is None
    if truth["stream"]:
        ttfc = span["gen_ai_response_time_to_first_chunk"]
        assert ttfc is not None
        if span["kind"] == "server":
            assert abs(ttfc - truth["server_ttfc_s"]) <= TTFT_OUTLIER_S, (ttfc, truth)
    else:
        assert span["gen_ai_response_time_to_first_chunk"] is None
    assert span["status_code"] != "error"
    assert span["server_address"] == "127.0.0.1"
    assert span["end_unix_ns"] >= span["start_unix_ns"]
    attrs = span["attributes"]
    assert attrs["infersight.source"] == "ebpf"
    if not (span["kind"] == "client" and truth["stream"]):
        assert attrs["infersight.truncated"] is False
    assert attrs["http.response.status_code"] == 200


def _check_client_ttfc(
    client: dict[str, Any],
    server: dict[str, Any],
    truth: dict[str, Any],
    seen: CallTimes | None = None,
) -> None:
    """The client's time to first chunk lies between two measured bounds: at least the
    server's own (plus the request's transit, measured on the wire: cause precedes effect), at
    most what the client code itself saw (its clock was read before the request was written
    and after the first chunk had been read; without those readings, the span's duration)."""
    if not truth["stream"]:
        return
    request_transit_s = (server["start_unix_ns"] - client["start_unix_ns"]) / 1e9
    lower_s = truth["server_ttfc_s"] + request_transit_s - TTFT_TOLERANCE_S
    if seen is not None:
        assert seen.first_output_mono_ns is not None
        upper_s = (seen.first_output_mono_ns - seen.start_mono_ns) / 1e9
    else:
        upper_s = (client["end_unix_ns"] - client["start_unix_ns"]) / 1e9
    got_s = client["gen_ai_response_time_to_first_chunk"]
    assert lower_s <= got_s <= upper_s, (lower_s, got_s, upper_s)


def _check_client_stream_complete(client: dict[str, Any], server: dict[str, Any]) -> None:
    """A streaming client may close its connection as soon as the terminal event is in, before
    the chunked body's last (empty) chunk arrives; the capture then marks the HTTP response
    truncated. Nothing of the call is missing: every event the server wrote was seen."""
    attrs = client["attributes"]
    if attrs["infersight.truncated"]:
        assert client["gen_ai_request_stream"] is True
        assert (
            attrs["infersight.wire.stream_events"]
            == server["attributes"]["infersight.wire.stream_events"]
        )


def _truth(server: ModelServerProcess, model: str, verify: Any = True) -> dict[str, dict[str, Any]]:
    return {t["response_id"]: t for t in server.served(verify) if t["request_model"] == model}


# --- tests ----------------------------------------------------------------------------------


@dataclass
class CallTimes:
    """The test's own clock readings around one call."""

    start_unix_s: float
    end_unix_s: float
    start_mono_ns: int
    first_output_mono_ns: int | None = None


def _first_output(chunks: Any) -> int | None:
    """Drain a stream; the monotonic time at which the first chunk with output was in hand."""
    first: int | None = None
    for chunk in chunks:
        if first is None and any(
            getattr(getattr(c, "delta", None), "content", None) or getattr(c, "text", None)
            for c in chunk.choices
        ):
            first = time.monotonic_ns()
    return first


def _openai_calls(client: Any, model: str, count: int, traceparent: str) -> list[CallTimes]:
    """`count` calls of five kinds, one after another, with the client's own timings."""
    out: list[CallTimes] = []
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What does a KV cache hold?"},
    ]
    for i in range(count):
        kind = i % 5
        t0 = time.time()
        t0_mono = time.monotonic_ns()
        first: int | None = None
        if kind == 0:
            client.chat.completions.create(model=model, messages=messages)
        elif kind == 1:
            first = _first_output(
                client.chat.completions.create(
                    model=model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
        elif kind == 2:
            first = _first_output(
                client.chat.completions.create(model=model, messages=messages, stream=True)
            )
        elif kind == 3:
            client.chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=3,
                extra_headers={"traceparent": traceparent},
            )
        else:
            client.completions.create(model=model, prompt="Say something about batching.")
        out.append(CallTimes(t0, time.time(), t0_mono, first))
    return out


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_openai_client_calls_arrive_once_per_side(stack: Stack, scheme: str) -> None:
    import openai

    server = stack.plain if scheme == "http" else stack.tls
    model = f"gpt-e2e-{scheme}"
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    verify: Any = ssl.create_default_context(cafile=str(stack.cert)) if scheme == "https" else True
    http_client = httpx.Client(verify=verify)
    client = openai.OpenAI(
        base_url=f"{server.origin}/v1", api_key="test-key", max_retries=0, http_client=http_client
    )
    with http_client:
        calls = _openai_calls(client, model, OPENAI_CALLS, f"00-{trace_id}-{parent_id}-01")

    truth = _truth(server, model, verify)
    assert len(truth) == OPENAI_CALLS
    spans = _wait_spans(stack.collector, model, 2 * OPENAI_CALLS)
    by_client, by_server = _by_kind(spans)
    assert len(by_client) == OPENAI_CALLS, [s["name"] for s in spans]
    assert len(by_server) == OPENAI_CALLS
    assert len(spans) == 2 * OPENAI_CALLS
    assert set(by_client) == set(truth) == set(by_server)

    # the calls were made one after another, so sequence order is call order
    seen_by_id = {
        t["response_id"]: seen
        for t, seen in zip(sorted(truth.values(), key=lambda t: t["seq"]), calls, strict=True)
    }
    deviations_s = [
        abs(by_server[rid]["gen_ai_response_time_to_first_chunk"] - t["server_ttfc_s"])
        for rid, t in truth.items()
        if t["stream"]
    ]
    assert deviations_s
    assert statistics.median(deviations_s) <= TTFT_TOLERANCE_S, deviations_s
    for response_id, t in truth.items():
        operation = "chat" if t["operation"] == "chat" else "text_completion"
        client_span, server_span = by_client[response_id], by_server[response_id]
        _check_against_truth(client_span, t, operation)
        _check_against_truth(server_span, t, operation)
        assert client_span["attributes"]["process.pid"] == os.getpid()
        assert server_span["attributes"]["process.pid"] == server.proc.pid
        assert client_span["attributes"]["infersight.tls"] is (scheme == "https")
        assert server_span["attributes"]["infersight.tls"] is (scheme == "https")
        assert client_span["server_port"] == server.port == server_span["server_port"]
        _check_client_stream_complete(client_span, server_span)
        seen = seen_by_id[response_id]
        _check_client_ttfc(client_span, server_span, t, seen)
        # wire times: inside the test's own clock readings, and the server's view inside the
        # client's (the request leaves the client before the server reads it)
        earliest_ns = int(seen.start_unix_s * 1e9) - 2_000_000
        latest_ns = int(seen.end_unix_s * 1e9) + 2_000_000
        c_start, c_end = client_span["start_unix_ns"], client_span["end_unix_ns"]
        s_start, s_end = server_span["start_unix_ns"], server_span["end_unix_ns"]
        assert earliest_ns <= c_start <= c_end <= latest_ns
        assert earliest_ns <= s_start <= s_end
        if not client_span["attributes"]["infersight.truncated"]:
            assert s_end <= latest_ns
        else:  # the server wrote its last chunk after the client had left
            assert s_end <= latest_ns + 100_000_000
        assert client_span["start_unix_ns"] <= server_span["start_unix_ns"] + 5_000_000
        if not client_span["attributes"]["infersight.truncated"]:
            assert server_span["end_unix_ns"] <= client_span["end_unix_ns"] + 5_000_000
        if t["finish_reasons"] == ["length"]:
            # the call that carried a traceparent joined that trace, on both sides
            for s in (client_span, server_span):
                assert s["trace_id"] == trace_id
                assert s["parent_span_id"] == parent_id
        else:
            assert client_span["parent_span_id"] in (None, "")
            assert client_span["trace_id"] != trace_id
    assert sum(t["finish_reasons"] == ["length"] for t in truth.values()) == (OPENAI_CALLS + 1) // 5


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_and_requests_clients(stack: Stack) -> None:
    """Other clients, other processes: curl (its own pid) and requests (this process)."""
    import requests

    model = "gpt-e2e-other-clients"
    body = {"model": model, "messages": [{"role": "user", "content": "Hello there"}]}
    url = f"{stack.plain.origin}/v1/chat/completions"
    curl_pids = []
    for i in range(3):
        doc = {**body, "stream": i == 1}
        proc = subprocess.Popen(
            [
                CURL or "curl",
                "-sS",
                "-N",
                "-H",
                "content-type: application/json",
                "-d",
                json.dumps(doc),
                url,
            ],
            stdout=subprocess.PIPE,
        )
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert out
        curl_pids.append(proc.pid)
    with requests.Session() as session:
        for i in range(5):
            resp = session.post(url, json={**body, "stream": i % 2 == 1}, stream=True)
            assert resp.status_code == 200
            for _ in resp.iter_content(1024):
                pass

    truth = _truth(stack.plain, model)
    assert len(truth) == 8
    spans = _wait_spans(stack.collector, model, 16)
    by_client, by_server = _by_kind(spans)
    assert len(spans) == 16
    assert set(by_client) == set(truth) == set(by_server)
    client_pids = sorted(s["attributes"]["process.pid"] for s in by_client.values())
    assert client_pids == sorted([*curl_pids, *[os.getpid()] * 5])
    for response_id, t in truth.items():
        _check_against_truth(by_client[response_id], t, "chat")
        _check_client_ttfc(by_client[response_id], by_server[response_id], t)
        _check_against_truth(by_server[response_id], t, "chat")
    curl_spans = [s for s in by_client.values() if s["attributes"]["process.pid"] in curl_pids]
    assert {s["attributes"]["process.executable.name"] for s in curl_spans} == {"curl"}


def test_untraced_urllib_client_in_another_process(stack: Stack) -> None:
    """A client with no tracing at all (stdlib urllib, no traceparent) in its own process."""
    model = "gpt-e2e-urllib"
    script = (
        "import json, sys, urllib.request\n"
        "for i in range(7):\n"
        "    req = urllib.request.Request(sys.argv[1], data=json.dumps({'model': sys.argv[2],"
        " 'messages': [{'role': 'user', 'content': 'hi'}]}).encode(),"
        " headers={'content-type': 'application/json'})\n"
        "    urllib.request.urlopen(req).read()\n"
    )
    url = f"{stack.plain.origin}/v1/chat/completions"
    proc = subprocess.run([sys.executable, "-c", script, url, model], check=True, timeout=60)
    assert proc.returncode == 0
    truth = _truth(stack.plain, model)
    assert len(truth) == 7
    spans = _wait_spans(stack.collector, model, 14)
    by_client, by_server = _by_kind(spans)
    assert len(spans) == 14
    assert set(by_server) == set(truth) == set(by_client)
    for response_id, t in truth.items():
        _check_against_truth(by_server[response_id], t, "chat")
        _check_against_truth(by_client[response_id], t, "chat")
        _check_client_ttfc(by_client[response_id], by_server[response_id], t)
        # no traceparent on the wire: each side starts its own trace
        assert by_server[response_id]["parent_span_id"] in (None, "")
        assert by_client[response_id]["attributes"]["process.executable.name"].startswith("python")


def test_agent_accounts_for_everything_and_stops_cleanly(stack: Stack) -> None:
    metrics = stack.agent.metrics()
    llm = metrics['infersight_agent_exchanges_total{outcome="llm"}']
    spans = stack.collector.sql("SELECT count(*) FROM spans WHERE source = 'ebpf'")[0][0]
    assert llm == spans
    assert metrics['infersight_agent_exchanges_total{outcome="parse_error"}'] == 0
    drops = {
        stage: metrics[f'infersight_agent_capture_dropped_total{{stage="{stage}"}}']
        for stage in ("kernel", "queue", "output", "sink_error")
    }
    # the agent itself loses nothing; ring buffer and queue losses depend on the machine's load
    # (and must be reported the same over OTLP, checked below)
    assert drops["output"] == 0, drops
    assert drops["sink_error"] == 0, drops
    handled = sum(
        metrics[f'infersight_agent_exchanges_total{{outcome="{o}"}}']
        for o in ("llm", "not_llm", "parse_error", "filtered")
    )
    assert handled == metrics["infersight_agent_capture_exchanges_total"]
    assert (
        metrics['infersight_agent_llm_calls_total{role="client"}']
        + metrics['infersight_agent_llm_calls_total{role="server"}']
        == llm
    )

    assert stack.agent.stop() == 0
    log = stack.agent.log.read_text()
    assert "spans and metrics flushed" in log
    # the self-metrics reached the collector as OTLP metrics too
    rows = stack.collector.sql(
        "SELECT attributes->>'outcome', max(value) FROM metric_points "
        "WHERE metric_name = 'infersight.agent.exchanges' GROUP BY ALL"
    )
    assert dict(rows)["llm"] == llm
    rows = stack.collector.sql(
        "SELECT attributes->>'stage', max(value) FROM metric_points "
        "WHERE metric_name = 'infersight.agent.capture.dropped' GROUP BY ALL"
    )
    assert dict(rows) == drops
    rows = stack.collector.sql(
        "SELECT count(*) FROM metric_points WHERE metric_name = 'gen_ai.server.request.duration'"
    )
    assert rows[0][0] > 0
