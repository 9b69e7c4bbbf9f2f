"""Redaction: what must be replaced, what must be left alone, and structure handling."""

from __future__ import annotations

import time

import pytest

from agent.redact import redact_messages, redact_text, redact_value

POSITIVES = [
    ("write to jane.doe+news@example.co.uk today", "write to [REDACTED:email] today"),
    ("ops@corp-mail.example.org", "[REDACTED:email]"),
    ("key: sk-proj-4fQm7ZtR2xVb9LkP0sWn3YhJ8cDe6GaU1iOq5TrE", "key: [REDACTED:openai_key]"),
    (
        "legacy sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL ok",
        "legacy [REDACTED:openai_key] ok",
    ),
    ("sk-ant-api03-Zq8Xw2Vb5Nm7Lk4Jh1Gf9Ds3Ap6Oi0Uy2Tr5Ee8Ww1Qq4-AA", "[REDACTED:anthropic_key]"),
    ("aws AKIAIOSFODNN7EXAMPLE here", "aws [REDACTED:aws_access_key] here"),
    ("temp ASIAY34FZKBOKMUTVV7A", "temp [REDACTED:aws_access_key]"),
    ("token ghp_1a2B3c4D5e6F7g8H9i0J1k2L3m4N5o6P7q8R", "token [REDACTED:github_token]"),
    (
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU",
        "[REDACTED:github_token]",
    ),
    (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNr",
        "Authorization: Bearer [REDACTED:bearer_token]",
    ),
    ("bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0", "bearer [REDACTED:bearer_token]"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [REDACTED:basic_auth]"),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P",
        "jwt [REDACTED:jwt]",
    ),
    ("api_key=0123456789abcdef0123456789abcdef", "api_key=[REDACTED:secret]"),
    ('{"OPENAI_API_KEY": "abc123def456ghi789jkl"}', '{"OPENAI_API_KEY": "[REDACTED:secret]"}'),
    (
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "aws_secret_access_key = [REDACTED:secret]",
    ),
    ("client_secret: Zm9vYmFyYmF6cXV4MTIzNDU2", "client_secret: [REDACTED:secret]"),
    ("password=hunter2", "password=[REDACTED:password]"),
    ('"pwd": "correct horse"', '"pwd": "[REDACTED:password]"'),
    ("PASSWORD='s3cret pass phrase'", "PASSWORD='[REDACTED:password]'"),
    ("card 4111 1111 1111 1111 exp 12/29", "card [REDACTED:card] exp 12/29"),
    ("amex 378282246310005", "amex [REDACTED:card]"),
    ("mc 5555-5555-5555-4444.", "mc [REDACTED:card]."),
    ("call +1 (415) 555-2671 now", "call [REDACTED:phone] now"),
    ("uk +44 20 7946 0958", "uk [REDACTED:phone]"),
    ("de +49 30 901820", "de [REDACTED:phone]"),
    ("office (415) 555-2671 or 415.555.2671", "office [REDACTED:phone] or [REDACTED:phone]"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        "[REDACTED:private_key]",
    ),
]

NEAR_MISSES = [
    "user@localhost is not an address with a domain",
    "mention @jane in the channel",
    "a@b.c has a one-letter top-level domain",
    "the sk-learn library and sk-12345 are fine",
    "ask-questions-about-anything-you-like-here",
    "AKIA1234 is too short; akiaiosfodnn7example is lower case",
    "ghp_short is not a token",
    "Bearer bonds are securities",
    "the bearer of bad news",
    "max_tokens=100000000000000000",
    "tokenizer: bert-base-uncased-12345678",
    "api_key=short",
    "password policy requires twelve characters",
    "card 4111 1111 1111 1112 fails the Luhn check",
    "timestamp 1700000000000 and order 1234567890123",
    "isbn 978-3-16-148410-0",
    "release 2024-01-15, ip 192.168.1.1, version v1.2.3, time 10:30:45",
    "numbers 1234567890 and 555-2671",
    "x+12345678 is arithmetic",
    "the 2+2 question",
    "see section 415-555",
    "0123 4567 8901 2345",
]


