"""Prompt fingerprints: one short id per prompt template, whatever values were filled in.

Takes the system instructions and input messages of one call, in the GenAI semantic-convention
message schema, either as parsed JSON (lists of dicts) or as JSON text; gives a 16-hex-digit
fingerprint, or None when the call carries no prompt content at all. Pure and fast: no I/O, no
clock, no global state beyond a cache of normalized texts; it never raises on odd input.

What goes into the hash, in order:
  1. the template text: the system instructions (the separate `system_instructions` parts and
     the text of `system`/`developer` messages). When a call has no system text at all, the
     template is the start of its first user message (its first 256 normalized characters),
     since prompts without a system part keep their fixed instructions at the front;
  2. the message structure: the `role:part-type` pairs in order of first appearance (so a
     conversation keeps its fingerprint as it grows by turns), and the names of the tools it
     called, sorted.
Text is normalized first: URLs, e-mail addresses, UUIDs, dates and times, hexadecimal strings,
identifiers that mix letters and digits, and numbers are replaced by placeholders, and every run
of whitespace becomes one space. Two calls that differ only in such values share a fingerprint.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Any

import orjson

#: characters of the first user message kept as the template when there is no system text
USER_TEMPLATE_CHARS = 256

_SYSTEM_ROLES = frozenset({"system", "developer"})

# Order matters: wider patterns first, so that a UUID is not eaten as numbers and letters.
_SUBSTITUTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE), "<url>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (
        re.compile(
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE
        ),
        "<uuid>",
    ),
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?\b"
        ),
        "<date>",
    ),
    (re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"), "<date>"),
    (
        re.compile(
            r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.? "
            r"\d{1,2}(?:st|nd|rd|th)?,? \d{4}\b",
            re.IGNORECASE,
        ),
        "<date>",
    ),
    (
        re.compile(
            r"\b\d{1,2} (?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.? \d{4}\b",
            re.IGNORECASE,
        ),
        "<date>",
    ),
    (
        re.compile(r"\b\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s?[ap]\.?m\.?)?\b", re.IGNORECASE),
        "<time>",
    ),
    (re.compile(r"\b0x[0-9a-f]+\b", re.IGNORECASE), "<hex>"),
    # hex strings long enough to be hashes or ids, holding at least one digit and one letter
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.IGNORECASE), "<hex>"),
    # ids such as ord_8f3k2, chatcmpl-AbC123, user42x: letters and digits mixed, 6+ characters
    (re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[a-z])[a-z0-9][\w-]{5,}\b", re.IGNORECASE), "<id>"),
    (re.compile(r"[+-]?\d+(?:[.,]\d+)*(?:[eE][+-]?\d+)?%?"), "<num>"),
    (re.compile(r"\s+"), " "),
)


@lru_cache(maxsize=1024)
def normalize_text(text: str) -> str:
    """`text` with variable values replaced by placeholders and whitespace collapsed."""
    for pattern, placeholder in _SUBSTITUTIONS:
        text = pattern.sub(placeholder, text)
    return text.strip()


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            # a bare string: one text part
            return [{"type": "text", "content": value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    return [{"type": "text", "content": str(value)}]


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        kind = part.get("type", "text")
        content = part.get("content")
        if kind == "text" and isinstance(content, str):
            return content
    return None


def _parts(message: dict[str, Any]) -> list[Any]:
    parts = message.get("parts")
    if isinstance(parts, list):
        return parts
    # older shapes carry the text directly in `content`
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):
        return content
    return []


def _part_kind(part: Any) -> str:
    if isinstance(part, dict):
        kind = part.get("type")
        if isinstance(kind, str):
            modality = part.get("modality")
            return f"{kind}/{modality}" if isinstance(modality, str) else kind
        return "object"
    return "text" if isinstance(part, str) else type(part).__name__


def prompt_fingerprint(system_instructions: Any, input_messages: Any) -> str | None:
    """The fingerprint of a call's prompt template (16 hex digits), or None without content."""
    try:
        return _fingerprint(_as_list(system_instructions), _as_list(input_messages))
    except (TypeError, ValueError, RecursionError):
        return None


def _fingerprint(system_parts: list[Any], messages: list[Any]) -> str | None:
    if not system_parts and not messages:
        return None
    template: list[str] = []
    for part in system_parts:
        text = _part_text(part)
        if text is not None:
            template.append(normalize_text(text))
        else:
            template.append("<" + _part_kind(part) + ">")
    structure: list[str] = []
    seen: set[str] = set()
    tools: set[str] = set()
    first_user_text: str | None = None
    if system_parts:
        structure.append("system_instructions")
        seen.add("system_instructions")
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        role = role if isinstance(role, str) else "?"
        for part in _parts(message):
            token = f"{role}:{_part_kind(part)}"
            if token not in seen:
                seen.add(token)
                structure.append(token)
            text = _part_text(part)
            if role in _SYSTEM_ROLES and text is not None:
                template.append(normalize_text(text))
            elif role == "user" and text is not None and first_user_text is None:
                first_user_text = text
            if isinstance(part, dict) and part.get("type") == "tool_call":
                name = part.get("name")
                if isinstance(name, str):
                    tools.add(name)
    if not template and first_user_text is not None:
        # cut before normalizing too, so a huge user message costs no more than its head
        head = normalize_text(first_user_text[: USER_TEMPLATE_CHARS * 4])
        template.append("user:" + head[:USER_TEMPLATE_CHARS])
    digest = hashlib.blake2b(digest_size=8)
    digest.update("\x1e".join(template).encode("utf-8", "replace"))
    digest.update(b"\x1d")
    digest.update("\x1e".join(structure).encode("utf-8", "replace"))
    digest.update(b"\x1d")
    digest.update("\x1e".join(sorted(tools)).encode("utf-8", "replace"))
    return digest.hexdigest()
