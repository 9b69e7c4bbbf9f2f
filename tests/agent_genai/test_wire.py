"""Shared reading rules: tolerant JSON, paths, traceparent, server endpoint, stream fallback,
timing, truncation, the registry's contract."""

from __future__ import annotations

import dataclasses

import pytest

from agent.capture.exchange import ConnectionInfo, HttpExchange, Role, StreamEvent
from agent.genai import jsonvalue, registry, wire
from agent.genai.content import ContentMode
from tests.agent_genai.golden import all_cases

CASES = {c.id: c for c in all_cases()}


# ----------------------------------------------------------------------------- tolerant JSON


@pytest.mark.parametrize(
    ("raw", "value", "complete"),
    [
        (b'{"a": 1}', {"a": 1}, True),
        (
            b'{"model":"gpt-4o","messages":[{"role":"user","content":"hel',
            {"model": "gpt-4o", "messages": [{"role": "user"}]},
            False,
        ),
        (b'{"model":"gpt-4o-mi', {}, False),  # a cut string is dropped, never half-kept
        (b'{"n":12', {}, False),  # a number at the cut may be missing digits
        (b'{"n":12,"b":tr', {"n": 12}, False),
        (b'[1, 2, {"x": null, "y": [true, fal', [1, 2, {"x": None, "y": [True]}], False),
        (b"not json", None, False),
        (b"", None, False),
        (b"\xff\xfe\x00", None, False),
        (b'{"s": "caf\xc3', {}, False),  # cut inside a UTF-8 sequence
        (b'{"a": {"b": 1}} trailing', {"a": {"b": 1}}, False),
    ],
)
def test_loads_reads_prefixes(raw: bytes, value: object, complete: bool) -> None:
    assert jsonvalue.loads(raw) == (value, complete)


def test_prefix_reader_stops_at_depth_without_recursion_error() -> None:
    value, complete = jsonvalue.loads(b"[" * 100_000)
    assert complete is False
    depth = 0
    while isinstance(value, list) and value:
        value = value[0]
        depth += 1
    assert depth < 100


def test_getters_answer_none_for_wrong_types() -> None:
    obj = {"i": 3, "b": True, "f": 1.5, "s": "x", "neg": -2, "big": 2**70, "inf": 1e308 * 10}
    assert jsonvalue.get_int(obj, "i") == 3
    assert jsonvalue.get_int(obj, "b") is None  # booleans are not counts
    assert jsonvalue.get_count(obj, "neg") is None
    assert jsonvalue.get_float(obj, "i") == 3.0
    assert jsonvalue.get_float(obj, "inf") is None
    assert jsonvalue.get_float(obj, "big") == float(2**70)
    assert jsonvalue.get_str(obj, "i") is None
    assert jsonvalue.get_dict("usage", "x") is None
    assert jsonvalue.str_list(["a", 1, None, "b"]) == ["a", "b"]
    assert jsonvalue.maybe_json('{"a": 1}') == {"a": 1}
    assert jsonvalue.maybe_json('{"a": ') == '{"a": '


# ----------------------------------------------------------------------------- wire helpers


def _exchange(**kw: object) -> HttpExchange:
    base: dict[str, object] = {
        "conn": ConnectionInfo(pid=1, role=Role.CLIENT, peer_addr="10.0.0.9", peer_port=8000),
        "method": "POST",
        "path": "/v1/chat/completions",
        "request_headers": {},
        "request_body": b"",
        "start_mono_ns": 1_000_000_000,
        "request_end_mono_ns": 1_000_000_000,
    }
    base.update(kw)
    return HttpExchange(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/v1/chat/completions?api-version=2024", "/v1/chat/completions"),
        ("http://proxy.local:8080/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/chat/completions/", "/v1/chat/completions"),
        ("/", "/"),
        ("", ""),
    ],
)
def test_request_path(path: str, normal: str) -> None:
    assert wire.request_path(_exchange(path=path)) == normal


def test_path_endswith_respects_segments() -> None:
    assert wire.path_endswith("/v1/chat/completions", "chat/completions")
    assert wire.path_endswith("/proxy/openai/v1/completions", "completions")
    assert not wire.path_endswith("/v1/textcompletions", "completions")
    assert not wire.path_endswith("/api/generate_x", "generate")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", False),
        ("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", True),
        ("garbage", False),
    ],
)
def test_traceparent_validation(value: str, valid: bool) -> None:
    assert (wire.parse_traceparent(value) is not None) is valid
    if valid:
        assert wire.parse_traceparent(value) == value[:55]


