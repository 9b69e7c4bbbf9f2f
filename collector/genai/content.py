"""Prompt and response content of every dialect -> the semantic-convention message schema.

Takes content as producers send it: `gen_ai.input.messages`-style JSON (string or structured),
OpenAI chat messages (legacy event bodies, raw request JSON), flattened indexed attributes
(OpenLLMetry `gen_ai.prompt.{i}.*`, OpenInference `llm.input_messages.{i}.message.*`) and
OpenLIT's flattened "role: text" strings. Gives lists of messages
`{"role": ..., "parts": [{"type": "text", "content": ...}, ...]}` (output messages also carry
`finish_reason`), system instructions and tool definitions as lists of dicts.
Pure; returns None for anything it cannot read; never raises on odd input.
"""

from __future__ import annotations

from typing import Any

from collector.genai import values

Message = dict[str, Any]

#: Upper bound on indexed attribute groups walked per span, against hostile input.
MAX_INDEX = 4096


def text_part(text: str) -> dict[str, Any]:
    """A text part."""
    return {"type": "text", "content": text}


def _arguments(raw: Any) -> Any:
    """Tool-call arguments as an object when they are JSON, else as sent."""
    if isinstance(raw, str):
        parsed = values.parse_json(raw)
        if isinstance(parsed, (dict, list)):
            return parsed
    return raw


def tool_call_part(call: Any) -> dict[str, Any] | None:
    """An OpenAI-style tool call (`{id, type, function: {name, arguments}}`) as a part."""
    if not isinstance(call, dict):
        return None
    fn = call.get("function")
    fn = fn if isinstance(fn, dict) else call
    name = values.as_str(fn.get("name"))
    if name is None:
        return None
    part: dict[str, Any] = {"type": "tool_call", "name": name}
    call_id = values.as_str(call.get("id"))
    if call_id is not None:
        part["id"] = call_id
    if "arguments" in fn and fn["arguments"] not in (None, ""):
        part["arguments"] = _arguments(fn["arguments"])
    return part


def content_parts(content: Any) -> list[dict[str, Any]]:
    """Parts for an OpenAI `content` value: a string, or a list of content blocks."""
    if isinstance(content, str):
        return [text_part(content)] if content else []
    if not isinstance(content, list):
        return []
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            if block:
                parts.append(text_part(block))
            continue
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("text", "input_text", "output_text"):
            text = block.get("text", block.get("content"))
            if isinstance(text, str):
                parts.append(text_part(text))
        elif kind in ("image_url", "input_image"):
            url = block.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if isinstance(url, str):
                parts.append({"type": "uri", "modality": "image", "uri": url})
        elif isinstance(kind, str):
            parts.append(dict(block))
    return parts


def openai_message(msg: Any, default_role: str = "user") -> Message | None:
    """An OpenAI chat message (also a legacy event body) as a semantic-convention message."""
    if not isinstance(msg, dict):
        return None
    role = values.as_str(msg.get("role")) or default_role
    if role == "tool" or (default_role == "tool" and "id" in msg):
        response = msg.get("content")
        call_id = values.as_str(msg.get("tool_call_id")) or values.as_str(msg.get("id"))
        part: dict[str, Any] = {"type": "tool_call_response", "response": response}
        if call_id is not None:
            part["id"] = call_id
        return {"role": "tool", "parts": [part]}
    parts = content_parts(msg.get("content"))
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            p = tool_call_part(call)
            if p is not None:
                parts.append(p)
    out: Message = {"role": role, "parts": parts}
    name = values.as_str(msg.get("name"))
    if name is not None:
        out["name"] = name
    return out


def _is_semconv_message(item: dict[str, Any]) -> bool:
    return isinstance(item.get("parts"), list)


def semconv_messages(value: Any, output: bool = False) -> list[Message] | None:
    """Messages from a `gen_ai.input.messages`/`gen_ai.output.messages` value (JSON string
    or structured); OpenAI-shaped items are converted, unreadable items dropped."""
    return read_semconv_messages(value, output)[0]


def read_semconv_messages(value: Any, output: bool = False) -> tuple[list[Message] | None, bool]:
    """`semconv_messages`, and whether the messages are the value exactly as sent: a list in
    the semantic-convention schema that needed no rewrite (every message with a role and only
    object parts, output finish reasons already the conventions' words)."""
    data = values.parse_json(value)
    as_sent = isinstance(data, list)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return None, False
    out: list[Message] = []
    for item in data:
        if not isinstance(item, dict):
            as_sent = False
            continue
        if _is_semconv_message(item):
            if _canonical_message(item, output):
                # Nothing to rewrite: keep the parsed object rather than copy it.
                out.append(item)
                continue
            as_sent = False
            msg: Message = dict(item)
            msg["role"] = values.as_str(item.get("role")) or ("assistant" if output else "user")
            msg["parts"] = [p for p in item["parts"] if isinstance(p, dict)]
        else:
            as_sent = False
            converted = openai_message(item, "assistant" if output else "user")
            if converted is None:
                continue
            msg = converted
        if output and "finish_reason" in msg:
            reason = values.finish_reason(msg.get("finish_reason"))
            if reason is None:
                del msg["finish_reason"]
            else:
                msg["finish_reason"] = reason
        out.append(msg)
    return (out or None), as_sent and bool(out)


