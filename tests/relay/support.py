"""Helpers for the relay tests: an agent whose only job is the OTLP relay, OTLP requests built
with the real protobuf messages, and the agent's `/metrics` as numbers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from agent.config import load_config
from agent.k8s.pods import PodListSource
from agent.main import Agent
from tests.agent.processes import parse_prometheus

MS = 1_000_000


def relay_agent(
    endpoint: str,
    *,
    relay: dict[str, Any] | None = None,
    pairing: dict[str, Any] | None = None,
    k8s: dict[str, Any] | None = None,
    agent: dict[str, Any] | None = None,
    pod_source: PodListSource | None = None,
) -> Agent:
    """An agent (not started) relaying to `endpoint`: relay on loopback and free ports, no
    capture, GPU or engine monitor, Kubernetes off unless `k8s` says otherwise."""
    cfg = load_config(
        overrides={
            "agent": {
                "capture": False,
                "metrics_host": "127.0.0.1",
                "metrics_port": 0,
                "node_name": "node-x",
                **(agent or {}),
            },
            "exporter": {"endpoint": endpoint, "metric_interval_s": 60},
            "gpu": {"enabled": False},
            "engines": {"enabled": False},
            "k8s": k8s or {"mode": "off"},
            "relay": {
                "mode": "on",
                "host": "127.0.0.1",
                "grpc_port": 0,
                "http_port": 0,
                **(relay or {}),
            },
            "pairing": pairing or {},
        },
        environ={},
    )
    return Agent(cfg, pod_source=pod_source, say=lambda line: None)


def metrics(agent: Agent) -> dict[str, float]:
    """The agent's `/metrics` samples."""
    resp = httpx.get(f"http://127.0.0.1:{agent.selfmetrics.port}/metrics", timeout=5)
    resp.raise_for_status()
    return parse_prometheus(resp.text)


def relay_items(agent: Agent, outcome: str, signal: str = "traces") -> float:
    return metrics(agent)[
        f'infersight_agent_relay_items_total{{outcome="{outcome}",signal="{signal}"}}'
    ]


def trace_request(
    n_spans: int,
    *,
    service: str = "relay-test",
    resource: dict[str, str | int] | None = None,
    name_prefix: str = "op",
    pad_bytes: int = 0,
) -> ExportTraceServiceRequest:
    """One export with `n_spans` spans (distinct random ids) under one resource."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in {"service.name": service, **(resource or {})}.items():
        kv = KeyValue(key=key)
        if isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = value
        rs.resource.attributes.append(kv)
    ss = rs.scope_spans.add()
    ss.scope.name = "tests.relay"
    now = time.time_ns()
    for i in range(n_spans):
        span = ss.spans.add()
        span.trace_id = os.urandom(16)
        span.span_id = os.urandom(8)
        span.name = f"{name_prefix}-{i}"
        span.kind = 3
        span.start_time_unix_nano = now - 5 * MS
        span.end_time_unix_nano = now
        if pad_bytes:
            attr = span.attributes.add()
            attr.key = "pad"
            attr.value.string_value = "x" * pad_bytes
    return request


def wait_for(what: Callable[[], Any], timeout_s: float = 30, interval_s: float = 0.1) -> Any:
    """Poll until `what()` is truthy; returns its last value."""
    deadline = time.monotonic() + timeout_s
    value = what()
    while not value and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = what()
    return value
