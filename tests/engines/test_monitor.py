"""Discovery, probing and scraping against real HTTP servers on loopback: engines serving
realistic vLLM, TGI and SGLang pages, other services, a dead port, and a kubelet `/pods`."""

from __future__ import annotations

import os
import threading

import pytest

from agent.engines.discovery import Endpoint
from agent.engines.monitor import EngineMonitor, EngineMonitorConfig, EngineState
from agent.k8s.pods import KubeletPodSource
from tests.engines.conftest import LLAMA, MISTRAL, QWEN, QWEN_SMALL, TOKEN, Node
from tests.engines.servers import TextServer


def kubelet_source(node: Node) -> KubeletPodSource:
    return KubeletPodSource(
        f"http://127.0.0.1:{node.kubelet.port}/pods", token_path=node.token_file
    )


def by_port(states: list[EngineState]) -> dict[int, EngineState]:
    return {s.endpoint.port: s for s in states}


def check_engines(node: Node, states: dict[int, EngineState]) -> None:
    vllm = states[node.vllm.port]
    assert vllm.engine == "vllm"
    [r] = vllm.readings
    assert (r.model, r.requests_running, r.requests_waiting) == (LLAMA, 7.0, 2.0)
    assert r.kv_cache_usage_ratio == pytest.approx(0.4321)
    # first scrape: the hit ratio since the engine started
    assert r.prefix_cache_hit_ratio == pytest.approx(0.25)
    assert (r.prefix_cache_queries_tokens, r.prefix_cache_hits_tokens) == (1000.0, 250.0)

    [r] = states[node.vllm_old.port].readings
    assert (
        r.engine,
        r.model,
        r.requests_running,
        r.kv_cache_usage_ratio,
        r.prefix_cache_hit_ratio,
    ) == ("vllm", QWEN_SMALL, 3.0, 0.125, 0.5)

    [r] = states[node.tgi.port].readings
    assert (
        r.engine,
        r.model,
        r.requests_running,
        r.requests_waiting,
        r.batch_size,
        r.queue_size,
    ) == ("tgi", MISTRAL, 16.0, 4.0, 16.0, 4.0)

    [r] = states[node.sglang.port].readings
    assert (r.engine, r.model, r.requests_running, r.requests_waiting) == ("sglang", QWEN, 5.0, 1.0)
    assert (r.kv_cache_usage_ratio, r.prefix_cache_hit_ratio) == (0.27, 0.61)


def test_engines_found_through_the_kubelet_pod_list(node: Node) -> None:
    source = kubelet_source(node)
    monitor = EngineMonitor(EngineMonitorConfig(scan_local=False, timeout_s=1.0), pod_source=source)
    try:
        states = by_port(monitor.tick())
    finally:
        monitor.stop()
        source.close()
    assert set(states) == {s.port for s in node.engines()}
    check_engines(node, states)
    pods = {
        port: (s.endpoint.namespace, s.endpoint.pod, s.endpoint.container)
        for port, s in states.items()
    }
    assert pods == {
        node.vllm.port: ("inference", "vllm-llama-0", "vllm"),
        node.vllm_old.port: ("inference", "vllm-qwen-0", "vllm"),
        node.tgi.port: ("inference", "tgi-mistral-0", "tgi"),
        node.sglang.port: ("research", "sglang-qwen-0", "sglang"),
    }
    assert node.kubelet.authorization == [f"Bearer {TOKEN}"]
    # the other services were asked once and left alone
    assert node.node_exporter.requests == ["/metrics"]
    assert node.web_app.requests == ["/metrics"]
    assert monitor.endpoints_known() == 7  # 4 engines, 2 other services, the dead port
    assert monitor.scrape_errors == {}


def test_engines_found_among_local_listening_sockets(node: Node) -> None:
    """No pod list: the engines' sockets are found in /proc/net/tcp and mapped to this
    process through /proc/<pid>/fd."""
    me = os.getpid()
    monitor = EngineMonitor(
        EngineMonitorConfig(timeout_s=1.0, process_filter=lambda pid, _cmdline: pid == me)
    )
    try:
        states = by_port(monitor.tick())
    finally:
        monitor.stop()
    engines = {s.port for s in node.engines()}
    assert engines <= set(states)
    check_engines(node, states)
    for port in engines:
        ep = states[port].endpoint
        assert (ep.host, ep.source, ep.pid, ep.pod) == ("127.0.0.1", "local", me, None)


