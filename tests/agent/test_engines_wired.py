"""The agent runs the engine monitor: a vLLM pod on the node -> `infersight.engine.*` metrics.

A real HTTP server on loopback serves a realistic vLLM V1 `/metrics` page; a real HTTP server
stands in for the kubelet's `/pods` and lists it as a pod's container port, which is how the
monitor discovers it. The `Agent` is started with an in-memory metric reader on its own
MeterProvider and must export the engine's saturation with the pod's attributes, follow the
engine's changes, and stop its scrape thread on `stop()`. With `engines.enabled` false nothing
is scraped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent.config import load_config
from agent.engines import names as n
from agent.k8s.pods import KubeletPodSource
from agent.main import Agent
from tests.engines.kubelet_pods import container, pod, pod_list
from tests.engines.servers import EngineServer, JsonServer

NODE = "gpu-node-3"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.agent-engines"


@dataclass
class Node:
    vllm: EngineServer
    kubelet: JsonServer
    token: Path


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    vllm = EngineServer(
        "vllm_v1.prom", running=6, waiting=3, kv_usage=0.375, prefix_queries=2000, prefix_hits=500
    )
    pods = pod_list(
        pod(
            "vllm-llama-0",
            "inference",
            "127.0.0.1",
            [container("vllm", "vllm/vllm-openai:v0.10.1", [("http", vllm.port, "TCP")], 1)],
        )
    )
    kubelet = JsonServer("/pods", pods)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    try:
        yield Node(vllm, kubelet, token)
    finally:
        vllm.close()
        kubelet.close()


def _agent(
    node: Node, reader: InMemoryMetricReader, tmp_path: Path, enabled: bool = True
) -> tuple[Agent, KubeletPodSource, list[str]]:
    cfg = load_config(
        overrides={
            "agent": {"capture": False, "metrics_port": -1, "node_name": NODE},
            "k8s": {"proc_root": str(tmp_path / "no-proc")},
            "gpu": {"enabled": False},
            "engines": {"enabled": enabled, "interval_s": 0.2, "scan_local": False},
        },
        environ={},
    )
    source = KubeletPodSource(f"http://127.0.0.1:{node.kubelet.port}/pods", token_path=node.token)
    said: list[str] = []
    agent = Agent(
        cfg,
        span_exporter=InMemorySpanExporter(),
        metric_readers=[reader],
        pod_source=source,
        say=said.append,
    )
    return agent, source, said


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def _wait_for(
    reader: InMemoryMetricReader, name: str, value: float, timeout_s: float = 10.0
) -> dict[str, list[Any]]:
    deadline = time.monotonic() + timeout_s
    points: dict[str, list[Any]] = {}
    while time.monotonic() < deadline:
        points = _points(reader)
        if any(p.value == value for p in points.get(name, [])):
            return points
        time.sleep(0.1)
    raise AssertionError(f"{name}={value} not exported in {timeout_s} s; got {points.get(name)}")


def test_agent_exports_engine_saturation(node: Node, tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    agent, source, said = _agent(node, reader, tmp_path)
    try:
        problems = agent.start()
        assert not any("engine" in line for line in problems)
        assert agent.engines is not None
        points = _wait_for(reader, n.REQUESTS_RUNNING, 6)
        (running,) = points[n.REQUESTS_RUNNING]
        assert dict(running.attributes) == {
            n.ATTR_ENGINE: "vllm",
            n.ATTR_MODEL: "meta-llama/Llama-3.1-8B-Instruct",
            n.ATTR_SERVER_ADDRESS: "127.0.0.1",
            n.ATTR_SERVER_PORT: node.vllm.port,
            n.ATTR_K8S_NAMESPACE: "inference",
            n.ATTR_K8S_POD: "vllm-llama-0",
            n.ATTR_K8S_CONTAINER: "vllm",
            n.ATTR_K8S_NODE: NODE,
        }
        assert [p.value for p in points[n.REQUESTS_WAITING]] == [3]
        assert [p.value for p in points[n.KV_CACHE_USAGE]] == [pytest.approx(0.375)]
        assert [p.value for p in points[n.PREFIX_CACHE_QUERIES]] == [2000]
        assert [p.value for p in points[n.PREFIX_CACHE_HITS]] == [500]
        assert [p.value for p in points[n.ENDPOINTS]] == [1]
        # the agent's own thread keeps scraping: a change on the engine shows up by itself
        node.vllm.values.update(running=11, waiting=0)
        points = _wait_for(reader, n.REQUESTS_RUNNING, 11)
        assert [p.value for p in points[n.REQUESTS_WAITING]] == [0]
        assert node.kubelet.authorization[0] == f"Bearer {TOKEN}"
    finally:
        agent.stop()
        agent.stop()
        source.close()
    assert not [t for t in threading.enumerate() if t.name == "infersight-engines"]
    scraped = len(node.vllm.requests)
    time.sleep(0.5)
    assert len(node.vllm.requests) == scraped
    assert not any("engine" in line for line in said)


def test_engines_disabled_scrapes_nothing(node: Node, tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    agent, source, said = _agent(node, reader, tmp_path, enabled=False)
    try:
        agent.start()
        assert agent.engines is None
        time.sleep(0.6)
        assert not any(name.startswith("infersight.engine.") for name in _points(reader))
        assert node.vllm.requests == []
    finally:
        agent.stop()
        source.close()
    assert "inference-engine metrics off (engines.enabled=false)" in said