@pytest.mark.parametrize(("text", "expected"), POSITIVES)
def test_redacts_positives(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_leaves_near_misses_alone(text: str) -> None:
    assert redact_text(text) == text


def test_redaction_is_idempotent() -> None:
    for text, _ in POSITIVES:
        once = redact_text(text)
        assert redact_text(once) == once


def test_several_kinds_in_one_text() -> None:
    text = "Mail bob@example.com, key sk-proj-abcdefghijklmnopqrstuvwxyz01, card 4242424242424242"
    assert redact_text(text) == (
        "Mail [REDACTED:email], key [REDACTED:openai_key], card [REDACTED:card]"
    )


def test_recurses_through_messages_and_keeps_structure() -> None:
    messages = [
        {
            "role": "user",
            "name": "a@b.example",
            "parts": [
                {"type": "text", "content": "I am bob@example.com"},
                {
                    "type": "tool_call",
                    "id": "call_1",
                    "name": "lookup",
                    "arguments": {
                        "email": "bob@example.com",
                        "nested": [{"phone": "+1 415 555 2671"}],
                    },
                },
                {
                    "type": "blob",
                    "modality": "image",
                    "mime_type": "image/png",
                    "content": "AKIAIOSFODNN7EXAMPLE+bob@example.com",
                },
            ],
        },
        {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": "call_1",
                    "response": "found 4111-1111-1111-1111",
                }
            ],
        },
    ]
    out = redact_messages(messages)
    assert out is not None
    assert out[0]["name"] == "[REDACTED:email]"
    assert out[0]["parts"][0] == {"type": "text", "content": "I am [REDACTED:email]"}
    assert out[0]["parts"][1]["arguments"] == {
        "email": "[REDACTED:email]",
        "nested": [{"phone": "[REDACTED:phone]"}],
    }
    # Inline binary data is not text: rewriting it would corrupt it.
    assert out[0]["parts"][2]["content"] == "AKIAIOSFODNN7EXAMPLE+bob@example.com"
    assert out[1]["parts"][0]["response"] == "found [REDACTED:card]"
    assert messages[0]["parts"][0]["content"] == "I am bob@example.com"  # input untouched
    assert redact_messages(None) is None


def test_non_string_values_pass_through() -> None:
    assert redact_value({"n": 4111111111111111, "f": 1.5, "b": True, "z": None}) == {
        "n": 4111111111111111,
        "f": 1.5,
        "b": True,
        "z": None,
    }


def test_deep_nesting_is_bounded() -> None:
    deep: object = "bob@example.com"
    for _ in range(500):
        deep = [deep]
    out = redact_value(deep)
    for _ in range(64):
        assert isinstance(out, list)
        out = out[0]
    assert out == "[REDACTED:nested_too_deep]"


def test_large_text_is_fast() -> None:
    chunk = (
        "Plain prose with numbers 12345 and words, dates 2024-01-15, a@b, sk-x, "
        "password policy, bearer of news, token counts 4096. "
    )
    text = chunk * 8000 + "finally bob@example.com"  # about 1 MB
    start = time.perf_counter()
    out = redact_text(text)
    elapsed_s = time.perf_counter() - start
    assert out.endswith("finally [REDACTED:email]")
    assert elapsed_s < 5.0


def test_pathological_inputs_stay_linear() -> None:
    # Long runs that tempt backtracking: word characters before an @, digits, key-like names.
    for text in (
        "a" * 200_000 + "@",
        "1" * 200_000,
        "api_key" * 30_000 + "=",
        "+1 " * 50_000,
        "-----BEGIN PRIVATE KEY-----" + "x" * 200_000,
    ):
        start = time.perf_counter()
        redact_text(text)
        assert time.perf_counter() - start < 5.0