def test_hit_ratio_follows_the_counters_between_scrapes(node: Node) -> None:
    monitor = EngineMonitor(
        EngineMonitorConfig(scan_local=False),
        static_endpoints=[Endpoint("127.0.0.1", node.vllm.port)],
    )

    def ratio() -> float | None:
        [state] = monitor.tick()
        return state.readings[0].prefix_cache_hit_ratio

    try:
        assert ratio() == pytest.approx(0.25)
        node.vllm.values.update(prefix_queries=3000, prefix_hits=1250)
        assert ratio() == pytest.approx(0.5)  # 1000 of the last 2000 tokens
        assert ratio() is None  # nothing looked up since
        node.vllm.values.update(prefix_queries=100, prefix_hits=90)  # the engine restarted
        assert ratio() == pytest.approx(0.9)
    finally:
        monitor.stop()


def test_an_engine_that_stops_answering_is_dropped_and_probed_again(node: Node) -> None:
    now = [0.0]
    monitor = EngineMonitor(
        EngineMonitorConfig(
            scan_local=False, timeout_s=1.0, discovery_period_s=30.0, reprobe_s=300.0
        ),
        static_endpoints=[
            Endpoint("127.0.0.1", node.sglang.port),
            Endpoint("127.0.0.1", node.node_exporter.port),
        ],
        clock_mono_s=lambda: now[0],
    )
    try:
        assert [s.engine for s in monitor.tick()] == ["sglang"]
        node.sglang.close()
        now[0] = 5.0
        assert monitor.tick() == []
        assert monitor.scrape_errors == {"sglang": 1}
        # not asked again before the next discovery round, then asked again
        now[0] = 10.0
        monitor.tick()
        assert monitor.scrape_errors == {"sglang": 1}
        assert node.node_exporter.requests == ["/metrics"]
        now[0] = 36.0
        assert monitor.tick() == []
        # a service that is not an engine waits for reprobe_s
        assert node.node_exporter.requests == ["/metrics"]
        now[0] = 301.0
        monitor.tick()
        assert node.node_exporter.requests == ["/metrics", "/metrics"]
    finally:
        monitor.stop()


def test_tgi_model_is_read_once_from_info(node: Node) -> None:
    monitor = EngineMonitor(
        EngineMonitorConfig(scan_local=False),
        static_endpoints=[Endpoint("127.0.0.1", node.tgi.port)],
    )
    try:
        for _ in range(3):
            [state] = monitor.tick()
            assert state.readings[0].model == MISTRAL
    finally:
        monitor.stop()
    assert node.tgi.requests.count("/info") == 1
    assert node.tgi.requests.count("/metrics") == 3


def test_an_oversized_page_is_not_read(node: Node) -> None:
    big = TextServer(
        "# TYPE vllm:num_requests_running gauge\n"
        + 'vllm:num_requests_running{model_name="m"} 1\n' * 5000
    )
    monitor = EngineMonitor(
        EngineMonitorConfig(scan_local=False, max_page_bytes=64 * 1024),
        static_endpoints=[Endpoint("127.0.0.1", big.port), Endpoint("127.0.0.1", node.vllm.port)],
    )
    try:
        assert [s.endpoint.port for s in monitor.tick()] == [node.vllm.port]
    finally:
        monitor.stop()
        big.close()


def test_a_failing_kubelet_leaves_discovery_as_it_was(node: Node) -> None:
    now = [0.0]
    source = kubelet_source(node)
    monitor = EngineMonitor(
        EngineMonitorConfig(scan_local=False, timeout_s=1.0, discovery_period_s=30.0),
        pod_source=source,
        clock_mono_s=lambda: now[0],
    )
    try:
        assert len(monitor.tick()) == 4
        node.kubelet.close()
        now[0] = 31.0
        assert {s.endpoint.pod for s in monitor.tick()} == {
            "vllm-llama-0",
            "vllm-qwen-0",
            "tgi-mistral-0",
            "sglang-qwen-0",
        }
        assert monitor.pod_list_errors == 1
        assert monitor.endpoints_known() == 7
    finally:
        monitor.stop()
        source.close()


def test_the_monitor_thread_scrapes_on_its_own(node: Node) -> None:
    monitor = EngineMonitor(
        EngineMonitorConfig(scan_local=False, scrape_period_s=0.05),
        static_endpoints=[Endpoint("127.0.0.1", node.vllm.port)],
    )
    monitor.start()
    try:
        for _ in range(200):
            if node.vllm.requests.count("/metrics") >= 3:
                break
            threading.Event().wait(0.02)
        assert node.vllm.requests.count("/metrics") >= 3
        assert [s.engine for s in monitor.snapshot()] == ["vllm"]
    finally:
        monitor.stop()
        monitor.stop()


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="scrape_period_s"):
        EngineMonitorConfig(scrape_period_s=0)
    with pytest.raises(ValueError, match="max_page_bytes"):
        EngineMonitorConfig(max_page_bytes=10)
