"""Engine saturation as OTel metrics: real engine servers -> `EngineMonitor` -> `EngineMetrics`
-> OTel SDK -> (the real OTLP/HTTP exporter -> a real collector | an in-memory reader)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource

from agent.engines import names as n
from agent.engines.discovery import Endpoint
from agent.engines.metrics import EngineMetrics
from agent.engines.monitor import EngineMonitor, EngineMonitorConfig
from agent.k8s.pods import KubeletPodSource
from tests.conftest import CollectorProcess, free_port
from tests.engines.conftest import LLAMA, MISTRAL, QWEN, QWEN_SMALL, Node

NODE = "gpu-node-7"


@pytest.fixture
def monitor(node: Node) -> Iterator[EngineMonitor]:
    source = KubeletPodSource(
        f"http://127.0.0.1:{node.kubelet.port}/pods", token_path=node.token_file
    )
    m = EngineMonitor(EngineMonitorConfig(scan_local=False, timeout_s=1.0), pod_source=source)
    try:
        yield m
    finally:
        m.stop()
        source.close()


def stored_points(cp: CollectorProcess) -> list[tuple[str, float, dict[str, Any], int]]:
    rows = cp.sql(
        "SELECT metric_name, value, attributes, time_unix_ns FROM metric_points "
        "WHERE metric_name LIKE 'infersight.engine.%' ORDER BY time_unix_ns"
    )
    return [
        (r[0], float(r[1]), json.loads(r[2]) if isinstance(r[2], str) else r[2], int(r[3]))
        for r in rows
    ]


def latest(points: list[tuple[str, float, dict[str, Any], int]]) -> dict[tuple[str, str], float]:
    """(metric, pod) -> value at the newest collection."""
    newest = max(p[3] for p in points)
    return {(name, attrs["k8s.pod.name"]): value for name, value, attrs, t in points if t == newest}


def test_saturation_reaches_the_collector(
    node: Node, monitor: EngineMonitor, collector_process: CollectorProcess
) -> None:
    exporter = OTLPMetricExporter(endpoint=f"{collector_process.otlp_http}/v1/metrics", timeout=10)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "infersight-agent", "k8s.node.name": NODE}),
    )
    EngineMetrics(provider.get_meter("infersight.agent.engines"), monitor, node_name=NODE)
    try:
        monitor.tick()
        assert provider.force_flush(20_000)
        first = latest(stored_points(collector_process))
        node.vllm.values.update(running=9, waiting=0, prefix_queries=3000, prefix_hits=1250)
        node.tgi.values.update(queue=0, batch=2)
        monitor.tick()
        assert provider.force_flush(20_000)
        points = stored_points(collector_process)
        second = latest(points)
    finally:
        provider.shutdown()

    assert first == pytest.approx(
        {
            (n.REQUESTS_RUNNING, "vllm-llama-0"): 7.0,
            (n.REQUESTS_WAITING, "vllm-llama-0"): 2.0,
            (n.KV_CACHE_USAGE, "vllm-llama-0"): 0.4321,
            (n.PREFIX_CACHE_HIT_RATIO, "vllm-llama-0"): 0.25,
            (n.PREFIX_CACHE_QUERIES, "vllm-llama-0"): 1000.0,
            (n.PREFIX_CACHE_HITS, "vllm-llama-0"): 250.0,
            (n.REQUESTS_RUNNING, "vllm-qwen-0"): 3.0,
            (n.REQUESTS_WAITING, "vllm-qwen-0"): 0.0,
            (n.KV_CACHE_USAGE, "vllm-qwen-0"): 0.125,
            (n.PREFIX_CACHE_HIT_RATIO, "vllm-qwen-0"): 0.5,
            (n.REQUESTS_RUNNING, "tgi-mistral-0"): 16.0,
            (n.REQUESTS_WAITING, "tgi-mistral-0"): 4.0,
            (n.BATCH_SIZE, "tgi-mistral-0"): 16.0,
            (n.QUEUE_SIZE, "tgi-mistral-0"): 4.0,
            (n.REQUESTS_RUNNING, "sglang-qwen-0"): 5.0,
            (n.REQUESTS_WAITING, "sglang-qwen-0"): 1.0,
            (n.KV_CACHE_USAGE, "sglang-qwen-0"): 0.27,
            (n.PREFIX_CACHE_HIT_RATIO, "sglang-qwen-0"): 0.61,
        }
    )
    assert second[(n.REQUESTS_RUNNING, "vllm-llama-0")] == 9.0
    assert second[(n.PREFIX_CACHE_HIT_RATIO, "vllm-llama-0")] == pytest.approx(0.5)
    assert second[(n.PREFIX_CACHE_QUERIES, "vllm-llama-0")] == 3000.0
    assert (second[(n.BATCH_SIZE, "tgi-mistral-0")], second[(n.QUEUE_SIZE, "tgi-mistral-0")]) == (
        2.0,
        0.0,
    )

    attrs = {a["k8s.pod.name"]: a for name, _, a, _ in points if name == n.REQUESTS_RUNNING}
    assert attrs["vllm-llama-0"] == {
        "infersight.engine.name": "vllm",
        "gen_ai.request.model": LLAMA,
        "server.address": "127.0.0.1",
        "server.port": node.vllm.port,
        "k8s.namespace.name": "inference",
        "k8s.pod.name": "vllm-llama-0",
        "k8s.container.name": "vllm",
        "k8s.node.name": NODE,
    }
    assert attrs["vllm-qwen-0"]["gen_ai.request.model"] == QWEN_SMALL
    assert attrs["tgi-mistral-0"]["gen_ai.request.model"] == MISTRAL
    assert attrs["tgi-mistral-0"]["infersight.engine.name"] == "tgi"
    assert attrs["sglang-qwen-0"]["gen_ai.request.model"] == QWEN
    assert attrs["sglang-qwen-0"]["k8s.namespace.name"] == "research"
    units = dict(
        collector_process.sql(
            "SELECT DISTINCT metric_name, unit FROM metric_points "
            "WHERE metric_name LIKE 'infersight.engine.%'"
        )
    )
    assert units[n.KV_CACHE_USAGE] == "1"
    assert units[n.REQUESTS_RUNNING] == "{request}"
    assert units[n.PREFIX_CACHE_QUERIES] == "{token}"


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    data = reader.get_metrics_data()
    out: dict[str, list[tuple[dict[str, Any], float]]] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = [
                    (dict(p.attributes or {}), float(p.value))
                    for p in m.data.data_points
                    if isinstance(p, NumberDataPoint)
                ]
    return out


def test_values_not_reported_are_left_out_and_errors_counted(node: Node) -> None:
    me = os.getpid()
    dead = free_port()
    monitor = EngineMonitor(
        EngineMonitorConfig(timeout_s=1.0, process_filter=lambda pid, _c: pid == me),
        static_endpoints=[Endpoint("127.0.0.1", dead)],
    )
    reader = InMemoryMetricReader()
    EngineMetrics(MeterProvider(metric_readers=[reader]).get_meter("t"), monitor)
    try:
        monitor.tick()
        got = points(reader)
        tgi = [a for a, _ in got[n.REQUESTS_RUNNING] if a["server.port"] == node.tgi.port]
        # found locally: the process, no pod
        assert tgi == [
            {
                "infersight.engine.name": "tgi",
                "gen_ai.request.model": MISTRAL,
                "server.address": "127.0.0.1",
                "server.port": node.tgi.port,
                "process.pid": me,
            }
        ]
        # TGI reports no KV cache usage, vLLM and SGLang no batch size: no series, not 0
        assert node.tgi.port not in {a["server.port"] for a, _ in got[n.KV_CACHE_USAGE]}
        assert {a["infersight.engine.name"] for a, _ in got[n.BATCH_SIZE]} == {"tgi"}
        engines = {a["infersight.engine.name"]: v for a, v in got[n.ENDPOINTS]}
        assert engines == {"vllm": 2.0, "tgi": 1.0, "sglang": 1.0}
        [(_, candidates)] = got[n.CANDIDATES]
        assert candidates >= 5
        assert n.SCRAPE_ERRORS not in got or got[n.SCRAPE_ERRORS] == []

        node.sglang.close()
        monitor.tick()
        got = points(reader)
        assert got[n.SCRAPE_ERRORS] == [({"infersight.engine.name": "sglang"}, 1.0)]
        assert "sglang" not in {a["infersight.engine.name"] for a, _ in got[n.REQUESTS_RUNNING]}
    finally:
        monitor.stop()
