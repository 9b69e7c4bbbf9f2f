"""Redaction of personal data and secrets in prompt/response content.

Takes strings, or any JSON-like structure (the GenAI message schema: lists of messages with
parts); gives a copy in which every match is replaced by `[REDACTED:<kind>]`. Pure functions,
no state, no I/O: the agent runs it before content leaves the node and the collector reuses it.

Kinds: `private_key` (PEM blocks), `bearer_token` / `basic_auth` (the credential after the
scheme word), `anthropic_key` (`sk-ant-...`), `openai_key` (`sk-...`, `sk-proj-...`),
`aws_access_key` (`AKIA...`/`ASIA...`), `github_token` (`ghp_...`, `github_pat_...`), `jwt`,
`secret` (a long letters-and-digits value after a name such as `api_key=`, `"access_token": `,
`client_secret:`), `password` (any value after `password=` / `pwd:`), `email`, `card` (13-19
digits with a card-network prefix that pass the Luhn check), `phone` (`+` international numbers
of 8-15 digits, and North-American `(415) 555-2671` / `415-555-2671` forms).

Inline binary (`blob` parts' base64 `content`) is left alone: it is not text, and rewriting it
would corrupt it. Nested structures deeper than 64 levels are replaced by a marker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_MAX_DEPTH = 64


def _luhn_ok(digits: str) -> bool:
    total = 0
    for pos, ch in enumerate(reversed(digits)):
        value = ord(ch) - 48
        if pos % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    # Networks start with 2-6 (Mastercard 2-series, Amex 3, Visa 4, Mastercard 5, Discover 6);
    # this keeps millisecond timestamps and other long numbers out.
    if 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn_ok(digits):
        return "[REDACTED:card]"
    return m.group(0)


def _phone_international(m: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in m.group(0))
    return "[REDACTED:phone]" if 8 <= digits <= 15 else m.group(0)


def _token_value(kind: str, group: int, need_digit: bool = True) -> Callable[[re.Match[str]], str]:
    def replace(m: re.Match[str]) -> str:
        value = m.group(group)
        if need_digit and not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
            return m.group(0)
        start, end = m.span(group)
        base = m.start(0)
        text = m.group(0)
        return f"{text[: start - base]}[REDACTED:{kind}]{text[end - base :]}"

    return replace


def _password(m: re.Match[str]) -> str:
    group = next(g for g in (3, 4, 5) if m.group(g) is not None)
    start, end = m.span(group)
    base = m.start(0)
    text = m.group(0)
    return f"{text[: start - base]}[REDACTED:password]{text[end - base :]}"


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    replace: str | Callable[[re.Match[str]], str]
    hints: tuple[str, ...] = ()  # lower-case substrings one of which must occur; () = always run
    needs_digit: bool = False


_SECRET_NAME = (
    r"[\w.-]{0,40}?(?:api[_-]?key|apikey|secret|secret[_-]?key|token|access[_-]?key|private[_-]?key"
    r"|credentials?|auth)"
)

_RULES: tuple[_Rule, ...] = (
    _Rule(
        "private_key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.S
        ),
        "[REDACTED:private_key]",
        ("private key-----",),
    ),
    _Rule(
        "bearer_token",
        re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9\-._~+/]{16,}=*)"),
        _token_value("bearer_token", 2),
        ("bearer",),
    ),
    _Rule(
        "basic_auth",
        re.compile(
            r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?basic\s+)"
            r"([A-Za-z0-9+/]{6,}={0,2})"
        ),
        _token_value("basic_auth", 2, need_digit=False),
        ("basic",),
    ),
    _Rule(
        "anthropic_key",
        re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
        "[REDACTED:anthropic_key]",
        ("sk-ant-",),
    ),
    _Rule(
        "openai_key",
        re.compile(r"\bsk-(?!ant-)[A-Za-z0-9_-]{20,}"),
        "[REDACTED:openai_key]",
        ("sk-",),
    ),
    _Rule(
        "aws_access_key",
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
        "[REDACTED:aws_access_key]",
        ("akia", "asia", "abia", "acca"),
    ),
    _Rule(
        "github_token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"),
        "[REDACTED:github_token]",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    _Rule(
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        "[REDACTED:jwt]",
        ("eyj",),
    ),
    _Rule(
        "secret",
        re.compile(
            r"(?i)\b(" + _SECRET_NAME + r")([\"']?\s*[:=]\s*[\"']?)([A-Za-z0-9+/_\-.~]{16,}={0,2})"
        ),
        _token_value("secret", 3),
        ("key", "secret", "token", "credential", "auth"),
    ),
    # A quoted password may hold spaces: take everything up to the closing quote.
    _Rule(
        "password",
        re.compile(
            r"(?i)\b(passw(?:or)?d|passphrase|pwd)([\"']?\s*[:=]\s*)"
            r"(?:\"([^\"\n]{4,256})\"|'([^'\n]{4,256})'|([^\s\"',;]{4,}))"
        ),
        _password,
        ("pass", "pwd"),
    ),
    _Rule(
        "email",
        re.compile(
            r"\b[A-Za-z0-9._%+-]{1,64}@"
            r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b"
        ),
        "[REDACTED:email]",
        ("@",),
    ),
    _Rule("card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card, needs_digit=True),
    _Rule(
        "phone",
        re.compile(r"(?<![\w+])\+\d(?:[ .()-]{0,2}\d){6,16}(?!\d)"),
        _phone_international,
        ("+",),
        needs_digit=True,
    ),
    _Rule(
        "phone",
        re.compile(
            r"(?<![\w(])(?:\([2-9]\d{2}\)\s?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}"
            r"(?![\w-])"
        ),
        "[REDACTED:phone]",
        needs_digit=True,
    ),
)


def redact_text(text: str) -> str:
    """`text` with every secret and personal identifier replaced."""
    if not text:
        return text
    lowered: str | None = None
    has_digit: bool | None = None
    for rule in _RULES:
        if rule.needs_digit:
            if has_digit is None:
                has_digit = any(c.isdigit() for c in text)
            if not has_digit:
                continue
        if rule.hints:
            if lowered is None:
                lowered = text.lower()
            if not any(h in lowered for h in rule.hints):
                continue
        new = rule.pattern.sub(rule.replace, text)
        if new != text:
            text = new
            lowered = None
    return text


def redact_value(value: Any, _depth: int = 0) -> Any:
    """A copy of a JSON-like value with every string redacted (keys are kept)."""
    if isinstance(value, str):
        return redact_text(value)
    if _depth >= _MAX_DEPTH:
        return "[REDACTED:nested_too_deep]" if isinstance(value, dict | list) else value
    if isinstance(value, dict):
        binary = value.get("type") == "blob"
        return {
            k: (v if binary and k == "content" else redact_value(v, _depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v, _depth + 1) for v in value]
    return value


def redact_messages(messages: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Redacted copy of a message (or part) list in the GenAI schema; None stays None."""
    if messages is None:
        return None
    return [redact_value(m) if isinstance(m, dict) else m for m in messages]
