"""Property tests: no parser raises, whatever the bytes.

Inputs are derived from every golden case (cut at random points, events dropped or cut, JSON
members replaced by values of the wrong type) and from pure noise. `matches` and `parse` of every
parser are called directly, so a failure cannot hide behind the registry's safety net; the
registry is also checked to have swallowed nothing.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.capture.exchange import ConnectionInfo, HttpExchange, Role, StreamEvent
from agent.genai import registry
from agent.genai.call import InferenceCall
from agent.genai.content import ContentMode
from tests.agent_genai.golden import all_cases

CASES = all_cases()
ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/generate",
    "/generate_stream",
    "/",
    "/openai/deployments/x/chat/completions?api-version=1",
]
CONTENT_TYPES = ["application/json", "text/event-stream", "application/x-ndjson", "text/html", ""]
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _exercise(exchange: HttpExchange) -> None:
    """Every parser's matches and parse, every content mode; none may raise."""
    before = sum(registry.parse_failures.values())
    for parser in registry.PARSERS:
        assert isinstance(parser.matches(exchange), bool)
        for mode in (ContentMode.FULL, ContentMode.METADATA):
            call = parser.parse(exchange, mode)
            assert isinstance(call, InferenceCall)
            orjson.dumps(call.input_messages)  # content stays serializable
            orjson.dumps(call.output_messages)
    result = registry.parse_exchange(exchange, ContentMode.FULL)
    assert result is None or isinstance(result, InferenceCall)
    assert sum(registry.parse_failures.values()) == before


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "usage",
                    "choices",
                    "model",
                    "id",
                    "delta",
                    "message",
                    "content",
                    "type",
                    "object",
                    "error",
                    "done",
                    "index",
                    "details",
                    "token",
                    "text",
                    "messages",
                    "prompt",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@SETTINGS
@given(case=st.sampled_from(CASES), data=st.data())
def test_cut_golden_exchanges_never_raise(case: Any, data: st.DataObject) -> None:
    exchange = case.exchange()
    exchange.request_body = exchange.request_body[
        : data.draw(st.integers(0, len(exchange.request_body)), label="request cut")
    ]
    exchange.response_body = exchange.response_body[
        : data.draw(st.integers(0, len(exchange.response_body)), label="response cut")
    ]
    keep = data.draw(st.integers(0, len(exchange.stream_events)), label="events kept")
    events = exchange.stream_events[:keep]
    if events:
        last = events[-1]
        cut = data.draw(st.integers(0, len(last.data)), label="last event cut")
        events[-1] = StreamEvent(last.arrival_mono_ns, last.data[:cut], last.event)
    exchange.stream_events = events
    exchange.response_truncated = data.draw(st.booleans())
    exchange.request_truncated = data.draw(st.booleans())
    _exercise(exchange)


