"""The agent as a whole, without the kernel: exchanges in, spans and metrics in a real collector.

`Agent.handle` gets exchanges as the capture would deliver them; the agent exports over real
OTLP (gRPC and HTTP) to a collector process, names pods through a fake kubelet, serves its
self-metrics over HTTP, and accounts for every exchange. The `infersight agent` command is run
as a process where bcc cannot be imported: it must say so in one line, keep serving
self-metrics, and flush and exit 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent import main as agent_main
from agent.capture.exchange import Role
from agent.config import load_config
from agent.main import Agent, capture_problems
from tests.agent.exchanges import chat_exchange, not_llm_exchange
from tests.agent.fake_kube import TOKEN, FakeKube, FakePod
from tests.agent.processes import AgentProcess, parse_prometheus
from tests.conftest import CollectorProcess, free_port

VLLM_ID = "c" * 64
POD_UID = "5b0c3a8e-1234-4abc-8def-0123456789ab"


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    """A procfs with pid 4242 (a client in pod chatbot-0) and pid 777 (a server, vllm-0)."""
    root = tmp_path / "proc"
    for pid, cid in ((4242, "a" * 64), (777, VLLM_ID), (9001, None)):
        (root / str(pid)).mkdir(parents=True)
        path = (
            "/user.slice/session-1.scope"
            if cid is None
            else f"/kubepods.slice/kubepods-pod{POD_UID.replace('-', '_')}.slice/"
            f"cri-containerd-{cid}.scope"
        )
        (root / str(pid) / "cgroup").write_text(f"0::{path}\n")
    return root


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    pods = [
        FakePod(
            "chatbot-0", "apps", "11111111-2222-4333-8444-555566667777", "node-x", {"app": "a" * 64}
        ),
        FakePod("vllm-0", "inference", POD_UID, "node-x", {"vllm": VLLM_ID}),
    ]
    with FakeKube(pods) as k:
        yield k


def _agent(
    tmp_path: Path,
    proc_root: Path,
    kube: FakeKube,
    collector: CollectorProcess,
    protocol: str,
    **filters: Any,
) -> Agent:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    endpoint = f"grpc://{collector.otlp_grpc}" if protocol == "grpc" else collector.otlp_http
    cfg = load_config(
        overrides={
            "agent": {
                "capture": False,
                "metrics_host": "127.0.0.1",
                "metrics_port": 0,
                "node_name": "node-x",
                "content": "metadata",
            },
            "exporter": {"endpoint": endpoint, "metric_interval_s": 0.5},
            "k8s": {
                "mode": "kubelet",
                "kubelet_url": f"{kube.url}/pods",
                "token_path": str(token),
                "proc_root": str(proc_root),
            },
            "gpu": {"enabled": False},
            "filters": filters,
        },
        environ={},
    )
    return Agent(cfg, say=lambda line: None)


def _metrics(agent: Agent) -> dict[str, float]:
    resp = httpx.get(f"http://127.0.0.1:{agent.selfmetrics.port}/metrics", timeout=5)
    resp.raise_for_status()
    return parse_prometheus(resp.text)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_exchanges_become_spans_and_metrics_in_the_collector(
    tmp_path: Path,
    proc_root: Path,
    kube: FakeKube,
    collector_process: CollectorProcess,
    protocol: str,
) -> None:
    agent = _agent(tmp_path, proc_root, kube, collector_process, protocol)
    problems = agent.start()
    assert problems == ["eBPF capture off (agent.capture=false)"]
    try:
        agent.handle(chat_exchange(role=Role.CLIENT, pid=4242, stream=True))
        agent.handle(chat_exchange(role=Role.SERVER, pid=777, stream=True))
        agent.handle(chat_exchange(role=Role.SERVER, pid=777, status=503))
        agent.handle(not_llm_exchange())
        m = _metrics(agent)
        assert m['infersight_agent_exchanges_total{outcome="llm"}'] == 3
        assert m['infersight_agent_exchanges_total{outcome="not_llm"}'] == 1
        assert m['infersight_agent_exchanges_total{outcome="filtered"}'] == 0
        assert m['infersight_agent_llm_calls_total{role="server"}'] == 2
        assert m['infersight_agent_llm_calls_total{role="client"}'] == 1
        assert m["infersight_agent_capture_up"] == 0
        assert m['infersight_agent_spans_total{stage="emitted"}'] == 3
        assert m['infersight_agent_k8s_lookups_total{outcome="hit"}'] == 3
    finally:
        agent.stop()
    assert agent.telemetry.spans.exported == 3
    assert agent.telemetry.spans.failed == 0

    rows = collector_process.sql(
        "SELECT kind, name, source, status_code, k8s_node, service_name, attributes, "
        "gen_ai_usage_output_tokens, gen_ai_response_time_to_first_chunk, "
        "(SELECT any_value(c.output_messages) FROM genai_content c "
        " WHERE c.trace_id = s.trace_id AND c.span_id = s.span_id) FROM spans s "
        "ORDER BY kind, status_code"
    )
    assert len(rows) == 3
    client, server_ok, server_err = rows[0], rows[2], rows[1]
    assert [r[0] for r in rows] == ["client", "server", "server"]
    assert server_err[3] == "error"
    for row in rows:
        assert row[1] == "chat gpt-4o"
        assert row[2] == "ebpf"
        assert row[4] == "node-x"
        assert row[5] == "infersight-agent"
    c_attrs = json.loads(client[6])
    s_attrs = json.loads(server_ok[6])
    assert (c_attrs["k8s.namespace.name"], c_attrs["k8s.pod.name"]) == ("apps", "chatbot-0")
    assert (
        s_attrs["k8s.namespace.name"],
        s_attrs["k8s.pod.name"],
        s_attrs["k8s.container.name"],
    ) == ("inference", "vllm-0", "vllm")
    assert s_attrs["process.pid"] == 777
    assert client[7] == 3
    assert client[8] == pytest.approx(0.250)
    # content mode "metadata": the shape, not the words (stored once, in genai_content)
    assert client[9] is not None
    assert "Hello" not in client[9]
    assert json.loads(client[9])[0]["role"] == "assistant"
    assert "gen_ai.output.messages" not in c_attrs

    points = collector_process.sql(
        "SELECT metric_name, attributes, count, sum FROM metric_points "
        "WHERE metric_name IN ('gen_ai.server.request.duration', "
        "'gen_ai.client.operation.time_to_first_chunk', 'infersight.agent.exchanges') "
        "ORDER BY time_unix_ns DESC"
    )
    latest: dict[tuple[str, str], tuple[Any, Any]] = {}
    for name, attrs, count, total in points:
        key = (name, json.dumps(json.loads(attrs), sort_keys=True))
        latest.setdefault(key, (count, total))
    server_dur = [v for (n, a), v in latest.items() if n == "gen_ai.server.request.duration"]
    assert sorted(c for c, _ in server_dur) == [1, 1]  # one ok, one with error.type
    ttfc = [v for (n, _), v in latest.items() if n == "gen_ai.client.operation.time_to_first_chunk"]
    assert ttfc == [(1, pytest.approx(0.250))]
    assert any(n == "infersight.agent.exchanges" and '"outcome": "llm"' in a for (n, a) in latest)


def test_namespace_filter_and_parse_errors(
    tmp_path: Path, proc_root: Path, kube: FakeKube, collector_process: CollectorProcess
) -> None:
    agent = _agent(tmp_path, proc_root, kube, collector_process, "http", namespaces=["inference"])
    agent.start()
    try:
        agent.handle(chat_exchange(role=Role.SERVER, pid=777))  # inference/vllm-0: kept
        agent.handle(chat_exchange(role=Role.CLIENT, pid=4242))  # apps/chatbot-0: filtered
        agent.handle(chat_exchange(role=Role.CLIENT, pid=9001))  # no pod: filtered
        broken = chat_exchange(role=Role.SERVER, pid=777)
        broken.request_headers = None  # type: ignore[assignment]  # a parser bug's trigger
        agent.handle(broken)
        m = _metrics(agent)
        assert m['infersight_agent_exchanges_total{outcome="llm"}'] == 1
        assert m['infersight_agent_exchanges_total{outcome="filtered"}'] == 2
        assert m['infersight_agent_exchanges_total{outcome="parse_error"}'] == 1
        assert sum(v for k, v in m.items() if k.startswith("infersight_agent_parse_errors")) == 1
    finally:
        agent.stop()
    assert collector_process.sql("SELECT count(*) FROM spans")[0][0] == 1


def test_capture_problems_are_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(agent_main, "_effective_caps", lambda: 0)
    real_import = agent_main.importlib.import_module

    def no_bcc(name: str, package: str | None = None) -> Any:
        if name == "bcc":
            raise ImportError("No module named 'bcc'")
        return real_import(name, package)

    monkeypatch.setattr(agent_main.importlib, "import_module", no_bcc)
    monkeypatch.setattr(agent_main.os.path, "isdir", lambda path: False)
    problems = capture_problems()
    assert len(problems) == 4
    assert problems[0].startswith("not running as root")
    assert problems[1].startswith("bcc is not importable")
    assert problems[2].startswith("no kernel headers")
    assert problems[3].startswith("tracefs is not mounted")
    assert all("\n" not in p for p in problems)
    # CAP_BPF + CAP_PERFMON without root is enough for the first check
    monkeypatch.setattr(agent_main, "_effective_caps", lambda: (1 << 39) | (1 << 38))
    assert not capture_problems()[0].startswith("not running as root")


def test_command_without_bcc_keeps_running_and_stops_cleanly(
    tmp_path: Path,
    collector_process: CollectorProcess,
) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    # a bcc that cannot be imported, as on a node without python3-bpfcc
    (shadow / "bcc.py").write_text("raise ImportError('No module named bcc')\n")
    port = free_port()
    agent = AgentProcess.start(
        ["--collector", collector_process.otlp_http, "--no-gpu"],
        tmp_path / "agent.log",
        port,
        env={
            "PYTHONPATH": f"{shadow}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "INFERSIGHT_K8S_MODE": "off",
            "INFERSIGHT_EXPORTER_METRIC_INTERVAL_S": "0.5",
        },
    )
    try:
        agent.wait_for_metric("infersight_agent_capture_up", 0.0, timeout_s=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = collector_process.sql(
                "SELECT count(*) FROM metric_points WHERE metric_name = "
                "'infersight.agent.capture.up' AND value = 0"
            )
            if rows[0][0] > 0:
                break
            time.sleep(0.2)
        assert rows[0][0] > 0
    finally:
        code = agent.stop()
    assert code == 0
    log = agent.log.read_text()
    lines = [ln for ln in log.splitlines() if ln.startswith("infersight agent: eBPF capture off")]
    assert len(lines) == 1, log
    assert "bcc is not importable" in lines[0]
    assert "Kubernetes attribution off (k8s.mode=off)" in log
    assert "spans and metrics flushed" in log


def test_command_rejects_invalid_configuration(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(
        [sys.executable, "-m", "collector.cli", "agent", "--content", "everything"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "agent.content" in proc.stderr


def test_command_with_gpu_exports_gpu_metrics(
    tmp_path: Path,
    collector_process: CollectorProcess,
) -> None:
    """`--gpu` on a node whose NVML is the test library: GPU gauges reach the collector, with
    the node's name and this process as a GPU process."""
    import shutil

    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fake NVML library")
    from tests.gpu.fake_nvml.build import build_fake_nvml
    from tests.gpu.fake_nvml.scenario import FakeDevice, FakeProc, Scenario

    lib = build_fake_nvml(tmp_path / "nvml")
    gpu = FakeDevice("GPU-5a5e0000-1111-2222-3333-444455556666", memory_total_bytes=80 << 30)
    gpu.at(0.0, "power_mw", 312_000).at(0.0, "gpu_util", 70).at(0.0, "mem_used", 20 << 30)
    gpu.procs.append(FakeProc(os.getpid(), mem_bytes=3 << 30))
    scenario = Scenario(devices=[gpu]).write(tmp_path / "scenario.txt")
    agent = AgentProcess.start(
        ["--collector", collector_process.otlp_http, "--gpu", "--node-name", "gpu-node-1"],
        tmp_path / "agent.log",
        free_port(),
        env={
            "LD_LIBRARY_PATH": str(lib.parent),
            "FAKE_NVML_SCENARIO": str(scenario),
            "INFERSIGHT_K8S_MODE": "off",
            "INFERSIGHT_AGENT_CAPTURE": "false",
            "INFERSIGHT_GPU_PERIOD_S": "0.2",
            "INFERSIGHT_GPU_PROCESS_PERIOD_S": "0.2",
            "INFERSIGHT_EXPORTER_METRIC_INTERVAL_S": "0.5",
        },
    )
    try:
        deadline = time.monotonic() + 60
        power: list[list[Any]] = []
        procs: list[list[Any]] = []
        while time.monotonic() < deadline and not (power and procs):
            assert agent.proc.poll() is None, agent.log.read_text()
            power = collector_process.sql(
                "SELECT value, attributes, k8s_node FROM metric_points "
                "WHERE metric_name = 'hw.power' LIMIT 1"
            )
            procs = collector_process.sql(
                "SELECT value, attributes FROM metric_points "
                "WHERE metric_name = 'infersight.gpu.process.memory.usage' LIMIT 1"
            )
            time.sleep(0.2)
    finally:
        code = agent.stop()
    assert code == 0
    assert power, agent.log.read_text()
    value, attrs, node = power[0]
    assert value == pytest.approx(312.0)
    assert json.loads(attrs)["hw.id"] == gpu.uuid
    assert node == "gpu-node-1"
    assert procs, agent.log.read_text()
    assert procs[0][0] == 3 << 30
    assert json.loads(procs[0][1])["process.pid"] == os.getpid()
