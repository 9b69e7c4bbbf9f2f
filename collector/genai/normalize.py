"""GenAI attribute normalization: any instrumentation dialect in, canonical columns out.

Takes the attributes (already decoded to Python values), name and events of one span; gives a
`NormalizedGenAI` with the canonical `gen_ai_*` span columns (see `store.schema.GENAI_COLUMNS`),
the content found (semantic-convention message schema) and the dialect recognised, or None for a
span that is not a GenAI span. Pure: no I/O, never raises on odd input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class GenAIContent:
    """Prompt and response content in the semantic-convention message schema (JSON-able)."""

    input_messages: list[dict[str, Any]] | None = None
    output_messages: list[dict[str, Any]] | None = None
    system_instructions: list[dict[str, Any]] | None = None
    tool_definitions: list[dict[str, Any]] | None = None
    origin: str = "span_attributes"


@dataclass(slots=True)
class NormalizedGenAI:
    """The canonical view of one GenAI span."""

    dialect: str
    columns: dict[str, Any] = field(default_factory=dict)
    content: GenAIContent | None = None


def normalize_span(
    attributes: dict[str, Any],
    span_name: str,
    events: list[tuple[str, dict[str, Any]]],
) -> NormalizedGenAI | None:
    """Return the canonical GenAI fields of a span, or None when it is not a GenAI span."""
    return None


def content_from_log_event(
    event_name: str,
    attributes: dict[str, Any],
    body: Any,
) -> GenAIContent | None:
    """Return the content carried by a GenAI log-record event (legacy `gen_ai.*.message`,
    `gen_ai.choice`, `gen_ai.content.*`, or the current inference-details event), else None."""
    return None
