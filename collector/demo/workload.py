"""The demo workload: a model server and an application calling it, traced with the OTel SDK.

Takes a collector's OTLP/HTTP endpoint and a number of calls; starts the demo model server on a
free loopback port, makes chat calls to it over HTTP (streaming and not, a few models, a few
deliberate errors), records each as a GenAI client span and GenAI client metrics following the
semantic conventions, and exports them with the real OTLP exporters. Gives a `DemoSummary`.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm
from opentelemetry.semconv.attributes import error_attributes, server_attributes
from opentelemetry.trace import SpanKind, Status, StatusCode

from collector.demo.model_server import build_model_server

MODELS = ("llama-3.1-8b-instruct", "qwen2.5-7b-instruct", "mistral-7b-instruct")
PROMPTS = (
    "Explain continuous batching in one sentence.",
    "What is the KV cache?",
    "Why is time to first token higher for long prompts?",
    "Summarize this document: " + "lorem ipsum dolor sit amet " * 40,
)


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What the demo sent."""

    calls: int
    errors: int
    elapsed_s: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_model_server() -> tuple[uvicorn.Server, int]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_model_server(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    return server, port


def _call(
    client: httpx.Client, base: str, model: str, prompt: str, stream: bool
) -> tuple[dict[str, Any], float | None]:
    """One chat call; returns the response summary and the time to first chunk."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are concise."},
            {"role": "user", "content": prompt},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "stream": stream,
    }
    started = time.monotonic()
    if not stream:
        resp = client.post(f"{base}/v1/chat/completions", json=body)
        resp.raise_for_status()
        data = resp.json()
        return {
            "id": data["id"],
            "model": data["model"],
            "finish": data["choices"][0]["finish_reason"],
            "text": data["choices"][0]["message"]["content"],
            "usage": data["usage"],
        }, None
    body["stream_options"] = {"include_usage": True}
    out: dict[str, Any] = {"text": ""}
    ttfc: float | None = None
    with client.stream("POST", f"{base}/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if ttfc is None:
                ttfc = time.monotonic() - started
            chunk = json.loads(line[6:])
            out["id"], out["model"] = chunk["id"], chunk["model"]
            for choice in chunk.get("choices") or []:
                out["text"] += choice["delta"].get("content", "")
                if choice.get("finish_reason"):
                    out["finish"] = choice["finish_reason"]
            if chunk.get("usage"):
                out["usage"] = chunk["usage"]
    return out, ttfc


def run_demo(collector_url: str, calls: int = 40, content: bool = True) -> DemoSummary:
    """Make `calls` traced LLM calls and flush their telemetry to `collector_url`."""
    endpoint = collector_url.rstrip("/")
    resource = Resource.create(
        {
            "service.name": "demo-chat-app",
            "k8s.namespace.name": "demo",
            "k8s.pod.name": "demo-chat-app-0",
            # lets the collector pair a call the agent also captured even without ids on the
            # wire (a failed call has no response id)
            "process.pid": os.getpid(),
        }
    )
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"), export_interval_millis=60_000
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    tracer = tracer_provider.get_tracer("infersight.demo")
    meter = meter_provider.get_meter("infersight.demo")
    duration = gm.create_gen_ai_client_operation_duration(meter)
    tokens = gm.create_gen_ai_client_token_usage(meter)
    server, port = _start_model_server()
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(7)
    errors = 0
    started = time.monotonic()
    try:
        with httpx.Client(timeout=30) as client:
            for i in range(calls):
                model = MODELS[i % len(MODELS)]
                prompt = "please rate limit me" if i % 17 == 16 else rng.choice(PROMPTS)
                stream = i % 2 == 0
                attrs: dict[str, Any] = {
                    ga.GEN_AI_OPERATION_NAME: "chat",
                    ga.GEN_AI_PROVIDER_NAME: "openai",
                    ga.GEN_AI_REQUEST_MODEL: model,
                    ga.GEN_AI_REQUEST_MAX_TOKENS: 64,
                    ga.GEN_AI_REQUEST_TEMPERATURE: 0.2,
                    server_attributes.SERVER_ADDRESS: "127.0.0.1",
                    server_attributes.SERVER_PORT: port,
                }
                if stream:
                    attrs[ga.GEN_AI_REQUEST_STREAM] = True
                t0 = time.monotonic()
                with tracer.start_as_current_span(
                    f"chat {model}", kind=SpanKind.CLIENT, attributes=attrs
                ) as span:
                    metric_attrs = {
                        k: attrs[k]
                        for k in (
                            ga.GEN_AI_OPERATION_NAME,
                            ga.GEN_AI_PROVIDER_NAME,
                            ga.GEN_AI_REQUEST_MODEL,
                        )
                    }
                    try:
                        out, ttfc = _call(client, base, model, prompt, stream)
                    except httpx.HTTPStatusError as exc:
                        errors += 1
                        code = str(exc.response.status_code)
                        span.set_attribute(error_attributes.ERROR_TYPE, code)
                        span.set_status(Status(StatusCode.ERROR, "rate limited"))
                        duration.record(
                            time.monotonic() - t0,
                            {**metric_attrs, error_attributes.ERROR_TYPE: code},
                        )
                        continue
                    usage = out.get("usage") or {}
                    span.set_attributes(
                        {
                            ga.GEN_AI_RESPONSE_ID: out["id"],
                            ga.GEN_AI_RESPONSE_MODEL: out["model"],
                            ga.GEN_AI_RESPONSE_FINISH_REASONS: [out.get("finish", "stop")],
                            ga.GEN_AI_USAGE_INPUT_TOKENS: int(usage.get("prompt_tokens", 0)),
                            ga.GEN_AI_USAGE_OUTPUT_TOKENS: int(usage.get("completion_tokens", 0)),
                        }
                    )
                    if ttfc is not None:
                        span.set_attribute(ga.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, ttfc)
                    if content:
                        span.set_attribute(
                            ga.GEN_AI_INPUT_MESSAGES,
                            json.dumps(
                                [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
                            ),
                        )
                        span.set_attribute(
                            ga.GEN_AI_OUTPUT_MESSAGES,
                            json.dumps(
                                [
                                    {
                                        "role": "assistant",
                                        "finish_reason": out.get("finish", "stop"),
                                        "parts": [{"type": "text", "content": out["text"]}],
                                    }
                                ]
                            ),
                        )
                    duration.record(time.monotonic() - t0, metric_attrs)
                    tokens.record(
                        int(usage.get("prompt_tokens", 0)),
                        {**metric_attrs, ga.GEN_AI_TOKEN_TYPE: "input"},
                    )
                    tokens.record(
                        int(usage.get("completion_tokens", 0)),
                        {**metric_attrs, ga.GEN_AI_TOKEN_TYPE: "output"},
                    )
    finally:
        server.should_exit = True
        tracer_provider.shutdown()
        meter_provider.shutdown()
    return DemoSummary(calls=calls, errors=errors, elapsed_s=time.monotonic() - started)