def _canonical_message(item: dict[str, Any], output: bool) -> bool:
    """Whether `semconv_messages` would return `item` unchanged."""
    role = item.get("role")
    if not (isinstance(role, str) and role):
        return False
    for part in item["parts"]:
        if not isinstance(part, dict):
            return False
    if output and "finish_reason" in item:
        reason = item["finish_reason"]
        return isinstance(reason, str) and values.finish_reason(reason) == reason
    return True


def parts_list(value: Any) -> list[dict[str, Any]] | None:
    """A list of dicts from a `gen_ai.system_instructions` / `gen_ai.tool.definitions` value;
    a bare string becomes one text part."""
    return read_parts_list(value)[0]


def read_parts_list(value: Any) -> tuple[list[dict[str, Any]] | None, bool]:
    """`parts_list`, and whether the list is the value exactly as sent (a list of objects)."""
    data = values.parse_json(value)
    if data is None and isinstance(value, str) and value:
        return [text_part(value)], False
    as_sent = isinstance(data, list)
    if isinstance(data, dict):
        data = [data]
    if isinstance(data, str):
        return ([text_part(data)] if data else None), False
    if not isinstance(data, list):
        return None, False
    out = [d for d in data if isinstance(d, dict)]
    return (out or None), as_sent and bool(out) and len(out) == len(data)


# --- flattened, indexed attributes -----------------------------------------------------------


def indexed_messages(attrs: dict[str, Any], prefix: str, output: bool) -> list[Message] | None:
    """OpenLLMetry's legacy `{prefix}.{i}.role/content/tool_call_id/finish_reason/
    tool_calls.{j}.{id,name,arguments}` groups (prefix `gen_ai.prompt`, `gen_ai.completion`,
    `llm.prompts`, `llm.completions`) as messages, in index order."""
    out: list[Message] = []
    for i in range(MAX_INDEX):
        base = f"{prefix}.{i}."
        role = attrs.get(base + "role")
        content = attrs.get(base + "content")
        first_call = attrs.get(base + "tool_calls.0.name")
        if role is None and content is None and first_call is None:
            if i == 0 and f"{prefix}.1.role" in attrs:
                continue  # some producers number from 1
            break
        default_role = "assistant" if output else "user"
        role_s = values.as_str(role) or default_role
        if role_s == "tool":
            part: dict[str, Any] = {"type": "tool_call_response", "response": content}
            call_id = values.as_str(attrs.get(base + "tool_call_id"))
            if call_id is not None:
                part["id"] = call_id
            out.append({"role": "tool", "parts": [part]})
            continue
        parsed = (
            values.parse_json(content)
            if isinstance(content, str) and content[:1] in ("[", "{")
            else None
        )
        parts = content_parts(parsed if isinstance(parsed, list) else content)
        for j in range(MAX_INDEX):
            cbase = f"{base}tool_calls.{j}."
            name = attrs.get(cbase + "name")
            if name is None:
                break
            call = {
                "id": attrs.get(cbase + "id"),
                "function": {"name": name, "arguments": attrs.get(cbase + "arguments")},
            }
            p = tool_call_part(call)
            if p is not None:
                parts.append(p)
        msg: Message = {"role": role_s, "parts": parts}
        if output:
            reason = values.finish_reason(attrs.get(base + "finish_reason"))
            if reason is not None:
                msg["finish_reason"] = reason
        out.append(msg)
    return out or None


def openinference_messages(
    attrs: dict[str, Any], prefix: str, output: bool
) -> list[Message] | None:
    """OpenInference `{prefix}.{i}.message.*` groups (prefix `llm.input_messages` or
    `llm.output_messages`) as messages."""
    out: list[Message] = []
    for i in range(MAX_INDEX):
        base = f"{prefix}.{i}.message."
        role = attrs.get(base + "role")
        content = attrs.get(base + "content")
        first_block = attrs.get(base + "contents.0.message_content.type")
        first_call = attrs.get(base + "tool_calls.0.tool_call.function.name")
        if role is None and content is None and first_block is None and first_call is None:
            break
        role_s = values.as_str(role) or ("assistant" if output else "user")
        call_id = values.as_str(attrs.get(base + "tool_call_id"))
        if role_s == "tool":
            part: dict[str, Any] = {"type": "tool_call_response", "response": content}
            if call_id is not None:
                part["id"] = call_id
            out.append({"role": "tool", "parts": [part]})
            continue
        parts = content_parts(content)
        for j in range(MAX_INDEX):
            bbase = f"{base}contents.{j}.message_content."
            kind = attrs.get(bbase + "type")
            if kind is None:
                break
            if kind == "text":
                text = attrs.get(bbase + "text")
                if isinstance(text, str):
                    parts.append(text_part(text))
            elif kind == "image":
                url = attrs.get(bbase + "image.image.url")
                if isinstance(url, str):
                    parts.append({"type": "uri", "modality": "image", "uri": url})
        for j in range(MAX_INDEX):
            tbase = f"{base}tool_calls.{j}.tool_call."
            name = attrs.get(tbase + "function.name")
            if name is None:
                break
            p = tool_call_part(
                {
                    "id": attrs.get(tbase + "id"),
                    "function": {
                        "name": name,
                        "arguments": attrs.get(tbase + "function.arguments"),
                    },
                }
            )
            if p is not None:
                parts.append(p)
        msg: Message = {"role": role_s, "parts": parts}
        name_s = values.as_str(attrs.get(base + "name"))
        if name_s is not None:
            msg["name"] = name_s
        out.append(msg)
    return out or None


