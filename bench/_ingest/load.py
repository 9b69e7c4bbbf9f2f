"""The benchmark load: OTLP trace exports of GenAI chat spans, encoded once, re-stamped per send.

Takes a seed and a size; gives `RequestTemplate`s, each a serialized `ExportTraceServiceRequest`
of chat spans shaped like those the OpenTelemetry GenAI instrumentations send (gen_ai.* request,
response and usage attributes, server address and port, about 1 KB of prompt and response
content as `gen_ai.input.messages` / `gen_ai.output.messages` JSON), plus the byte offsets of
every trace and span id in it. `RequestTemplate.stamp()` writes a sender number and a sequence
number over the first bytes of those ids, so every export carries ids never sent before (Phoenix
keeps span ids unique) while the sender does no protobuf work in the timed part.
Also gives `probe_request()`, one small span whose trace id the latency probe looks for.
Must not: depend on the collector's code (the load is what any OTLP exporter would send).
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

#: Bytes of each id that `stamp()` overwrites: one for the sender, four for the sequence.
STAMP_BYTES = 5
#: Sender number of latency probes; load senders use 0..PROBE_SENDER-1.
PROBE_SENDER = 0xFF

_BASE_UNIX_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z

# (provider, request model, response model, server address, server port, response id prefix)
_MODELS: tuple[tuple[str, str, str, str, int, str], ...] = (
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "api.openai.com", 443, "chatcmpl-"),
    ("openai", "gpt-4.1", "gpt-4.1-2025-04-14", "api.openai.com", 443, "chatcmpl-"),
    (
        "anthropic",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "api.anthropic.com",
        443,
        "msg_01",
    ),
    (
        "openai",
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct",
        "vllm.inference.svc.cluster.local",
        8000,
        "chatcmpl-",
    ),
)

_WORDS = (
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "for",
    "with",
    "on",
    "is",
    "that",
    "by",
    "this",
    "be",
    "order",
    "invoice",
    "customer",
    "refund",
    "shipment",
    "account",
    "policy",
    "summary",
    "question",
    "answer",
    "request",
    "latency",
    "model",
    "token",
    "context",
    "document",
    "please",
    "explain",
    "compare",
    "list",
    "steps",
    "why",
    "how",
    "when",
    "which",
    "should",
    "cluster",
    "kubernetes",
    "database",
    "query",
    "index",
    "table",
    "column",
    "error",
    "retry",
    "timeout",
    "deploy",
    "service",
    "version",
    "release",
    "feature",
    "user",
    "session",
    "payment",
    "delivery",
    "warehouse",
    "report",
    "quarter",
    "revenue",
    "forecast",
    "risk",
    "contract",
    "clause",
    "section",
    "paragraph",
    "translate",
    "french",
    "german",
    "spanish",
    "email",
    "draft",
    "reply",
    "tone",
    "friendly",
    "formal",
    "brief",
    "detailed",
    "bullet",
    "points",
    "code",
    "python",
    "function",
    "class",
    "test",
    "bug",
    "stack",
    "trace",
    "log",
    "metric",
    "dashboard",
    "alert",
    "threshold",
    "incident",
    "postmortem",
    "root",
    "cause",
)

_SYSTEM_PROMPTS = (
    "You are a helpful support assistant for an online shop. Answer briefly and cite the "
    "relevant policy section when you can.",
    "You are a senior engineer reviewing code and incidents. Be precise, name the root cause "
    "and list concrete next steps.",
    "You are an assistant that drafts business emails in a friendly but formal tone.",
)


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _paragraph(rng: random.Random, target_chars: int) -> str:
    parts: list[str] = []
    size = 0
    while size < target_chars:
        sentence = _sentence(rng, rng.randint(8, 18))
        parts.append(sentence)
        size += len(sentence) + 1
    return " ".join(parts)


def _kv(key: str, value: str | int | float | bool | list[str]) -> KeyValue:
    if isinstance(value, bool):
        any_value = AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = AnyValue(double_value=value)
    elif isinstance(value, list):
        any_value = AnyValue(
            array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value])
        )
    else:
        any_value = AnyValue(string_value=value)
    return KeyValue(key=key, value=any_value)


def _response_id(rng: random.Random, prefix: str) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(rng.choice(alphabet) for _ in range(24))


def _chat_span(rng: random.Random, trace_id: bytes, span_id: bytes, start_unix_ns: int) -> Span:
    provider, req_model, resp_model, address, port, id_prefix = rng.choice(_MODELS)
    stream = rng.random() < 0.4
    failed = rng.random() < 0.02
    duration_ns = rng.randint(400_000_000, 6_000_000_000)
    input_tokens = rng.randint(120, 2400)
    attrs = [
        _kv("gen_ai.operation.name", "chat"),
        _kv("gen_ai.provider.name", provider),
        _kv("gen_ai.request.model", req_model),
        _kv("server.address", address),
        _kv("server.port", port),
        _kv("gen_ai.request.temperature", rng.choice((0.0, 0.2, 0.7, 1.0))),
        _kv("gen_ai.request.max_tokens", rng.choice((256, 512, 1024, 4096))),
    ]
    if stream:
        attrs.append(_kv("gen_ai.request.stream", True))
    attrs.append(
        _kv(
            "gen_ai.input.messages",
            json.dumps(
                [
                    {
                        "role": "system",
                        "parts": [{"type": "text", "content": rng.choice(_SYSTEM_PROMPTS)}],
                    },
                    {"role": "user", "parts": [{"type": "text", "content": _paragraph(rng, 330)}]},
                ],
                separators=(",", ":"),
            ),
        )
    )
    status = Status()
    if failed:
        attrs.append(_kv("error.type", "RateLimitError" if provider == "openai" else "429"))
        status = Status(code=Status.STATUS_CODE_ERROR, message="Rate limit reached for requests")
        duration_ns //= 4
    else:
        finish = "length" if rng.random() < 0.08 else "stop"
        output_tokens = rng.randint(40, 900)
        attrs += [
            _kv("gen_ai.response.model", resp_model),
            _kv("gen_ai.response.id", _response_id(rng, id_prefix)),
            _kv("gen_ai.response.finish_reasons", [finish]),
            _kv("gen_ai.usage.input_tokens", input_tokens),
            _kv("gen_ai.usage.output_tokens", output_tokens),
            _kv(
                "gen_ai.output.messages",
                json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": _paragraph(rng, 360)}],
                            "finish_reason": finish,
                        },
                    ],
                    separators=(",", ":"),
                ),
            ),
        ]
        if stream:
            attrs.append(
                _kv("gen_ai.response.time_to_first_chunk", round(rng.uniform(0.15, 1.2), 4))
            )
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        name=f"chat {req_model}",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_unix_ns,
        end_time_unix_nano=start_unix_ns + duration_ns,
        attributes=attrs,
        status=status,
    )


def _resource_attrs(rng: random.Random, service: str) -> list[KeyValue]:
    pod = f"{service}-{rng.randrange(16**10):010x}-{rng.randrange(36**5):05d}"
    return [
        _kv("service.name", service),
        _kv("service.version", "1.4.2"),
        _kv("deployment.environment.name", "production"),
        _kv("telemetry.sdk.language", "python"),
        _kv("telemetry.sdk.name", "opentelemetry"),
        _kv("telemetry.sdk.version", "1.38.0"),
        _kv("host.name", pod),
        _kv("k8s.namespace.name", "assistants"),
        _kv("k8s.pod.name", pod),
        _kv("process.pid", rng.randint(7, 40_000)),
    ]


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """One encoded export request and where its ids sit."""

    body: bytes
    spans: int
    id_offsets: tuple[int, ...]

    def stamp(self, sender: int, seq: int) -> bytes:
        """The request with `sender` and `seq` written into every trace and span id."""
        buf = bytearray(self.body)
        tag = bytes((sender,)) + seq.to_bytes(4, "big")
        for off in self.id_offsets:
            buf[off : off + STAMP_BYTES] = tag
        return bytes(buf)


def build_template(seed: int, spans: int) -> RequestTemplate:
    """A request of `spans` chat spans, deterministic for a given seed."""
    rng = random.Random(seed)
    service = rng.choice(("support-assistant", "code-review-bot", "email-drafter"))
    ids: list[bytes] = []
    tails: set[bytes] = set()
    span_list: list[Span] = []
    start_ns = _BASE_UNIX_NS + rng.randrange(86_400) * 1_000_000_000
    for _ in range(spans):
        trace_id = rng.randbytes(16)
        span_id = rng.randbytes(8)
        # After stamping only the tail tells the spans of one request apart.
        while span_id[STAMP_BYTES:] in tails:
            span_id = rng.randbytes(8)
        tails.add(span_id[STAMP_BYTES:])
        ids += [trace_id, span_id]
        span_list.append(_chat_span(rng, trace_id, span_id, start_ns))
        start_ns += rng.randint(5_000_000, 80_000_000)
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=_resource_attrs(rng, service)),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(
                            name="opentelemetry.instrumentation.openai_v2", version="2.1b0"
                        ),
                        spans=span_list,
                    )
                ],
            )
        ]
    )
    body = request.SerializeToString()
    offsets: list[int] = []
    for ident in ids:
        at = body.find(ident)
        if at < 0 or body.find(ident, at + 1) >= 0:
            raise RuntimeError("an id is not unique in the encoded request; change the seed")
        offsets.append(at)
    return RequestTemplate(body=body, spans=spans, id_offsets=tuple(offsets))


def build_templates(first_seed: int, count: int, spans: int) -> list[RequestTemplate]:
    """`count` templates with seeds first_seed, first_seed+1, ..."""
    return [build_template(first_seed + i, spans) for i in range(count)]


def probe_request(trace_id: bytes, span_id: bytes, now_unix_ns: int) -> bytes:
    """One chat span with the given ids, timed now, for the export-to-queryable probe."""
    rng = random.Random(span_id)
    span = _chat_span(rng, trace_id, span_id, now_unix_ns)
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=_resource_attrs(rng, "latency-probe")),
                scope_spans=[
                    ScopeSpans(scope=InstrumentationScope(name="infersight.bench"), spans=[span])
                ],
            )
        ]
    )
    return request.SerializeToString()
