"""`prompt_fingerprint`: same template, same fingerprint; different template, different one."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.analytics.fingerprint import normalize_text, prompt_fingerprint


def sys_(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "content": text}]


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "parts": [{"type": "text", "content": text}]}]


def test_values_are_normalized() -> None:
    a = normalize_text(
        "Order 12345 for user 550e8400-e29b-41d4-a716-446655440000 on "
        "2024-03-05T10:00:00Z at 10:30, hash deadbeef12, id ord_8f3k2x, "
        "total 1,234.56 (15%) see https://x.example/a?b=1 mail a.b@c.org "
        "on March 3, 2025 or 03/04/2025"
    )
    assert a == (
        "Order <num> for user <uuid> on <date> at <time>, hash <hex>, id <id>, "
        "total <num> (<num>) see <url> mail <email> on <date> or <date>"
    )
    assert normalize_text("  many \n\t spaces   here ") == "many spaces here"


def test_same_template_with_other_values_shares_a_fingerprint() -> None:
    a = prompt_fingerprint(
        sys_(
            "You are agent #12. Today is 2024-01-01. Ticket 550e8400-e29b-41d4-a716-"
            "446655440000.\n\nBe brief."
        ),
        user("Where is my parcel?"),
    )
    b = prompt_fingerprint(
        sys_(
            "You are agent #97031.  Today is 2025-12-31. Ticket 123e4567-e89b-12d3-a456-"
            "426614174000. Be brief.  "
        ),
        user("Can I get a refund for order 42?"),
    )
    assert a is not None
    assert a == b
    assert len(a) == 16
    assert int(a, 16) >= 0


def test_other_system_text_or_roles_change_the_fingerprint() -> None:
    base = prompt_fingerprint(sys_("You are a translator."), user("hello"))
    assert base != prompt_fingerprint(sys_("You are a poet."), user("hello"))
    with_assistant = [
        *user("hello"),
        {"role": "assistant", "parts": [{"type": "text", "content": "hi"}]},
        *user("again"),
    ]
    assert base != prompt_fingerprint(sys_("You are a translator."), with_assistant)
    tool = [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "name": "get_weather", "arguments": {"city": "Paris"}}],
        }
    ]
    other_tool = [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "name": "get_time", "arguments": {"city": "Paris"}}],
        }
    ]
    assert prompt_fingerprint(sys_("x"), tool) != prompt_fingerprint(sys_("x"), other_tool)


def test_conversation_keeps_its_fingerprint_as_it_grows() -> None:
    turn = [*user("q"), {"role": "assistant", "parts": [{"type": "text", "content": "a"}]}]
    one = prompt_fingerprint(sys_("S"), [*turn, *user("next")])
    three = prompt_fingerprint(sys_("S"), [*turn, *turn, *turn, *user("next")])
    assert one == three


def test_system_role_messages_count_as_system_text() -> None:
    separate = prompt_fingerprint(sys_("Be terse."), user("x"))
    inline = prompt_fingerprint(
        None, [{"role": "system", "parts": [{"type": "text", "content": "Be terse."}]}, *user("x")]
    )
    assert separate is not None
    assert inline is not None
    assert (
        prompt_fingerprint(
            None,
            [{"role": "system", "parts": [{"type": "text", "content": "Be verbose."}]}, *user("x")],
        )
        != inline
    )


def test_without_system_text_the_user_template_decides() -> None:
    a = prompt_fingerprint(None, user("Summarize ticket 4411 opened 2024-02-02: printer on fire"))
    b = prompt_fingerprint(None, user("Summarize ticket 98 opened 2025-07-30: printer on fire"))
    c = prompt_fingerprint(None, user("Translate this: printer on fire"))
    assert a == b
    assert a != c


def test_json_text_and_parsed_values_agree() -> None:
    si, im = sys_("Rules 1 2 3"), user("hey")
    assert prompt_fingerprint(si, im) == prompt_fingerprint(json.dumps(si), json.dumps(im))
    assert prompt_fingerprint(si, im) == prompt_fingerprint(json.dumps(si).encode(), im)


def test_no_content_gives_none_and_garbage_never_raises() -> None:
    assert prompt_fingerprint(None, None) is None
    assert prompt_fingerprint("", "[]") is None
    assert prompt_fingerprint("not json at all", None) is not None
    assert prompt_fingerprint(42, {"role": 5, "parts": "x"}) is not None
    assert prompt_fingerprint([None, 3, "s"], [1, [2], {"parts": [None, {"type": 7}]}]) is not None


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=30),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["role", "parts", "type", "content", "name", "x"]),
                inner,
                max_size=4,
            )
        ),
        max_leaves=20,
    ),
    st.text(max_size=50),
)
def test_never_raises_on_arbitrary_values(value: Any, text: str) -> None:
    result = prompt_fingerprint(value, value)
    assert result is None or len(result) == 16
    result = prompt_fingerprint(text, text)
    assert result is None or len(result) == 16


def test_fast_enough_for_ingest() -> None:
    system = json.dumps(sys_("You are a helpful assistant for ACME. " * 60))
    calls = [
        json.dumps(user(f"Question {i} about order {i * 7} placed 2024-01-{i % 28 + 1:02d}"))
        for i in range(2000)
    ]
    started = time.perf_counter()
    for msgs in calls:
        prompt_fingerprint(system, msgs)
    per_call_us = (time.perf_counter() - started) / len(calls) * 1e6
    # a shared system prompt is normalized once (cached); the rest is parsing and hashing
    assert per_call_us < 200, per_call_us
