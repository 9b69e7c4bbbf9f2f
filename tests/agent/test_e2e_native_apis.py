"""End to end, Anthropic and Ollama: real clients -> eBPF capture in `infersight agent` -> store.

A collector process, the agent as a process (the real command, capturing only the model
servers' ports) and `tests.agent.native_model_server` in plaintext and behind TLS, which speaks
the Anthropic Messages API (SSE and JSON) and Ollama's native API (`/api/chat`, `/api/generate`;
NDJSON and JSON). For each family and scheme, `curl` (a process per call), `requests` (this
process) and Node.js `fetch` make 17 calls between them (3 + 7 + 7, primes: no accidental
agreement with pool or batch sizes), streamed and not, some cut by a token limit. Every call
must be in the store exactly once as a CLIENT span and once as a SERVER span, with provider,
operation, models, response id, token counts (Anthropic's cache reads and writes counted into
the input, as the conventions say) and finish reasons equal to what the server sent, and the
time to first chunk within 5 ms of the server's own reading (median) and 50 ms (each).

Needs root and bcc (`.ci/ebpf-setup.sh`), curl and node; skips with the reason otherwise.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator
from typing import Any

import pytest

from agent.capture.bcc_binding import bcc_unavailable_reason
from tests.agent.e2e_support import (
    CURL,
    NODE,
    Call,
    NativeServerProcess,
    NativeStack,
    by_model,
    check_ttfc,
    native_stack,
    run_curl,
    run_node,
    run_requests,
    wait_for_log,
    wait_spans,
)

_REASON = bcc_unavailable_reason()
pytestmark = [
    pytest.mark.ebpf,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.skipif(CURL is None or NODE is None, reason="needs curl and node"),
    pytest.mark.timeout(150),
]

CLIENT_CALLS = {"curl": 3, "requests": 7, "node": 7}
CALLS = sum(CLIENT_CALLS.values())  # 17
SLACK_NS = 5_000_000
# The collector stores finish reasons in the `gen_ai.output.messages` enum.
STORED_FINISH = {"end_turn": "stop", "max_tokens": "length", "stop": "stop", "length": "length"}
ANTHROPIC_HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}


Stack = NativeStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with native_stack(
        tmp_path_factory.mktemp("agent-native"),
        lambda plain, tls: ["--port", str(plain.port), "--port", str(tls.port)],
    ) as s:
        yield s


def anthropic_call(model: str, j: int) -> Call:
    kind = j % 3
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 3 if kind == 2 else 256,
        "messages": [{"role": "user", "content": f"What does paged attention do? ({j})"}],
        "stream": kind != 1,
    }
    if kind == 0:
        body["system"] = "Answer in one sentence."
    return Call("/v1/messages", body, dict(ANTHROPIC_HEADERS))


def ollama_call(model: str, j: int) -> Call:
    kind = j % 4
    if kind in (0, 1):
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": f"Why batch requests? ({j})"}],
        }
        if kind == 1:
            body["stream"] = False
        # kind 0 leaves "stream" out: Ollama streams by default
        return Call("/api/chat", body)
    body = {"model": model, "prompt": f"Say something about decoding ({j})"}
    if kind == 2:
        body.update(stream=True, options={"num_predict": 3, "temperature": 0.2})
    else:
        body.update(stream=False, system="Be brief.")
    return Call("/api/generate", body)


def _calls(family: str, scheme: str) -> dict[str, list[Call]]:
    make = anthropic_call if family == "anthropic" else ollama_call
    prefix = "claude-e2e" if family == "anthropic" else "llama-e2e"
    out: dict[str, list[Call]] = {}
    j = 0
    for client, count in CLIENT_CALLS.items():
        out[client] = []
        for _ in range(count):
            out[client].append(make(f"{prefix}-{scheme}-{client}-{j}", j))
            j += 1
    return out


def _check_span(span: dict[str, Any], t: dict[str, Any], server: NativeServerProcess) -> None:
    assert span["source"] == "ebpf"
    assert span["gen_ai_provider_name"] == t["provider"]
    assert span["gen_ai_operation_name"] == t["operation"]
    assert span["name"] == f"{t['operation']} {t['request_model']}"
    assert span["gen_ai_response_model"] == t["response_model"]
    assert span["gen_ai_response_id"] == t["response_id"]
    assert span["gen_ai_request_stream"] is t["stream"]
    assert span["gen_ai_usage_input_tokens"] == t["input_tokens"]
    assert span["gen_ai_usage_output_tokens"] == t["output_tokens"]
    assert span["gen_ai_usage_cache_read_input_tokens"] == t["cache_read_tokens"]
    assert span["gen_ai_usage_cache_creation_input_tokens"] == t["cache_creation_tokens"]
    # the wire's word on the span as sent; the store's column in the conventions' enum
    assert span["attributes"]["gen_ai.response.finish_reasons"] == [t["finish_reason"]]
    assert span["gen_ai_response_finish_reasons"] == [STORED_FINISH[t["finish_reason"]]]
    assert span["status_code"] != "error"
    assert span["server_address"] == "127.0.0.1"
    assert span["server_port"] == server.port
    assert span["end_unix_ns"] >= span["start_unix_ns"]
    attrs = span["attributes"]
    assert attrs["infersight.tls"] is server.tls
    assert attrs["infersight.truncated"] is False, attrs
    assert attrs["http.response.status_code"] == 200
    if t["stream"]:
        assert attrs["infersight.wire.stream_events"] == t["events"]


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("family", ["anthropic", "ollama"])
def test_every_call_once_per_side_with_the_servers_values(
    stack: Stack, family: str, scheme: str
) -> None:
    server = stack.plain if scheme == "http" else stack.tls
    calls = _calls(family, scheme)
    if scheme == "https":
        # Node carries its own OpenSSL: make sure the agent has put its probes on that file
        # (once for every node process) before the Node client's first call.
        warm = run_node(server, [], stack.tmp)
        assert warm
        assert wait_for_log(stack.agent, r"OpenSSL uprobes attached to .*/node\b"), (
            stack.agent.log.read_text()[-3000:]
        )
    curl_pids = run_curl(server, calls["curl"])
    run_requests(server, calls["requests"])
    node_pid = run_node(server, calls["node"], stack.tmp)

    models = {c.model for cs in calls.values() for c in cs}
    truth = server.truth(models)
    assert set(truth) == models
    spans = wait_spans(
        stack.collector,
        "gen_ai_request_model LIKE ?",
        [f"{'claude' if family == 'anthropic' else 'llama'}-e2e-{scheme}-%"],
        2 * CALLS,
    )
    by_client, by_server = by_model(spans, "client"), by_model(spans, "server")
    assert len(spans) == 2 * CALLS, sorted((s["kind"], s["name"]) for s in spans)
    assert set(by_client) == models == set(by_server)

    expected_pid = {c.model: pid for c, pid in zip(calls["curl"], curl_pids, strict=True)}
    expected_pid.update({c.model: os.getpid() for c in calls["requests"]})
    expected_pid.update({c.model: node_pid for c in calls["node"]})
    for model, t in truth.items():
        client, srv = by_client[model], by_server[model]
        _check_span(client, t, server)
        _check_span(srv, t, server)
        assert client["attributes"]["process.pid"] == expected_pid[model]
        assert srv["attributes"]["process.pid"] == server.proc.pid
        # The server's view of the call lies inside the client's. Each side is stamped when
        # its own syscall returns, and the reader can wake on the other CPU before the
        # writer's call has returned: hence a little slack.
        assert client["start_unix_ns"] <= srv["start_unix_ns"] + SLACK_NS
        assert srv["end_unix_ns"] <= client["end_unix_ns"] + SLACK_NS
    streamed = [t for t in truth.values() if t["stream"]]
    assert streamed
    assert len(streamed) < CALLS
    deviations = check_ttfc(by_client, by_server, truth)
    print(
        f"{family} {scheme}: {CALLS} calls, {len(streamed)} streamed; TTFT deviation median "
        f"server {statistics.median(deviations['server']) * 1e3:.2f} ms "
        f"(max {max(deviations['server']) * 1e3:.2f}), client "
        f"{statistics.median(deviations['client']) * 1e3:.2f} ms "
        f"(max {max(deviations['client']) * 1e3:.2f})"
    )


def test_agent_lost_nothing_and_stops_cleanly(stack: Stack) -> None:
    metrics = stack.agent.metrics()
    llm = metrics['infersight_agent_exchanges_total{outcome="llm"}']
    spans = stack.collector.sql("SELECT count(*) FROM spans WHERE source = 'ebpf'")[0][0]
    assert llm == spans
    assert metrics['infersight_agent_exchanges_total{outcome="parse_error"}'] == 0
    for stage in ("kernel", "queue", "output", "sink_error"):
        assert metrics[f'infersight_agent_capture_dropped_total{{stage="{stage}"}}'] == 0, stage
    assert metrics["infersight_agent_llm_calls_truncated_total"] == 0
    assert stack.agent.stop() == 0
    assert "spans and metrics flushed" in stack.agent.log.read_text()
