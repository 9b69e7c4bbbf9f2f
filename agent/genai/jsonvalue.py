"""Tolerant JSON reading for captured bodies.

Takes raw bytes that may be complete JSON, a prefix of JSON (the capture was cut), or anything at
all; gives back plain Python values (`dict`, `list`, `str`, `int`, `float`, `bool`, `None`) and
typed accessors that answer `None` instead of raising when a field is missing or of the wrong
type. Nothing here raises on bad input.

A prefix is read as far as it goes: containers opened before the cut are kept with the members
completed before it; a string, number or literal cut in the middle is dropped rather than kept
half-read, so a cut never invents a wrong value (a model name `"gpt-4o-mi` is absent, not
`gpt-4o-mi`).
"""

from __future__ import annotations

import contextlib
import json.decoder
import math
import re
from collections.abc import Callable
from typing import Any

import orjson

# The standard library's string scanner (C-accelerated); typeshed does not declare it.
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
_MAX_DEPTH = 64
_WS = " \t\n\r"
_NUMBER_RE = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LITERALS: dict[str, object] = {"true": True, "false": False, "null": None}


class _StopParseError(Exception):
    """The input ended, broke the grammar, or nested too deep: keep what was read so far."""


def loads(data: bytes | str) -> tuple[object, bool]:
    """Parse `data`; returns `(value, complete)`.

    `complete` is True when the whole input was valid JSON. Otherwise the value is what a prefix
    read gave (a dict or list holding the members read before the cut), or None when nothing
    usable was found.
    """
    try:
        return orjson.loads(data), True
    except Exception:  # orjson raises its own JSONDecodeError, also on non-UTF-8 bytes
        pass
    return loads_prefix(data), False


def loads_prefix(data: bytes | str) -> object:
    """Read as much of a JSON object or array as `data` holds; None if it starts with neither."""
    try:
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    except Exception:
        return None
    i = _skip_ws(text, 0)
    if i >= len(text) or text[i] not in "{[":
        return None
    root: dict[str, object] | list[object] = {} if text[i] == "{" else []
    with contextlib.suppress(_StopParseError, RecursionError, ValueError, IndexError):
        _fill(text, i + 1, root, 1)
    return root


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _fill(text: str, i: int, container: dict[str, object] | list[object], depth: int) -> int:
    """Fill `container` from just after its opening bracket; returns the index after its close."""
    is_obj = isinstance(container, dict)
    close = "}" if is_obj else "]"
    first = True
    n = len(text)
    while True:
        i = _skip_ws(text, i)
        if i >= n:
            raise _StopParseError
        if text[i] == close:
            return i + 1
        if not first:
            if text[i] != ",":
                raise _StopParseError
            i = _skip_ws(text, i + 1)
            if i >= n:
                raise _StopParseError
        first = False
        key = ""
        if is_obj:
            if text[i] != '"':
                raise _StopParseError
            key, i = _string(text, i)
            i = _skip_ws(text, i)
            if i >= n or text[i] != ":":
                raise _StopParseError
            i = _skip_ws(text, i + 1)
            if i >= n:
                raise _StopParseError
        ch = text[i]
        if ch in "{[":
            if depth >= _MAX_DEPTH:
                raise _StopParseError
            child: dict[str, object] | list[object] = {} if ch == "{" else []
            # Attach before filling so a cut inside the child still keeps what the child read.
            _attach(container, key, child)
            i = _fill(text, i + 1, child, depth + 1)
            continue
        value, i = _scalar(text, i)
        _attach(container, key, value)


def _attach(container: dict[str, object] | list[object], key: str, value: object) -> None:
    if isinstance(container, dict):
        container[key] = value
    else:
        container.append(value)


def _string(text: str, i: int) -> tuple[str, int]:
    try:
        value, end = _scanstring(text, i + 1, False)
    except (ValueError, IndexError) as exc:  # unterminated: the cut fell inside the string
        raise _StopParseError from exc
    return value, end


def _scalar(text: str, i: int) -> tuple[object, int]:
    ch = text[i]
    if ch == '"':
        return _string(text, i)
    for word, value in _LITERALS.items():
        if text.startswith(word, i):
            return value, i + len(word)
    m = _NUMBER_RE.match(text, i)
    if m is None or m.end() >= len(text):
        # No number here, or one that runs into the cut and may be missing digits.
        raise _StopParseError
    token = m.group(0)
    if "." in token or "e" in token or "E" in token:
        return float(token), m.end()
    return int(token), m.end()


def as_dict(value: object) -> dict[str, Any] | None:
    """`value` if it is a JSON object."""
    return value if isinstance(value, dict) else None


def as_list(value: object) -> list[Any] | None:
    """`value` if it is a JSON array."""
    return value if isinstance(value, list) else None


def get_dict(obj: object, key: str) -> dict[str, Any] | None:
    """`obj[key]` when `obj` is an object and the member is an object."""
    return as_dict(obj.get(key)) if isinstance(obj, dict) else None


def get_list(obj: object, key: str) -> list[Any] | None:
    """`obj[key]` when `obj` is an object and the member is an array."""
    return as_list(obj.get(key)) if isinstance(obj, dict) else None


def get_str(obj: object, key: str) -> str | None:
    """`obj[key]` when it is a string."""
    if isinstance(obj, dict):
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None


def get_nonempty_str(obj: object, key: str) -> str | None:
    """`obj[key]` when it is a non-empty string."""
    value = get_str(obj, key)
    return value if value else None


def get_bool(obj: object, key: str) -> bool | None:
    """`obj[key]` when it is a boolean."""
    if isinstance(obj, dict):
        value = obj.get(key)
        if isinstance(value, bool):
            return value
    return None


def to_int(value: object) -> int | None:
    """An integer from a JSON integer (or an integral float); booleans are not integers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def get_int(obj: object, key: str) -> int | None:
    """`obj[key]` when it is an integer."""
    return to_int(obj.get(key)) if isinstance(obj, dict) else None


def get_count(obj: object, key: str) -> int | None:
    """`obj[key]` when it is a non-negative integer (token counts)."""
    value = get_int(obj, key)
    return value if value is not None and value >= 0 else None


def to_float(value: object) -> float | None:
    """A finite float from a JSON number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def get_float(obj: object, key: str) -> float | None:
    """`obj[key]` when it is a finite number."""
    return to_float(obj.get(key)) if isinstance(obj, dict) else None


def str_list(value: object) -> list[str]:
    """A list of strings from a string or an array of strings (other items skipped)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def bounded(value: object, max_depth: int = 32) -> object:
    """A copy of a JSON value with nesting beyond `max_depth` replaced by a marker string.

    Arbitrary JSON from a body (tool arguments, tool results) goes into exported content; this
    keeps every later recursive walk (redaction, serialization) within a small stack.
    """
    if max_depth <= 0:
        return "[truncated: nested too deep]"
    if isinstance(value, dict):
        return {str(k): bounded(v, max_depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [bounded(v, max_depth - 1) for v in value]
    return value


def maybe_json(text: str) -> object:
    """Tool-call arguments: the decoded JSON value when `text` is complete JSON, else the text."""
    try:
        return bounded(orjson.loads(text))
    except Exception:  # orjson.JSONDecodeError, or anything odd in the text
        return text


def dumps(value: object) -> str:
    """Compact JSON text of a decoded value ("" if it cannot be written)."""
    try:
        return orjson.dumps(value).decode()
    except Exception:  # orjson.JSONEncodeError: too deep, non-str keys, huge ints
        return ""