def _mutate(value: Any, data: st.DataObject, depth: int = 0) -> Any:
    """Replace one random member somewhere in `value` with a random JSON value."""
    if isinstance(value, dict) and value and depth < 6:
        key = data.draw(st.sampled_from(sorted(value)))
        out = dict(value)
        if data.draw(st.booleans()):
            out[key] = data.draw(json_values)
        else:
            out[key] = _mutate(value[key], data, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 6:
        index = data.draw(st.integers(0, len(value) - 1))
        out_list = list(value)
        out_list[index] = _mutate(value[index], data, depth + 1)
        return out_list
    return data.draw(json_values)


def _mutate_json_bytes(raw: bytes, data: st.DataObject) -> bytes:
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return json.dumps(_mutate(value, data)).encode()


@SETTINGS
@given(case=st.sampled_from(CASES), data=st.data())
def test_wrong_types_in_golden_json_never_raise(case: Any, data: st.DataObject) -> None:
    exchange = case.exchange()
    exchange.request_body = _mutate_json_bytes(exchange.request_body, data)
    if exchange.stream_events:
        events = list(exchange.stream_events)
        for _ in range(data.draw(st.integers(1, 3))):
            i = data.draw(st.integers(0, len(events) - 1))
            ev = events[i]
            events[i] = StreamEvent(ev.arrival_mono_ns, _mutate_json_bytes(ev.data, data), ev.event)
        exchange.stream_events = events
    else:
        exchange.response_body = _mutate_json_bytes(exchange.response_body, data)
    _exercise(exchange)


@SETTINGS
@given(
    path=st.sampled_from(ROUTES) | st.text(max_size=30),
    method=st.sampled_from(["POST", "GET", "post", ""]),
    request_body=st.binary(max_size=300),
    response_body=st.binary(max_size=300),
    content_type=st.sampled_from(CONTENT_TYPES),
    event_data=st.lists(
        st.binary(max_size=60) | st.sampled_from([b"[DONE]", b"", b"{}", b"[]"]), max_size=5
    ),
    status=st.none() | st.integers(100, 599),
    times=st.tuples(st.integers(0, 10**12), st.integers(0, 10**12) | st.none()),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "host",
                "traceparent",
                "x-request-id",
                "request-id",
                "x-prompt-tokens",
                "x-generated-tokens",
                "anthropic-version",
            ]
        ),
        st.text(max_size=60),
        max_size=4,
    ),
)
def test_random_bytes_never_raise(
    path: str,
    method: str,
    request_body: bytes,
    response_body: bytes,
    content_type: str,
    event_data: list[bytes],
    status: int | None,
    times: tuple[int, int | None],
    headers: dict[str, str],
) -> None:
    start, end = times
    exchange = HttpExchange(
        conn=ConnectionInfo(
            pid=1,
            role=Role.SERVER if start % 2 else Role.CLIENT,
            peer_addr="::1",
            peer_port=start % 70000,
        ),
        method=method,
        path=path,
        request_headers=dict(headers),
        request_body=request_body,
        start_mono_ns=start,
        request_end_mono_ns=start,
        status=status,
        response_headers={"content-type": content_type, **headers},
        response_body=response_body,
        end_mono_ns=end,
        stream_events=[
            StreamEvent(start + i, d, "error" if i == 2 else None) for i, d in enumerate(event_data)
        ],
    )
    _exercise(exchange)


@SETTINGS
@given(case=st.sampled_from(CASES), junk=st.binary(min_size=1, max_size=200), data=st.data())
def test_golden_requests_with_junk_responses_never_raise(
    case: Any, junk: bytes, data: st.DataObject
) -> None:
    exchange = copy.copy(case.exchange())
    if data.draw(st.booleans()):
        exchange.response_body = junk
        exchange.stream_events = []
    else:
        exchange.stream_events = [StreamEvent(i, junk[i:], None) for i in range(3)]
    exchange.response_headers = {"content-type": data.draw(st.sampled_from(CONTENT_TYPES))}
    _exercise(exchange)


WRONG_VALUES: list[Any] = ["x", -1, None, {"k": 1}, [1, "a"], 1e308]


def _member_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every object member, at any depth (first item of each array only)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, member in value.items():
            out.append((*prefix, key))
            out += _member_paths(member, (*prefix, key))
    elif isinstance(value, list) and value:
        out += _member_paths(value[0], (*prefix, 0))
    return out


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    out = copy.deepcopy(value)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_member_with_a_wrong_type_never_raises(case: Any) -> None:
    """Systematically: each JSON member of each body or event, replaced by each wrong type."""
    base = case.exchange()
    bodies: list[tuple[str, int]] = [("request", -1)]
    if base.stream_events:
        bodies += [("event", i) for i in range(len(base.stream_events))]
    else:
        bodies.append(("response", -1))
    for where, index in bodies:
        raw = (
            base.request_body
            if where == "request"
            else base.response_body
            if where == "response"
            else base.stream_events[index].data
        )
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        for path in _member_paths(value):
            for wrong in WRONG_VALUES:
                data = json.dumps(_replaced(value, path, wrong)).encode()
                exchange = case.exchange()
                if where == "request":
                    exchange.request_body = data
                elif where == "response":
                    exchange.response_body = data
                else:
                    ev = exchange.stream_events[index]
                    exchange.stream_events[index] = StreamEvent(ev.arrival_mono_ns, data, ev.event)
                for parser in registry.PARSERS:
                    parser.matches(exchange)
                    parser.parse(exchange, ContentMode.FULL)
