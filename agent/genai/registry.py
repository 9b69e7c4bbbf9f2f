"""The provider parsers, in the order they are tried.

Takes an `HttpExchange` and a content mode; gives the `InferenceCall` of the first parser whose
`matches()` accepts the exchange, or None when no parser does (not an LLM call). With content
enabled, the content fields pass through `agent.redact` here (unless the caller opts out), so
nothing unredacted leaves this function by default.

This function never raises: a parser bug on some exchange is counted in `parse_failures` (by
parser name) and answered with None, so one odd exchange cannot stop the agent's processing
thread.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from agent import redact
from agent.capture.exchange import HttpExchange
from agent.genai.call import InferenceCall
from agent.genai.content import ContentMode
from agent.genai.providers import (
    anthropic_messages,
    ollama_native,
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_responses,
    tgi_native,
)


class ProviderParser(Protocol):
    """What every provider module offers."""

    APIS: tuple[str, ...]

    def matches(self, exchange: HttpExchange) -> bool: ...

    def parse(self, exchange: HttpExchange, content_mode: ContentMode) -> InferenceCall: ...


# Paths are disjoint between parsers, so the order only decides ties that should not happen;
# the most specific shapes come first all the same.
PARSERS: tuple[ProviderParser, ...] = (
    anthropic_messages,
    ollama_native,
    tgi_native,
    openai_responses,
    openai_embeddings,
    openai_chat,
    openai_completions,
)

parse_failures: Counter[str] = Counter()


def find_parser(exchange: HttpExchange) -> ProviderParser | None:
    """The first parser that accepts the exchange."""
    for parser in PARSERS:
        try:
            if parser.matches(exchange):
                return parser
        except Exception:
            parse_failures[_name(parser)] += 1
    return None


def parse_exchange(
    exchange: HttpExchange,
    content_mode: ContentMode | str = ContentMode.OFF,
    *,
    redact_content: bool = True,
) -> InferenceCall | None:
    """The LLM call in `exchange`, or None when it is not one (or could not be read at all)."""
    mode = ContentMode(content_mode)
    parser = find_parser(exchange)
    if parser is None:
        return None
    try:
        call = parser.parse(exchange, mode)
        if redact_content and mode is ContentMode.FULL:
            call.input_messages = redact.redact_messages(call.input_messages)
            call.output_messages = redact.redact_messages(call.output_messages)
            call.system_instructions = redact.redact_messages(call.system_instructions)
    except Exception:
        parse_failures[_name(parser)] += 1
        return None
    return call


def _name(parser: ProviderParser) -> str:
    return getattr(parser, "__name__", type(parser).__name__).rsplit(".", 1)[-1]
