"""Synthetic LLM calls, traces, content and GPU/engine metrics with known values, and the
independent Python arithmetic the tests check the store's answers against."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from collector.analytics.fingerprint import prompt_fingerprint
from store.call_rows import CallRows
from store.database import Database
from store.schema import GENAI_CONTENT, METRIC_POINTS, SPANS

BASE = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
WINDOW_S = 600.0

SPANS_OUT = pa.schema(
    [*SPANS, pa.field("prompt_fingerprint", pa.string())]
    if "prompt_fingerprint" not in SPANS.names
    else list(SPANS)
)

TEMPLATES: dict[str, str] = {
    "support": "You are support agent #{n}. Today is {date}. Ticket {uuid} is open.  Be kind.",
    "summarize": "Summarize the document below in {n} bullet points. Request id {hexid}.",
    "translate": "Translate the user's text to French. Session started {date} at {time}.",
}
USER_WORDS = [
    "invoice",
    "refund",
    "password",
    "shipping",
    "warranty",
    "upgrade",
    "penguin",
    "volcano",
    "saxophone",
    "glacier",
]


def ts(offset_s: float) -> datetime:
    return BASE + timedelta(microseconds=round(offset_s * 1e6))


def unix_ns(offset_s: float) -> int:
    return int(BASE.timestamp()) * 1_000_000_000 + round(offset_s * 1e6) * 1000


@dataclass
class Call:
    """One client-side LLM call and what the store should say about it."""

    trace_id: str
    span_id: str
    root_span_id: str
    start_s: float
    duration_s: float
    model: str
    provider: str | None
    service: str
    namespace: str
    pod: str
    operation: str = "chat"
    ttft_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read: int | None = None
    error_type: str | None = None
    gpu_seconds: float | None = None
    gpu_energy_j: float | None = None
    gpu_name: str | None = None
    template: str | None = None
    system_text: str | None = None
    user_text: str | None = None
    response_text: str | None = None
    server_span_id: str | None = None
    server_start_s: float | None = None
    server_duration_s: float | None = None
    queue_s: float | None = None
    fingerprint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def errored(self) -> bool:
        return self.error_type is not None

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.output_tokens is None or self.output_tokens <= 1:
            return None
        return (self.duration_s - self.ttft_s) / (self.output_tokens - 1)

    def group(self, by: str) -> str | None:
        return {
            "model": self.model,
            "provider": self.provider,
            "service": self.service,
            "namespace": self.namespace,
            "pod": self.pod,
            "operation": self.operation,
        }[by]

    def system_instructions(self) -> list[dict[str, Any]] | None:
        if self.system_text is None:
            return None
        return [{"type": "text", "content": self.system_text}]

    def input_messages(self) -> list[dict[str, Any]] | None:
        if self.user_text is None:
            return None
        return [{"role": "user", "parts": [{"type": "text", "content": self.user_text}]}]

    def output_messages(self) -> list[dict[str, Any]] | None:
        if self.response_text is None:
            return None
        return [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": self.response_text}],
                "finish_reason": "stop",
            }
        ]


#: model -> (provider, operation, self-hosted GPU name)
MODELS: dict[str, tuple[str | None, str, str | None]] = {
    "gpt-4o-2024-08-06": ("openai", "chat", None),
    "claude-3-5-sonnet-20241022": ("anthropic", "chat", None),
    "meta-llama/Llama-3.1-8B-Instruct": ("vllm", "chat", "NVIDIA H100 80GB HBM3"),
    "text-embedding-3-small": ("openai", "embeddings", None),
    "mystery-model-7b": (None, "chat", None),
}
PODS = {"chat-api": ["chat-api-1", "chat-api-2"], "summarizer": ["summarizer-1"]}
NAMESPACES = {"chat-api": "prod", "summarizer": "batch"}
ERRORS = ["timeout", "rate_limited", "500"]


def make_calls(seed: int = 7, n: int = 360) -> list[Call]:
    """`n` calls starting between 30 s before and 30 s after the 600 s window."""
    rng = random.Random(seed)
    calls: list[Call] = []
    for i in range(n):
        model = rng.choice(list(MODELS))
        provider, operation, gpu_name = MODELS[model]
        service = rng.choice(list(PODS))
        pod = rng.choice(PODS[service])
        start = rng.uniform(-30.0, WINDOW_S + 30.0)
        duration = round(rng.uniform(0.05, 4.0) * (3.0 if model.startswith("claude") else 1.0), 6)
        trace_id = f"{rng.getrandbits(128):032x}"
        call = Call(
            trace_id=trace_id,
            span_id=f"{rng.getrandbits(64):016x}",
            root_span_id=f"{rng.getrandbits(64):016x}",
            start_s=round(start, 6),
            duration_s=duration,
            model=model,
            provider=provider,
            service=service,
            namespace=NAMESPACES[service],
            pod=pod,
            operation=operation,
        )
        if operation == "embeddings":
            call.input_tokens = rng.randint(5, 800)
        else:
            if rng.random() < 0.9:
                call.input_tokens = rng.choice(
                    [rng.randint(10, 300), rng.randint(300, 5000), rng.randint(5000, 40000)]
                )
                call.output_tokens = rng.randint(1, 900)
                if rng.random() < 0.3:
                    call.cache_read = rng.randint(0, call.input_tokens)
            if rng.random() < 0.7:
                call.ttft_s = round(duration * rng.uniform(0.05, 0.6), 6)
        if rng.random() < 0.12:
            call.error_type = rng.choice(ERRORS)
        if gpu_name is not None:
            call.gpu_name = gpu_name
            call.gpu_seconds = round(duration * rng.uniform(0.3, 0.9), 6)
            call.gpu_energy_j = round(call.gpu_seconds * rng.uniform(200, 600), 3)
            call.server_span_id = f"{rng.getrandbits(64):016x}"
            call.server_start_s = call.start_s + 0.002
            call.server_duration_s = round(duration - 0.005, 6)
            call.queue_s = round(rng.uniform(0.0, 0.2), 6)
        if operation == "chat" and rng.random() < 0.6:
            template = rng.choice(list(TEMPLATES))
            call.template = template
            call.system_text = TEMPLATES[template].format(
                n=rng.randint(1, 99999),
                date=(BASE + timedelta(days=rng.randint(0, 900))).strftime("%Y-%m-%d"),
                uuid=str(uuid.UUID(int=rng.getrandbits(128))),
                hexid=f"{rng.getrandbits(64):016x}",
                time=f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
            ) + " " * rng.randint(0, 3)
            words = rng.sample(USER_WORDS, 2)
            call.user_text = f"My question {i} is about {words[0]} and {words[1]}."
            call.response_text = f"Answer {i}: here is help with {words[0]}."
            call.fingerprint = prompt_fingerprint(call.system_instructions(), call.input_messages())
        calls.append(call)
    return calls


def _span_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SPANS_OUT.names)
    row.update(values)
    return row


def span_rows(calls: Sequence[Call], received: datetime | None = None) -> list[dict[str, Any]]:
    """Root span, client GenAI span and (self-hosted) server span of every call; `received`
    overrides the arrival time (default: one second after the call ended)."""
    rows: list[dict[str, Any]] = []
    for c in calls:
        arrived = received or ts(c.end_s + 1)
        resource = {
            "service.name": c.service,
            "k8s.namespace.name": c.namespace,
            "k8s.pod.name": c.pod,
        }
        rows.append(
            _span_row(
                trace_id=c.trace_id,
                span_id=c.root_span_id,
                parent_span_id=None,
                service_name=c.service,
                name="POST /v1/ask",
                kind="server",
                start_time=ts(c.start_s - 0.01),
                end_time=ts(c.end_s + 0.01),
                start_unix_ns=unix_ns(c.start_s - 0.01),
                end_unix_ns=unix_ns(c.end_s + 0.01),
                duration_s=c.duration_s + 0.02,
                status_code="unset",
                attributes=orjson.dumps({"http.request.method": "POST"}).decode(),
                resource=orjson.dumps(resource).decode(),
                k8s_namespace=c.namespace,
                k8s_pod=c.pod,
                source="sdk",
                received_time=arrived,
            )
        )
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": c.operation,
            "gen_ai.request.model": c.model,
        }
        rows.append(
            _span_row(
                trace_id=c.trace_id,
                span_id=c.span_id,
                parent_span_id=c.root_span_id,
                service_name=c.service,
                name=f"{c.operation} {c.model}",
                kind="client",
                start_time=ts(c.start_s),
                end_time=ts(c.end_s),
                start_unix_ns=unix_ns(c.start_s),
                end_unix_ns=unix_ns(c.end_s),
                duration_s=c.duration_s,
                status_code="error" if c.errored else "ok",
                status_message=c.error_type,
                scope_name="synthetic",
                attributes=orjson.dumps(attrs).decode(),
                resource=orjson.dumps(resource).decode(),
                k8s_namespace=c.namespace,
                k8s_pod=c.pod,
                source="sdk",
                gen_ai_operation_name=c.operation,
                gen_ai_provider_name=c.provider,
                gen_ai_request_model=c.model,
                gen_ai_response_model=c.model,
                gen_ai_usage_input_tokens=c.input_tokens,
                gen_ai_usage_output_tokens=c.output_tokens,
                gen_ai_usage_cache_read_input_tokens=c.cache_read,
                gen_ai_request_stream=c.ttft_s is not None,
                gen_ai_response_time_to_first_chunk=c.ttft_s,
                error_type=c.error_type,
                received_time=arrived,
                prompt_fingerprint=c.fingerprint,
            )
        )
        if c.server_span_id is not None:
            assert c.server_start_s is not None
            assert c.server_duration_s is not None
            server_end = c.server_start_s + c.server_duration_s
            rows.append(
                _span_row(
                    trace_id=c.trace_id,
                    span_id=c.server_span_id,
                    parent_span_id=c.span_id,
                    service_name="vllm",
                    name=f"{c.operation} {c.model}",
                    kind="server",
                    start_time=ts(c.server_start_s),
                    end_time=ts(server_end),
                    start_unix_ns=unix_ns(c.server_start_s),
                    end_unix_ns=unix_ns(server_end),
                    duration_s=c.server_duration_s,
                    status_code="ok",
                    attributes=orjson.dumps(
                        {
                            "gen_ai.latency.time_in_queue": c.queue_s,
                            "infersight.gpu.seconds": c.gpu_seconds,
                            "infersight.gpu.energy_j": c.gpu_energy_j,
                            "infersight.gpu.name": c.gpu_name,
                        }
                    ).decode(),
                    infersight_gpu_seconds=c.gpu_seconds,
                    infersight_gpu_energy_j=c.gpu_energy_j,
                    resource=orjson.dumps({"service.name": "vllm"}).decode(),
                    k8s_namespace="models",
                    k8s_pod="vllm-0",
                    source="sdk",
                    gen_ai_operation_name=c.operation,
                    gen_ai_provider_name=c.provider,
                    gen_ai_request_model=c.model,
                    gen_ai_response_model=c.model,
                    received_time=arrived,
                )
            )
    return rows


def content_rows(calls: Sequence[Call]) -> list[dict[str, Any]]:
    rows = []
    for c in calls:
        if c.system_text is None:
            continue
        rows.append(
            {
                "trace_id": c.trace_id,
                "span_id": c.span_id,
                "time": ts(c.end_s),
                "origin": "span_attributes",
                "input_messages": orjson.dumps(c.input_messages()).decode(),
                "output_messages": orjson.dumps(c.output_messages()).decode(),
                "system_instructions": orjson.dumps(c.system_instructions()).decode(),
                "tool_definitions": None,
            }
        )
    return rows


@dataclass
class Point:
    """One gauge sample."""

    metric: str
    offset_s: float
    value: float
    series: dict[str, Any]
    node: str = "node-1"
    service: str = "infersight-agent"


GPUS = ["GPU-aaaa", "GPU-bbbb"]
ENGINES = ["vllm-0", "vllm-1"]


def make_points() -> list[Point]:
    """GPU and engine gauges every 10 s from 30 s before to 30 s after the window."""
    points: list[Point] = []
    for k, t in enumerate(range(-30, int(WINDOW_S) + 30, 10)):
        for g, gpu in enumerate(GPUS):
            attrs = {"hw.id": gpu, "hw.type": "gpu", "hw.name": "NVIDIA H100 80GB HBM3"}
            util = ((k * 7 + g * 13) % 100) / 100.0
            points.append(Point("hw.gpu.utilization", t, util, attrs))
            points.append(Point("DCGM_FI_DEV_GPU_UTIL", t, 50.0, {"gpu": str(g)}))
            points.append(Point("hw.gpu.memory.usage", t, float((40 + (k + g) % 7) << 30), attrs))
            points.append(Point("hw.power", t, 300.0 + 10 * ((k + 3 * g) % 11), attrs))
        for e, engine in enumerate(ENGINES):
            attrs = {"model_name": "llama", "engine": engine}
            points.append(
                Point(
                    "vllm:gpu_cache_usage_perc",
                    t,
                    ((k * 3 + e * 5) % 10) / 10.0,
                    attrs,
                    service=engine,
                )
            )
            points.append(
                Point("vllm:num_requests_waiting", t, float((k + e) % 4), attrs, service=engine)
            )
    return points


def metric_rows(points: Iterable[Point]) -> list[dict[str, Any]]:
    rows = []
    for p in points:
        row: dict[str, Any] = dict.fromkeys(METRIC_POINTS.names)
        row.update(
            time=ts(p.offset_s),
            time_unix_ns=unix_ns(p.offset_s),
            service_name=p.service,
            metric_name=p.metric,
            metric_type="gauge",
            temporality="unspecified",
            value=p.value,
            attributes=orjson.dumps(p.series).decode(),
            resource=orjson.dumps({"service.name": p.service}).decode(),
            k8s_node=p.node,
            received_time=ts(p.offset_s + 1),
        )
        rows.append(row)
    return rows


def insert_rows(db: Database, table: str, schema: pa.Schema, rows: list[dict[str, Any]]) -> None:
    """Insert rows the way the writer does: one Arrow batch, INSERT ... BY NAME."""
    if not rows:
        return
    batch = pa.Table.from_pylist(rows, schema=schema)
    cur = db.cursor()
    try:
        cur.register("_seed_batch", batch)
        cur.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _seed_batch")
        cur.unregister("_seed_batch")
    finally:
        cur.close()


def seed(
    db: Database,
    calls: Sequence[Call],
    points: Sequence[Point] = (),
    received: datetime | None = None,
) -> None:
    insert_rows(db, "spans", SPANS_OUT, span_rows(calls, received))
    insert_rows(db, "genai_content", GENAI_CONTENT, content_rows(calls))
    insert_rows(db, "metric_points", METRIC_POINTS, metric_rows(points))
    cur = db.cursor()
    try:
        CallRows().rebuild(cur)  # what the collector's call-table stage does as spans arrive
    finally:
        cur.close()


# -- independent arithmetic ----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (type 7), written out."""
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def hosted_cost(c: Call, price: dict[str, float]) -> float | None:
    """What a hosted call costs at `price` (USD per million tokens)."""
    if c.input_tokens is None and c.output_tokens is None:
        return None
    cached = c.cache_read or 0
    fresh = max((c.input_tokens or 0) - cached, 0)
    return (
        fresh * price.get("input", 0.0)
        + cached * price.get("cached_input", price.get("input", 0.0))
        + (c.output_tokens or 0) * price.get("output", 0.0)
    ) / 1e6
