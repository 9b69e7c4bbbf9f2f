"""Drives one real GenAI instrumentation family: OpenAI API calls in, real telemetry out.

Runs inside a family's own virtual environment (`.testenvs/<family>/bin/python`, see
`envs.py`). It sets up the real OTel SDK (tracer and logger providers), instruments the real
`openai` client with the family's real instrumentation, and makes a fixed list of calls
(`SCENARIOS`: chat, streamed chat with and without usage, tool call, length cut, legacy
completion, embeddings, a failing call) against an OpenAI-compatible server (the test server of
`tests/support/openai_server.py`, started here when no `--server-url` is given).

Exporters: `memory` dumps every scenario's spans and log records as JSON (`--dump FILE`, the
fixtures of `tests/genai/`); `otlp-http` / `otlp-grpc` export with the SDK's real OTLP
exporters to `--endpoint`. Either way the last stdout line is a JSON summary: per scenario the
response id the client saw and the client-side time to first chunk, plus the server's ground
truth when the server runs in this process.

Usage: `python driver.py --family openai-v2 --mode legacy --exporter otlp-grpc
--endpoint 127.0.0.1:4317 --server-url http://127.0.0.1:8000/v1 --service-name svc`.
Must not: reach anything but loopback.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

#: Families and their modes (the first one is the default).
#: `openai-v2` (2.4b0) always emits the latest conventions; its legacy output comes from the
#: last release that has it, in its own environment (`openai-v2-legacy`).
MODES: dict[str, tuple[str, ...]] = {
    "openai-v2": ("latest",),
    "openai-v2-legacy": ("legacy",),
    "openllmetry": ("attributes", "events"),
    "openlit": ("default",),
    "openinference": ("default",),
}

SYSTEM_PROMPT = (
    "You are a careful assistant for an inference observability team; answer briefly, "
    "plainly and only about the question asked."
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
SCENARIOS: tuple[str, ...] = (
    "chat",
    "chat_stream_usage",
    "chat_stream",
    "chat_tools",
    "chat_length",
    "completion",
    "embeddings",
    "chat_error",
)
MODEL = "gpt-4o-mini"


def _set_mode_env(family: str, mode: str) -> None:
    """Environment the instrumentations read at import/instrument time."""
    if family == "openai-v2":
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "span_and_event"
    if family == "openai-v2-legacy":
        os.environ.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
    if family == "openllmetry":
        os.environ["TRACELOOP_TRACE_CONTENT"] = "true"


class Telemetry:
    """The SDK providers and exporters for one run."""

    def __init__(self, exporter: str, endpoint: str | None, service_name: str) -> None:
        from opentelemetry import trace
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        resource = Resource.create({"service.name": service_name})
        self.tracer_provider = TracerProvider(resource=resource)
        self.logger_provider = LoggerProvider(resource=resource)
        self.span_memory: Any = None
        self.log_memory: Any = None
        if exporter == "memory":
            from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )

            try:
                from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as _Mem
            except ImportError:  # older SDK lines name it differently
                from opentelemetry.sdk._logs.export import InMemoryLogExporter as _Mem
            self.span_memory = InMemorySpanExporter()
            self.log_memory = _Mem()
            self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_memory))
            self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.log_memory))
        else:
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            if exporter == "otlp-http":
                from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                base = (endpoint or "http://127.0.0.1:4318").rstrip("/")
                span_exp: Any = OTLPSpanExporter(endpoint=f"{base}/v1/traces")
                log_exp: Any = OTLPLogExporter(endpoint=f"{base}/v1/logs")
            else:
                from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )

                target = endpoint or "127.0.0.1:4317"
                span_exp = OTLPSpanExporter(endpoint=target, insecure=True)
                log_exp = OTLPLogExporter(endpoint=target, insecure=True)
            self.tracer_provider.add_span_processor(BatchSpanProcessor(span_exp))
            self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exp))
        trace.set_tracer_provider(self.tracer_provider)
        set_logger_provider(self.logger_provider)

    def take(self) -> dict[str, Any]:
        """Spans and log records finished since the last call (memory exporter only)."""
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()
        spans = [_span_json(s) for s in self.span_memory.get_finished_spans()]
        logs = [_log_json(r) for r in _finished_logs(self.log_memory)]
        self.span_memory.clear()
        self.log_memory.clear()
        return {"spans": spans, "logs": logs}

    def shutdown(self) -> None:
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def _finished_logs(memory: Any) -> list[Any]:
    getter = getattr(memory, "get_finished_logs", None)
    return list(getter() if getter else [])


def _plain(value: Any) -> Any:
    """An attribute or body value as the collector decodes it from OTLP (JSON-able)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in dict(value).items()}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _span_json(span: Any) -> dict[str, Any]:
    scope = getattr(span, "instrumentation_scope", None)
    return {
        "name": span.name,
        "kind": span.kind.name.lower(),
        "scope": getattr(scope, "name", None),
        "start_unix_ns": span.start_time,
        "end_unix_ns": span.end_time,
        "status": span.status.status_code.name.lower(),
        "attributes": _plain(dict(span.attributes or {})),
        "events": [
            {
                "name": e.name,
                "time_unix_ns": e.timestamp,
                "attributes": _plain(dict(e.attributes or {})),
            }
            for e in span.events
        ],
    }


