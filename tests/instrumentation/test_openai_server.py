"""The OpenAI-compatible test server, driven by the real `openai` client, in process and as a
subprocess: its answers follow its documented rules and its ground truth matches the wire."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import openai
import pytest

from tests.conftest import REPO
from tests.support.openai_server import ANSWERS, OpenAIServer

MESSAGES = [
    {"role": "system", "content": "one two three four five six seven eight"},
    {"role": "user", "content": "nine ten"},
]


@pytest.fixture
def server() -> OpenAIServer:
    srv = OpenAIServer(first_chunk_delay_s=0.2).start()
    yield srv  # type: ignore[misc]
    srv.stop()
    srv.stop()  # safe twice


def _client(srv: OpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="k", max_retries=0, timeout=10)


def test_chat_answer_follows_the_rules(server: OpenAIServer) -> None:
    r = _client(server).chat.completions.create(model="m1", messages=MESSAGES)
    truth = server.by_response_id(r.id)
    assert r.model == truth.response_model == "m1-2025-01-01"
    assert r.usage is not None
    assert r.usage.prompt_tokens == truth.input_tokens == 10 + 2 * 3
    assert r.usage.prompt_tokens_details.cached_tokens == truth.cached_input_tokens == 8
    assert r.usage.completion_tokens == truth.output_tokens == len(ANSWERS[0].split())
    assert r.choices[0].message.content == truth.text == ANSWERS[0]
    assert r.choices[0].finish_reason == "stop"


def test_stream_usage_only_when_asked_and_first_chunk_delay(server: OpenAIServer) -> None:
    client = _client(server)
    for include in (True, False):
        t0 = time.monotonic()
        first = None
        usage = []
        extra = {"stream_options": {"include_usage": True}} if include else {}
        for chunk in client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, **extra
        ):
            first = first if first is not None else time.monotonic() - t0
            if chunk.usage is not None:
                usage.append(chunk.usage.completion_tokens)
        truth = server.served()[-1]
        assert truth.include_usage is include
        assert usage == ([truth.output_tokens] if include else [])
        assert truth.server_ttfc_s is not None
        assert 0.2 <= truth.server_ttfc_s <= first  # type: ignore[operator]


def test_length_tools_completion_embeddings_and_failure(server: OpenAIServer) -> None:
    client = _client(server)
    r = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2)
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None
    assert r.usage.completion_tokens == 2
    r = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    )
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.tool_calls[0].id == server.served()[-1].tool_call_id
    c = client.completions.create(model="i", prompt="a b c")
    assert c.usage is not None
    assert c.usage.prompt_tokens == 3
    e = client.embeddings.create(model="e", input=["a b", "c"])
    assert len(e.data) == 2
    assert len(e.data[0].embedding) == 8
    assert e.usage.prompt_tokens == 3
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="fail-503", messages=MESSAGES)
    assert server.served()[-1].status == 503


def test_runs_as_a_subprocess() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.openai_server",
            "--port",
            "0",
            "--first-chunk-delay-ms",
            "10",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        base = line.split()[-1]
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0, timeout=10)
        r = client.chat.completions.create(model="m", messages=MESSAGES)
        with urllib.request.urlopen(f"{base}/_test/served", timeout=10) as resp:
            served = json.loads(resp.read())
        assert [s["response_id"] for s in served] == [r.id]
    finally:
        proc.terminate()
        proc.wait(10)
