"""End to end, server side only: an uninstrumented client and a vLLM-style server, the agent
watching the server's process alone (as when the client runs on another node).

A collector process, `tests.agent.native_model_server` answering vLLM's OpenAI-compatible chat
API in plaintext and behind TLS, and `infersight agent` told to capture only the two server
processes (`--pid`). Clients with no tracing at all, each its own process (`curl`, a stdlib
`urllib` script), make 13 calls per scheme: non-streamed, streamed with vLLM's default usage
chunk (a `stream_options` object without `include_usage`), with cumulative usage on every chunk
(`continuous_usage_stats`), without usage, and cut by `max_tokens`. The store must end with
exactly 13 SERVER spans per scheme and not one CLIENT span, each with provider `vllm`, the
response id, models, token counts (cached prompt tokens from `prompt_tokens_details`) and
finish reasons the server sent, and a time to first chunk within 5 ms of the server's own
reading (median) and 50 ms (each).

Needs root and bcc (`.ci/ebpf-setup.sh`) and curl; skips with the reason otherwise.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from typing import Any

import pytest

from agent.capture.bcc_binding import bcc_unavailable_reason
from tests.agent.e2e_support import (
    CURL,
    Call,
    NativeServerProcess,
    NativeStack,
    by_model,
    check_ttfc,
    native_stack,
    run_curl,
    run_urllib,
    wait_spans,
)

_REASON = bcc_unavailable_reason()
pytestmark = [
    pytest.mark.ebpf,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.skipif(CURL is None, reason="needs curl"),
    pytest.mark.timeout(120),
]

CURL_CALLS = 3
URLLIB_CALLS = 10
CALLS = CURL_CALLS + URLLIB_CALLS  # 13, a prime


Stack = NativeStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with native_stack(
        tmp_path_factory.mktemp("agent-server-only"),
        lambda plain, tls: ["--pid", str(plain.proc.pid), "--pid", str(tls.proc.pid)],
    ) as s:
        yield s


def vllm_call(model: str, j: int) -> Call:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": f"Name one idea behind fast inference servers ({j})"},
        ],
    }
    kind = j % 5
    if kind == 1:
        body.update(stream=True, stream_options={})  # vLLM: include_usage defaults to true
    elif kind == 2:
        body.update(stream=True, stream_options={"continuous_usage_stats": True})
    elif kind == 3:
        body.update(stream=True)  # no stream_options: no usage on the wire
    elif kind == 4:
        body.update(stream=True, stream_options={"include_usage": True}, max_tokens=4)
    return Call("/v1/chat/completions", body)


def _check_span(span: dict[str, Any], t: dict[str, Any], server: NativeServerProcess) -> None:
    assert span["kind"] == "server"
    assert span["source"] == "ebpf"
    assert span["gen_ai_provider_name"] == "vllm"
    assert span["gen_ai_operation_name"] == "chat"
    assert span["name"] == f"chat {t['request_model']}"
    assert span["gen_ai_response_model"] == t["response_model"]
    assert span["gen_ai_response_id"] == t["response_id"]
    assert span["gen_ai_request_stream"] is t["stream"]
    if t["usage_sent"]:
        assert span["gen_ai_usage_input_tokens"] == t["input_tokens"]
        assert span["gen_ai_usage_output_tokens"] == t["output_tokens"]
        assert span["gen_ai_usage_cache_read_input_tokens"] == t["cache_read_tokens"]
    else:  # the wire carried no counts: none may be invented
        assert span["gen_ai_usage_input_tokens"] is None
        assert span["gen_ai_usage_output_tokens"] is None
        assert span["gen_ai_usage_cache_read_input_tokens"] is None
    assert span["attributes"]["gen_ai.response.finish_reasons"] == [t["finish_reason"]]
    assert span["status_code"] != "error"
    assert span["server_port"] == server.port
    attrs = span["attributes"]
    assert attrs["process.pid"] == server.proc.pid
    assert attrs["infersight.tls"] is server.tls
    assert attrs["infersight.truncated"] is False, attrs
    assert "client.address" in attrs
    if t["stream"]:
        assert attrs["infersight.wire.stream_events"] == t["events"]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_server_spans_only_with_vllm_usage(stack: Stack, scheme: str) -> None:
    server = stack.plain if scheme == "http" else stack.tls
    calls = [vllm_call(f"vllm-e2e-{scheme}-{j}", j) for j in range(CALLS)]
    run_curl(server, calls[:CURL_CALLS])
    run_urllib(server, calls[CURL_CALLS:], stack.tmp)

    models = {c.model for c in calls}
    truth = server.truth(models)
    assert set(truth) == models
    spans = wait_spans(
        stack.collector, "gen_ai_request_model LIKE ?", [f"vllm-e2e-{scheme}-%"], CALLS
    )
    by_server = by_model(spans, "server")
    assert [s for s in spans if s["kind"] != "server"] == []
    assert len(spans) == CALLS
    assert set(by_server) == models
    for model, t in truth.items():
        _check_span(by_server[model], t, server)
    assert {t["finish_reason"] for t in truth.values()} == {"stop", "length"}
    assert any(not t["usage_sent"] for t in truth.values())
    deviations = check_ttfc({}, by_server, truth)
    print(
        f"vllm {scheme}: {CALLS} server spans; TTFT deviation median "
        f"{statistics.median(deviations['server']) * 1e3:.2f} ms "
        f"(max {max(deviations['server']) * 1e3:.2f})"
    )


def test_no_client_side_was_captured(stack: Stack) -> None:
    kinds = dict(stack.collector.sql("SELECT kind, count(*) FROM spans GROUP BY kind"))
    assert kinds == {"server": 2 * CALLS}
    metrics = stack.agent.metrics()
    assert metrics['infersight_agent_llm_calls_total{role="client"}'] == 0
    assert metrics['infersight_agent_llm_calls_total{role="server"}'] == 2 * CALLS
    for stage in ("kernel", "queue", "output", "sink_error"):
        assert metrics[f'infersight_agent_capture_dropped_total{{stage="{stage}"}}'] == 0, stage
    assert stack.agent.stop() == 0
