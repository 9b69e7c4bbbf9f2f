"""Spans and log events captured from the real instrumentation libraries, normalized and
compared with what the test server really answered."""

from __future__ import annotations

from typing import Any

import pytest

from collector.genai import values
from collector.genai.normalize import NormalizedGenAI, content_from_log_event, normalize_span
from tests.genai.cases import CASES, Case
from tests.genai.checks import check_finish_reasons, check_identity, check_ttfc, check_usage
from tests.genai.expectations import DIALECTS, FAMILIES

SPAN_CASES = [c for c in CASES if c.spans]


def _normalize(case: Case) -> NormalizedGenAI:
    span = case.genai_span
    assert span is not None
    norm = normalize_span(
        span["attributes"], span["name"], case.events(span), span["start_unix_ns"]
    )
    assert norm is not None, f"{case.id}: span {span['name']} not recognised as GenAI"
    return norm


def _texts(messages: list[dict[str, Any]] | None) -> list[str]:
    return [p["content"] for m in messages or [] for p in m["parts"] if p.get("type") == "text"]


def test_fixtures_cover_every_family() -> None:
    assert {c.family for c in CASES} == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_library_makes_spans_for_the_documented_scenarios(family: str) -> None:
    seen = {c.scenario for c in CASES if c.family == family and c.spans}
    assert seen == FAMILIES[family].scenarios


@pytest.mark.parametrize("case", SPAN_CASES, ids=lambda c: c.id)
def test_columns_equal_ground_truth(case: Case) -> None:
    served = case.served
    assert served is not None
    norm = _normalize(case)
    cols = norm.columns
    assert norm.dialect == DIALECTS[case.family]
    check_identity(case.family, case.scenario, served, cols)
    check_usage(case.family, case.scenario, served, cols, case.genai_span["attributes"])  # type: ignore[index]
    check_finish_reasons(case.family, case.scenario, served, cols)
    check_ttfc(case.family, served, cols)
    if cols.get("gen_ai_response_finish_reasons"):
        assert norm.finish_reasons_raw is not None
        assert len(norm.finish_reasons_raw) == len(served["finish_reasons"])
        assert values.finish_reasons(norm.finish_reasons_raw) == case.expected_finish_reasons


@pytest.mark.parametrize("case", SPAN_CASES, ids=lambda c: c.id)
def test_request_parameters(case: Case) -> None:
    cols = _normalize(case).columns
    if case.scenario == "chat":
        assert cols["gen_ai_request_temperature"] == 0.5
        assert cols["gen_ai_request_top_p"] == 0.9
        assert cols["gen_ai_request_max_tokens"] == 200
    if case.scenario == "chat_length":
        assert cols["gen_ai_request_max_tokens"] == 3


CONTENT_CASES = [
    c
    for c in SPAN_CASES
    if c.served
    and c.served["status"] == 200
    and c.scenario not in ("embeddings",)
    and _normalize(c).content is not None
]


def test_content_families() -> None:
    families = {c.family for c in CONTENT_CASES}
    # Every family captures content on spans except the legacy official one (log events).
    assert families == set(FAMILIES) - {"openai-v2-legacy"}


@pytest.mark.parametrize("case", CONTENT_CASES, ids=lambda c: c.id)
def test_span_content_matches_the_exchange(case: Case) -> None:
    served = case.served
    assert served is not None
    content = _normalize(case).content
    assert content is not None
    assert content.origin == "span_attributes"
    sent = [m["content"] for m in served["request_messages"]]
    inputs = _texts(content.input_messages)
    assert inputs == sent
    assert [m["role"] for m in content.input_messages or []] == [
        m["role"] for m in served["request_messages"]
    ]
    if content.system_instructions is not None:
        # OpenLIT also copies the system message into the instructions.
        assert content.system_instructions == [{"type": "text", "content": sent[0]}]
    out = content.output_messages
    assert out is not None
    assert len(out) == 1
    assert out[0]["role"] == "assistant"
    if served["tool_call_id"]:
        call = out[0]["parts"][0]
        assert call == {
            "type": "tool_call",
            "id": served["tool_call_id"],
            "name": "get_weather",
            "arguments": {"city": "Paris"},
        } | ({k: call[k] for k in call if k not in ("type", "id", "name", "arguments")})
    else:
        assert "".join(_texts(out)) == served["text"]
    assert out[0].get("finish_reason") in (None, *(case.expected_finish_reasons or []))


LOG_CASES = [c for c in CASES if c.logs]


@pytest.mark.parametrize("case", LOG_CASES, ids=lambda c: c.id)
def test_log_events_become_content(case: Case) -> None:
    served = case.served
    assert served is not None
    found = [content_from_log_event(r["event_name"], r["attributes"], r["body"]) for r in case.logs]
    assert all(f is not None for f in found)
    inputs = [m for f in found if f for m in f.input_messages or []]
    outputs = [m for f in found if f for m in f.output_messages or []]
    assert all(f.origin == "log_events" for f in found if f)
    sent = [m["content"] for m in served["request_messages"]]
    assert _texts(inputs) == sent
    system = [p["content"] for f in found if f for p in f.system_instructions or []]
    assert system in ([], sent[:1])
    if served["status"] != 200:
        assert outputs == []
        return
    if case.scenario == "embeddings":
        # No text comes back; OpenLLMetry still logs an empty choice per input.
        assert all(m["parts"] == [] for m in outputs)
        return
    assert len(outputs) == 1
    if served["tool_call_id"]:
        part = outputs[0]["parts"][0]
        assert part["type"] == "tool_call"
        assert part["id"] == served["tool_call_id"]
        assert part["arguments"] == {"city": "Paris"}
    else:
        assert "".join(_texts(outputs)) == served["text"]
    assert outputs[0]["finish_reason"] == case.expected_finish_reasons[0]  # type: ignore[index]
