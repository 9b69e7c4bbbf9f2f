"""Fixtures for the engine tests: a node's worth of real HTTP servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.engines.kubelet_pods import container, pod, pod_list
from tests.engines.servers import EngineServer, JsonServer, TextServer

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
MISTRAL = "mistralai/Mistral-7B-Instruct-v0.3"
QWEN_SMALL = "Qwen/Qwen2.5-1.5B-Instruct"
QWEN = "Qwen/Qwen2.5-7B-Instruct"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.test-token"


@dataclass
class Node:
    vllm: EngineServer
    vllm_old: EngineServer
    tgi: EngineServer
    sglang: EngineServer
    node_exporter: TextServer
    web_app: TextServer
    dead_port: int
    kubelet: JsonServer
    token_file: Path

    def engines(self) -> list[EngineServer]:
        return [self.vllm, self.vllm_old, self.tgi, self.sglang]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    vllm = EngineServer(
        "vllm_v1.prom", running=7, waiting=2, kv_usage=0.4321, prefix_queries=1000, prefix_hits=250
    )
    vllm_old = EngineServer("vllm_v0.prom", running=3, waiting=0, kv_usage=0.125, hit_rate=0.5)
    tgi = EngineServer(
        "tgi.prom",
        info={"model_id": MISTRAL, "router": "text-generation-router"},
        queue=4,
        batch=16,
    )
    sglang = EngineServer("sglang.prom", running=5, queue=1, token_usage=0.27, hit_rate=0.61)
    node_exporter = TextServer(
        "# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.42\n"
    )
    web_app = TextServer("<!doctype html><html><body>hello</body></html>", "text/html")
    dead_port = free_port()
    ip = "127.0.0.1"
    pods = pod_list(
        pod(
            "vllm-llama-0",
            "inference",
            ip,
            [container("vllm", "vllm/vllm-openai:v0.10.1", [("http", vllm.port, "TCP")], 1)],
        ),
        pod(
            "vllm-qwen-0",
            "inference",
            ip,
            [container("vllm", "vllm/vllm-openai:v0.6.3", [("http", vllm_old.port, "TCP")], 1)],
        ),
        pod(
            "tgi-mistral-0",
            "inference",
            ip,
            [
                container(
                    "tgi",
                    "ghcr.io/huggingface/text-generation-inference:3.0.1",
                    [("http", tgi.port, "TCP")],
                    1,
                )
            ],
        ),
        pod(
            "sglang-qwen-0",
            "research",
            ip,
            [container("sglang", "lmsysorg/sglang:v0.4.9", [("http", sglang.port, "TCP")], 1)],
            annotations={"prometheus.io/scrape": "true", "prometheus.io/port": str(sglang.port)},
        ),
        pod(
            "node-exporter-x7k2p",
            "monitoring",
            ip,
            [
                container(
                    "node-exporter",
                    "prom/node-exporter:v1.8.2",
                    [("metrics", node_exporter.port, "TCP")],
                )
            ],
        ),
        pod(
            "web-5f7d9",
            "default",
            ip,
            [
                container(
                    "web",
                    "nginx:1.27",
                    [("http", web_app.port, "TCP"), ("admin", dead_port, "TCP")],
                )
            ],
        ),
    )
    kubelet = JsonServer("/pods", pods)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    servers = [vllm, vllm_old, tgi, sglang, node_exporter, web_app, kubelet]
    try:
        yield Node(
            vllm, vllm_old, tgi, sglang, node_exporter, web_app, dead_port, kubelet, token_file
        )
    finally:
        for s in servers:
            s.close()