def openinference_texts(
    attrs: dict[str, Any], prefix: str, suffix: str, role: str
) -> list[Message] | None:
    """OpenInference's legacy-completions `llm.prompts.{i}.prompt.text` /
    `llm.choices.{i}.completion.text` as one message per text."""
    out: list[Message] = []
    for i in range(MAX_INDEX):
        text = attrs.get(f"{prefix}.{i}.{suffix}")
        if text is None:
            break
        if isinstance(text, str):
            out.append({"role": role, "parts": [text_part(text)]})
    if not out:
        listed = attrs.get(prefix)
        if isinstance(listed, list):
            out = [{"role": role, "parts": [text_part(t)]} for t in listed if isinstance(t, str)]
    return out or None


def openinference_tools(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    """`llm.tools.{i}.tool.json_schema` as tool definitions."""
    out: list[dict[str, Any]] = []
    for i in range(MAX_INDEX):
        raw = attrs.get(f"llm.tools.{i}.tool.json_schema")
        if raw is None:
            break
        schema = values.parse_json(raw)
        if isinstance(schema, dict):
            out.append(tool_definition(schema))
    return out or None


def tool_definition(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool schema (`{"type": "function", "function": {...}}`) in the conventions'
    flat form (`{"type": "function", "name", "description", "parameters"}`)."""
    fn = schema.get("function")
    if isinstance(fn, dict):
        out = {"type": schema.get("type", "function")}
        out.update({k: v for k, v in fn.items() if k in ("name", "description", "parameters")})
        return out
    return dict(schema)


def legacy_functions(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    """OpenLLMetry's legacy `llm.request.functions.{i}.{name,description,parameters}`."""
    out: list[dict[str, Any]] = []
    for i in range(MAX_INDEX):
        base = f"llm.request.functions.{i}."
        name = attrs.get(base + "name")
        if name is None:
            break
        tool: dict[str, Any] = {"type": "function", "name": name}
        if base + "description" in attrs:
            tool["description"] = attrs[base + "description"]
        params = attrs.get(base + "parameters")
        if params is not None:
            parsed = values.parse_json(params)
            tool["parameters"] = parsed if parsed is not None else params
        out.append(tool)
    return out or None


def flattened_prompt(text: Any) -> list[Message] | None:
    """OpenLIT's legacy `gen_ai.prompt` string ("role: text" lines), or any plain prompt string
    (one user message). A JSON value is read as messages."""
    if not isinstance(text, str) or not text:
        return None
    if text[:1] in ("[", "{"):
        parsed = semconv_messages(text)
        if parsed:
            return parsed
    roles = ("system", "user", "assistant", "tool", "developer", "function")
    out: list[Message] = []
    for line in text.split("\n"):
        head, sep, rest = line.partition(": ")
        if sep and head in roles:
            out.append({"role": head, "parts": [text_part(rest)]})
        elif out:
            # A line without a role continues the previous message's text.
            last = out[-1]["parts"][0]
            last["content"] = f"{last['content']}\n{line}"
        else:
            out.append({"role": "user", "parts": [text_part(line)]})
    if len(out) == 1 and out[0]["role"] == "user" and ": " not in text.split("\n", 1)[0]:
        out = [{"role": "user", "parts": [text_part(text)]}]
    return out or None


def completion_text(text: Any, reason: str | None = None) -> list[Message] | None:
    """A plain completion string as one assistant output message."""
    if not isinstance(text, str) or not text:
        return None
    msg: Message = {"role": "assistant", "parts": [text_part(text)]}
    if reason is not None:
        msg["finish_reason"] = reason
    return [msg]


def request_messages(raw: Any) -> list[Message] | None:
    """Messages of a raw OpenAI request body (OpenInference `input.value` as JSON)."""
    body = values.parse_json(raw)
    if not isinstance(body, dict):
        return None
    msgs = body.get("messages")
    if isinstance(msgs, list):
        out = [m for m in (openai_message(x) for x in msgs) if m is not None]
        return out or None
    prompt = body.get("prompt")
    if isinstance(prompt, str) and prompt:
        return [{"role": "user", "parts": [text_part(prompt)]}]
    return None