@pytest.mark.parametrize(
    ("role", "host", "tls", "expected"),
    [
        (Role.CLIENT, "api.openai.com", True, ("api.openai.com", 443)),
        (Role.CLIENT, "vllm.svc:8000", False, ("vllm.svc", 8000)),
        (Role.CLIENT, "[::1]:11434", False, ("::1", 11434)),
        (Role.CLIENT, None, False, ("10.0.0.9", 8000)),
        (Role.SERVER, None, False, ("10.0.0.2", 9000)),
    ],
)
def test_server_endpoint(
    role: Role, host: str | None, tls: bool, expected: tuple[str, int]
) -> None:
    conn = ConnectionInfo(
        pid=1,
        role=role,
        local_addr="10.0.0.2",
        local_port=9000,
        peer_addr="10.0.0.9",
        peer_port=8000 if host != "api.openai.com" else 0,
        tls=tls,
    )
    headers = {"host": host} if host else {}
    assert wire.server_endpoint(_exchange(conn=conn, request_headers=headers)) == expected


def test_split_sse_handles_crlf_comments_and_multiline_data() -> None:
    body = (
        b': keep-alive\r\n\r\nevent: message_start\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
        b'data:[DONE]\n\ndata: {"cut"'
    )
    assert wire.split_sse(body) == [
        ("message_start", b'{"a":\n1}'),
        (None, b"[DONE]"),
        (None, b'{"cut"'),
    ]


@pytest.mark.parametrize(
    "case_id",
    [
        "openai/chat_stream_tools",
        "anthropic/stream_thinking_tool_use",
        "ollama/chat_stream",
        "tgi/generate_stream",
        "openai/responses_stream",
    ],
)
def test_stream_split_from_body_when_no_events_were_handed_over(case_id: str) -> None:
    """Without reassembled events the body is split; everything but timings is the same."""
    with_events = registry.parse_exchange(CASES[case_id].exchange(), ContentMode.FULL)
    exchange = CASES[case_id].exchange()
    exchange.stream_events = []
    from_body = registry.parse_exchange(exchange, ContentMode.FULL)
    assert with_events is not None
    assert from_body is not None
    assert from_body.time_to_first_chunk_s is None
    assert from_body.time_per_output_chunk_s == []
    a, b = dataclasses.asdict(with_events), dataclasses.asdict(from_body)
    for key in ("time_to_first_chunk_s", "time_per_output_chunk_s"):
        a.pop(key)
        b.pop(key)
    assert a == b


# ----------------------------------------------------------------------------- timing rules


def test_ttft_uses_first_output_event_from_request_start() -> None:
    """Role-only and usage-only chunks are not output; TTFT is measured from the request's
    first byte, and per-chunk gaps only between output-carrying events."""
    call = registry.parse_exchange(CASES["vllm/chat_stream_continuous_usage"].exchange())
    assert call is not None
    assert call.time_to_first_chunk_s == pytest.approx(0.060)  # not the role chunk at 45 ms
    assert call.time_per_output_chunk_s == pytest.approx([0.012, 0.012, 0.012])


def test_server_side_capture_uses_the_same_formulas() -> None:
    case = CASES["vllm/chat_stream_continuous_usage"]
    assert case.meta["role"] == "server"
    exchange = case.exchange()
    exchange.conn.role = Role.CLIENT
    client = registry.parse_exchange(exchange)
    server = registry.parse_exchange(case.exchange())
    assert client is not None
    assert server is not None
    assert client.time_to_first_chunk_s == server.time_to_first_chunk_s
    assert client.duration_s == server.duration_s


def test_non_streamed_calls_have_no_chunk_timings() -> None:
    call = registry.parse_exchange(CASES["openai/chat_basic"].exchange())
    assert call is not None
    assert call.time_to_first_chunk_s is None
    assert call.time_per_output_chunk_s == []
    assert call.duration_s == pytest.approx(0.615)


