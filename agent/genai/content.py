"""Prompt and response content in the GenAI semantic-convention message schema.

Takes provider-specific pieces (texts, tool calls, media references) from the parsers; gives the
`gen_ai.input.messages` / `gen_ai.output.messages` / `gen_ai.system_instructions` structures
(`[{"role": ..., "parts": [{"type": "text", "content": ...}]}]`) and applies the content mode:

* `off` (default): no content at all.
* `metadata`: the shape without the words: roles, part types, tool names and call ids, media
  modality and MIME type, finish reasons, and `content_length` (characters) for text and
  reasoning parts. No text, tool arguments, tool results, URIs or inline data.
* `full`: everything the wire carried (redaction is applied later, see `agent.redact`).

Must not log or print content.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

Message = dict[str, Any]
Part = dict[str, Any]

_DATA_URL_RE = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*;base64,", re.ASCII)


class ContentMode(StrEnum):
    """How much prompt/response content a parsed call carries."""

    OFF = "off"
    METADATA = "metadata"
    FULL = "full"


def text_part(text: str) -> Part:
    """A `text` part."""
    return {"type": "text", "content": text}


def reasoning_part(text: str) -> Part:
    """A `reasoning` part (model thinking that the wire exposes)."""
    return {"type": "reasoning", "content": text}


def tool_call_part(call_id: str | None, name: str | None, arguments: object) -> Part:
    """A `tool_call` part; `arguments` is the decoded object when it was valid JSON."""
    part: Part = {"type": "tool_call", "name": name or ""}
    if call_id:
        part["id"] = call_id
    if arguments is not None:
        part["arguments"] = arguments
    return part


def tool_response_part(call_id: str | None, response: object) -> Part:
    """A `tool_call_response` part."""
    part: Part = {"type": "tool_call_response", "response": response}
    if call_id:
        part["id"] = call_id
    return part


def media_part(
    modality: str,
    url: str | None = None,
    data: str | None = None,
    mime_type: str | None = None,
    file_id: str | None = None,
) -> Part:
    """A `blob`, `uri` or `file` part; `data:...;base64,` URLs become blobs."""
    if url is not None:
        m = _DATA_URL_RE.match(url)
        if m is not None:
            data = url[m.end() :]
            mime_type = mime_type or m.group(1)
            url = None
    part: Part
    if data is not None:
        part = {"type": "blob", "modality": modality, "content": data}
    elif url is not None:
        part = {"type": "uri", "modality": modality, "uri": url}
    elif file_id is not None:
        part = {"type": "file", "modality": modality, "file_id": file_id}
    else:
        part = {"type": "blob", "modality": modality, "content": ""}
    if mime_type:
        part["mime_type"] = mime_type
    return part


def generic_part(part_type: str) -> Part:
    """A part of a type the conventions do not name; only its type is kept."""
    return {"type": part_type}


def message(role: str, parts: list[Part], name: str | None = None) -> Message:
    """An input message."""
    msg: Message = {"role": role, "parts": parts}
    if name:
        msg["name"] = name
    return msg


def output_message(
    parts: list[Part], finish_reason: str | None, role: str = "assistant"
) -> Message:
    """An output message; a missing finish reason is reported as `error` (the convention's rule)."""
    return {"role": role, "parts": parts, "finish_reason": finish_reason or "error"}


_META_PART_KEYS = ("type", "id", "name", "modality", "mime_type")


def metadata_part(part: Part) -> Part:
    """The part without its words."""
    out: Part = {k: part[k] for k in _META_PART_KEYS if k in part and isinstance(part[k], str)}
    content = part.get("content")
    if part.get("type") in ("text", "reasoning") and isinstance(content, str):
        out["content_length"] = len(content)
    return out


def metadata_message(msg: Message) -> Message:
    """The message without its words."""
    out: Message = {}
    for key in ("role", "name", "finish_reason"):
        if isinstance(msg.get(key), str):
            out[key] = msg[key]
    parts = msg.get("parts")
    out["parts"] = (
        [metadata_part(p) for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []
    )
    return out


def apply_mode(
    mode: ContentMode,
    input_messages: list[Message] | None,
    output_messages: list[Message] | None,
    system_instructions: list[Part] | None,
) -> tuple[list[Message] | None, list[Message] | None, list[Part] | None]:
    """The three content fields as `mode` allows them."""
    if mode is ContentMode.OFF:
        return None, None, None
    if mode is ContentMode.FULL:
        return input_messages, output_messages, system_instructions
    return (
        [metadata_message(m) for m in input_messages] if input_messages is not None else None,
        [metadata_message(m) for m in output_messages] if output_messages is not None else None,
        [metadata_part(p) for p in system_instructions]
        if system_instructions is not None
        else None,
    )