def _log_json(item: Any) -> dict[str, Any]:
    record = getattr(item, "log_record", item)
    attrs = _plain(dict(record.attributes or {}))
    name = getattr(record, "event_name", None) or attrs.get("event.name")
    return {"event_name": name, "attributes": attrs, "body": _plain(record.body)}


def _instrument(family: str, mode: str) -> None:
    if family in ("openai-v2", "openai-v2-legacy"):
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
    elif family == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as Traceloop

        Traceloop(use_attributes=(mode != "events")).instrument()
    elif family == "openlit":
        import openlit

        # openlit reuses the SDK providers set above; its own metrics are not under test. A
        # local price list keeps it from downloading one.
        openlit.init(
            disable_metrics=True,
            pricing_json=str(HERE / "openlit_pricing.json"),
            disabled_instrumentors=["httpx", "requests", "urllib", "urllib3"],
        )
    elif family == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInference

        OpenInference().instrument()
    else:
        raise SystemExit(f"unknown family {family}")


def _call(client: Any, scenario: str) -> dict[str, Any]:
    """Make one scenario's call; returns what the client saw."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Explain one fact about LLM serving ({scenario})."},
    ]
    seen: dict[str, Any] = {
        "scenario": scenario,
        "response_id": None,
        "client_ttfc_s": None,
        "error": None,
    }
    t0 = time.monotonic()
    try:
        if scenario == "chat":
            r = client.chat.completions.create(
                model=MODEL, messages=messages, temperature=0.5, top_p=0.9, max_tokens=200
            )
            seen["response_id"] = r.id
        elif scenario in ("chat_stream_usage", "chat_stream"):
            extra = (
                {"stream_options": {"include_usage": True}}
                if scenario == "chat_stream_usage"
                else {}
            )
            stream = client.chat.completions.create(
                model=MODEL, messages=messages, temperature=0.5, stream=True, **extra
            )
            for chunk in stream:
                if seen["client_ttfc_s"] is None:
                    seen["client_ttfc_s"] = time.monotonic() - t0
                seen["response_id"] = chunk.id
        elif scenario == "chat_tools":
            r = client.chat.completions.create(
                model=MODEL,
                tools=TOOLS,
                messages=[{"role": "user", "content": "What is the weather in Paris today?"}],
            )
            seen["response_id"] = r.id
        elif scenario == "chat_length":
            r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
            seen["response_id"] = r.id
        elif scenario == "completion":
            r = client.completions.create(
                model="gpt-3.5-turbo-instruct",
                max_tokens=50,
                prompt="Say one thing about GPU memory bandwidth.",
            )
            seen["response_id"] = r.id
        elif scenario == "embeddings":
            r = client.embeddings.create(
                model="text-embedding-3-small", input=["tokens per second", "time to first token"]
            )
            seen["response_id"] = None
        elif scenario == "chat_error":
            client.chat.completions.create(model="fail-500", messages=messages)
    except Exception as exc:
        seen["error"] = type(exc).__name__
    seen["client_total_s"] = time.monotonic() - t0
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Drive one GenAI instrumentation family.")
    parser.add_argument("--family", required=True, choices=sorted(MODES))
    parser.add_argument("--mode", default=None)
    parser.add_argument(
        "--exporter", default="memory", choices=("memory", "otlp-http", "otlp-grpc")
    )
    parser.add_argument("--endpoint", default=None, help="collector OTLP endpoint")
    parser.add_argument("--server-url", default=None, help="OpenAI base URL (default: start one)")
    parser.add_argument("--service-name", default=None)
    parser.add_argument("--dump", default=None, help="memory exporter: write the cases here")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--first-chunk-delay-ms", type=float, default=150.0)
    args = parser.parse_args(argv)
    mode = args.mode or MODES[args.family][0]
    if mode not in MODES[args.family]:
        raise SystemExit(f"{args.family} has no mode {mode}")
    _set_mode_env(args.family, mode)

    server = None
    server_url = args.server_url
    if server_url is None:
        sys.path.insert(0, str(ROOT))
        from tests.support.openai_server import OpenAIServer

        server = OpenAIServer(first_chunk_delay_s=args.first_chunk_delay_ms / 1000).start()
        server_url = server.base_url

    telemetry = Telemetry(
        args.exporter, args.endpoint, args.service_name or f"instr-{args.family}-{mode}"
    )
    _instrument(args.family, mode)
    import openai

    client = openai.OpenAI(base_url=server_url, api_key="test-key", max_retries=0, timeout=30)
    cases: list[dict[str, Any]] = []
    for scenario in args.scenario or SCENARIOS:
        before = len(server.served()) if server else 0
        seen = _call(client, scenario)
        case: dict[str, Any] = {"scenario": scenario, "client": seen}
        if server is not None:
            new = server.served()[before:]
            case["served"] = [s.to_json() for s in new]
        if telemetry.span_memory is not None:
            case.update(telemetry.take())
        cases.append(case)
    telemetry.shutdown()
    if server is not None:
        server.stop()

    if args.dump:
        versions = _versions(args.family)
        doc = {"family": args.family, "mode": mode, "versions": versions, "cases": cases}
        # Stack traces name this checkout's path; fixtures are committed, so it is replaced.
        text = json.dumps(doc, indent=1, sort_keys=True).replace(str(ROOT), "<repo>")
        Path(args.dump).write_text(text + "\n")
    summary = [{"scenario": c["scenario"], **c["client"]} for c in cases]
    print(json.dumps({"family": args.family, "mode": mode, "calls": summary}))
    return 0


def _versions(family: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = {
        "openai-v2": ["opentelemetry-instrumentation-openai-v2", "opentelemetry-util-genai"],
        "openai-v2-legacy": ["opentelemetry-instrumentation-openai-v2"],
        "openllmetry": [
            "opentelemetry-instrumentation-openai",
            "opentelemetry-semantic-conventions-ai",
        ],
        "openlit": ["openlit"],
        "openinference": ["openinference-instrumentation-openai"],
    }[family] + ["openai", "opentelemetry-sdk"]
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "?"
    return out


def fetch_served(server_url: str) -> list[dict[str, Any]]:
    """The ground truth of a test server running in another process."""
    base = server_url.rstrip("/").removesuffix("/v1")
    with urllib.request.urlopen(f"{base}/_test/served", timeout=10) as resp:
        data: list[dict[str, Any]] = json.loads(resp.read())
        return data


if __name__ == "__main__":
    raise SystemExit(main())