# ----------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    "case_id",
    [
        "openai/chat_stream_tools",
        "anthropic/stream_thinking_tool_use",
        "ollama/chat_stream",
        "tgi/generate_stream",
        "openai/responses_stream",
        "vllm/chat_stream_continuous_usage",
        "openai/completions_stream",
        "tgi/chat_stream_openai_route",
    ],
)
def test_stream_without_its_end_is_flagged_truncated(case_id: str) -> None:
    exchange = CASES[case_id].exchange()
    assert registry.parse_exchange(exchange) is not None
    complete = registry.parse_exchange(exchange)
    assert complete is not None
    assert complete.truncated is False
    exchange.stream_events = exchange.stream_events[: len(exchange.stream_events) // 2 + 1]
    cut = registry.parse_exchange(exchange, ContentMode.FULL)
    assert cut is not None
    assert cut.truncated is True
    assert cut.api == complete.api
    assert cut.request_model == complete.request_model
    assert cut.time_to_first_chunk_s == complete.time_to_first_chunk_s


def test_cut_request_still_names_the_model_and_flags_it() -> None:
    call = registry.parse_exchange(
        CASES["openai/chat_request_truncated"].exchange(), ContentMode.FULL
    )
    assert call is not None
    assert call.truncated
    assert call.request_model == "gpt-4.1"
    assert call.input_messages == [{"role": "user", "parts": []}]


# ----------------------------------------------------------------------------- registry


def test_non_llm_traffic_is_not_parsed() -> None:
    assert registry.parse_exchange(_exchange(method="GET", path="/healthz")) is None
    html = _exchange(
        path="/v1/chat/completions",
        request_body=b"q=1",
        status=200,
        response_headers={"content-type": "text/html"},
        response_body=b"<html>hi</html>",
    )
    assert registry.parse_exchange(html) is None
    other_json = _exchange(path="/v1/chat/completions", request_body=b'{"query": "x"}')
    assert registry.parse_exchange(other_json) is None
    ollama_on_tgi_route = _exchange(path="/generate", request_body=b'{"model":"m","prompt":"p"}')
    assert registry.parse_exchange(ollama_on_tgi_route) is None
    tgi_on_ollama_route = _exchange(path="/api/generate", request_body=b'{"inputs":"p"}')
    assert registry.parse_exchange(tgi_on_ollama_route) is None


class _Broken:
    APIS = ("broken.api",)
    __name__ = "broken"

    def matches(self, exchange: HttpExchange) -> bool:
        return True

    def parse(self, exchange: HttpExchange, content_mode: ContentMode) -> object:
        raise RuntimeError("parser bug")


def test_registry_contains_parser_bugs_and_counts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "PARSERS", (_Broken(),))
    before = registry.parse_failures["broken"]
    assert registry.parse_exchange(_exchange()) is None
    assert registry.parse_failures["broken"] == before + 1


def test_content_mode_strings_and_default() -> None:
    case = CASES["anthropic/messages_cache"]
    default = registry.parse_exchange(case.exchange())
    assert default is not None
    assert default.input_messages is None
    meta = registry.parse_exchange(case.exchange(), "metadata")
    assert meta is not None
    assert meta.system_instructions is not None
    assert meta.system_instructions[0]["type"] == "text"
    assert meta.system_instructions[0]["content_length"] > 50
    assert "content" not in meta.system_instructions[0]
    with pytest.raises(ValueError, match="loud"):
        registry.parse_exchange(case.exchange(), "loud")


def test_every_parser_module_is_documented_and_complete() -> None:
    for parser in registry.PARSERS:
        assert parser.__doc__
        assert len(parser.__doc__) > 100
        assert parser.APIS
        assert callable(parser.matches)
        assert callable(parser.parse)


def test_stream_event_with_error_name_sets_error_type() -> None:
    exchange = CASES["openai/chat_stream_tools"].exchange()
    events = [
        *exchange.stream_events[:3],
        StreamEvent(
            exchange.stream_events[3].arrival_mono_ns,
            b'{"error":{"message":"server overloaded","type":"server_error","code":null}}',
            "error",
        ),
    ]
    exchange.stream_events = events
    call = registry.parse_exchange(exchange)
    assert call is not None
    assert call.error_type == "server_error"
    assert call.truncated is False
