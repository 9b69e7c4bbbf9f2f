"""Golden cases: every provider's captured bytes parse to the expected `InferenceCall`.

Also checks that each case is claimed by exactly the parser that owns its API (all others reject
it), and that the content modes behave as documented on real traffic.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from agent.genai import registry
from agent.genai.content import ContentMode
from tests.agent_genai.golden import GoldenCase, all_cases

CASES = all_cases()
PROVIDERS_COVERED = {"openai", "azure", "vllm", "tgi", "ollama", "anthropic"}


def _diff(actual: Any, expected: Any, where: str = "") -> list[str]:
    """Field-by-field differences; floats compared to 1e-9 relative."""
    if isinstance(expected, float) or isinstance(actual, float):
        if (
            isinstance(actual, int | float)
            and isinstance(expected, int | float)
            and math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)
        ):
            return []
        return [f"{where}: {actual!r} != {expected!r}"]
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual or key not in expected:
                out.append(
                    f"{where}.{key}: missing on one side "
                    f"(actual={actual.get(key)!r}, expected={expected.get(key)!r})"
                )
            else:
                out += _diff(actual[key], expected[key], f"{where}.{key}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: length {len(actual)} != {len(expected)}: {actual!r}"]
        return [
            d
            for i, (a, e) in enumerate(zip(actual, expected, strict=True))
            for d in _diff(a, e, f"{where}[{i}]")
        ]
    return [] if actual == expected else [f"{where}: {actual!r} != {expected!r}"]


def test_every_provider_has_golden_cases() -> None:
    assert {c.provider for c in CASES} >= PROVIDERS_COVERED
    for provider in PROVIDERS_COVERED - {"azure"}:
        assert sum(c.provider == provider for c in CASES) >= 3, provider


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_golden_case_parses_to_expected(case: GoldenCase) -> None:
    call = registry.parse_exchange(case.exchange(), ContentMode.FULL)
    assert call is not None, f"{case.id}: no parser matched"
    differences = _diff(dataclasses.asdict(call), case.expected)
    assert not differences, f"{case.id}:\n" + "\n".join(differences)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_only_the_owning_parser_matches(case: GoldenCase) -> None:
    """Parsers reject other APIs' traffic; OpenAI-compatible servers share one parser per API."""
    api = case.expected["api"]
    exchange = case.exchange()
    claimed = [p for p in registry.PARSERS if p.matches(exchange)]
    owners = [p for p in registry.PARSERS if api in p.APIS]
    assert claimed == owners, (
        f"{case.id} ({api}) claimed by {[getattr(p, '__name__', p) for p in claimed]}"
    )


# Each parser's canonical route(s): a case moved onto another parser's route must still be
# rejected when its payload has another API's shape.
ROUTES = {
    "anthropic_messages": ["/v1/messages"],
    "ollama_native": ["/api/chat", "/api/generate", "/api/embed"],
    "tgi_native": ["/generate", "/generate_stream", "/"],
    "openai_responses": ["/v1/responses"],
    "openai_embeddings": ["/v1/embeddings"],
    "openai_chat": ["/v1/chat/completions"],
    "openai_completions": ["/v1/completions"],
}


def _name(parser: object) -> str:
    return str(getattr(parser, "__name__", "")).rsplit(".", 1)[-1]


def test_routes_table_covers_every_parser() -> None:
    assert set(ROUTES) == {_name(p) for p in registry.PARSERS}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_other_parsers_reject_the_payload_on_their_own_route(case: GoldenCase) -> None:
    """Recognition is path AND payload shape: a foreign payload on a parser's route is refused.

    The one legitimate overlap: a chat-like request (`model` + `messages`) whose response shows
    no API shape (no response at all, or an error body) is accepted by any chat parser whose
    route it is on, because nothing on the wire says otherwise.
    """
    api = case.expected["api"]
    shapeless = case.expected["http_status"] is None or case.expected["http_status"] >= 400
    for parser in registry.PARSERS:
        if api in parser.APIS:
            continue
        for route in ROUTES[_name(parser)]:
            exchange = case.exchange()
            exchange.path = route
            if parser.matches(exchange):
                assert shapeless, f"{case.id} ({api}) accepted by {_name(parser)} on {route}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_content_off_and_metadata_modes(case: GoldenCase) -> None:
    full = registry.parse_exchange(case.exchange(), ContentMode.FULL)
    off = registry.parse_exchange(case.exchange(), "off")
    meta = registry.parse_exchange(case.exchange(), ContentMode.METADATA)
    assert full is not None
    assert off is not None
    assert meta is not None
    assert off.input_messages is None
    assert off.output_messages is None
    assert off.system_instructions is None
    # Everything but content is identical across modes.
    content = {"input_messages", "output_messages", "system_instructions"}
    strip = {k: v for k, v in dataclasses.asdict(full).items() if k not in content}
    assert {k: v for k, v in dataclasses.asdict(off).items() if k not in content} == strip
    assert {k: v for k, v in dataclasses.asdict(meta).items() if k not in content} == strip
    # Metadata keeps the shape (roles, part types, lengths) but no words.
    for full_msgs, meta_msgs in (
        (full.input_messages, meta.input_messages),
        (full.output_messages, meta.output_messages),
    ):
        if full_msgs is None:
            assert meta_msgs is None
            continue
        assert meta_msgs is not None
        assert [m["role"] for m in meta_msgs] == [m["role"] for m in full_msgs]
        for fm, mm in zip(full_msgs, meta_msgs, strict=True):
            assert [p["type"] for p in mm["parts"]] == [p["type"] for p in fm["parts"]]
            for fp, mp in zip(fm["parts"], mm["parts"], strict=True):
                assert "content" not in mp
                assert "arguments" not in mp
                assert "response" not in mp
                if fp["type"] == "text":
                    # Redaction may change lengths, so compare with the unredacted parse.
                    assert isinstance(mp["content_length"], int)
    meta_text = repr(meta.input_messages) + repr(meta.output_messages)
    for msgs in (full.input_messages or []) + (full.output_messages or []):
        for part in msgs["parts"]:
            words = part.get("content")
            if isinstance(words, str) and len(words) > 3:
                assert words not in meta_text


def test_unredacted_parse_keeps_the_original_text() -> None:
    case = next(c for c in CASES if c.id == "openai/chat_basic")
    raw = registry.parse_exchange(case.exchange(), ContentMode.FULL, redact_content=False)
    assert raw is not None
    assert raw.input_messages is not None
    assert "jane.doe@example.com" in raw.input_messages[1]["parts"][0]["content"]
    redacted = registry.parse_exchange(case.exchange(), ContentMode.FULL)
    assert redacted is not None
    assert redacted.input_messages is not None
    assert "jane.doe@example.com" not in repr(redacted.input_messages)
