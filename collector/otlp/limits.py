"""Limits and settings shared by the OTLP/HTTP and OTLP/gRPC receivers.

Takes nothing; gives `ReceiverLimits`, a frozen dataclass with a documented default for every
bound the receivers enforce. Request-level bounds (body size, authentication) turn a whole
export away; item-level bounds (attribute count, nesting depth, event and link count) reject
just the offending span, data point or log record and are reported in `partial_success`.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReceiverLimits:
    """What one OTLP export may contain, and how the receivers answer.

    max_body_bytes: largest request accepted, measured after decompression (HTTP body or
        gRPC message). Larger ones are answered 413 / RESOURCE_EXHAUSTED. 20 MiB matches the
        upstream collector's HTTP default; gzip bodies are inflated incrementally and the
        inflation stops at this bound, so a compression bomb costs at most this much memory.
    max_attributes: most attributes on one span, span event, link, data point or log record;
        an item with more is rejected (partial success), never truncated.
    max_events_per_span / max_links_per_span: most events / links on one span.
    max_value_depth: deepest nesting of array/kvlist `AnyValue`s in an attribute or log body;
        a scalar is depth 0, a list of scalars depth 1. The protobuf decoder refuses nesting
        past about 45 levels on its own (400 / INVALID_ARGUMENT).
    bearer_token: when set, every export must carry `Authorization: Bearer <token>`
        (HTTP header or gRPC metadata), else 401 / UNAUTHENTICATED.
    retry_after_s: delay suggested in `Retry-After` (HTTP 503) and `RetryInfo` (gRPC
        UNAVAILABLE) when the write queue is full.
    offload_decode_bytes: exports at least this large are decoded on a worker thread so one
        big export does not stall the event loop for every other connection.
    content_in_attributes: keep prompt and response content in `spans.attributes` as well when
        it is stored in `genai_content` exactly as sent (off: stored once, in `genai_content`).
    """

    max_body_bytes: int = 20 * MIB
    max_attributes: int = 1024
    max_events_per_span: int = 4096
    max_links_per_span: int = 1024
    max_value_depth: int = 32
    bearer_token: str | None = None
    retry_after_s: int = 2
    offload_decode_bytes: int = 1 * MIB
    content_in_attributes: bool = False

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        for name in (
            "max_attributes",
            "max_events_per_span",
            "max_links_per_span",
            "max_value_depth",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.retry_after_s < 1:
            raise ValueError("retry_after_s must be at least 1")
        if self.bearer_token is not None and not self.bearer_token.strip():
            raise ValueError("bearer_token must not be blank; leave it unset to disable auth")
