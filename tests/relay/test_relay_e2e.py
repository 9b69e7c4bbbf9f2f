"""The agent as the node's OTLP endpoint: real OTel SDK exporters (HTTP and gRPC) send traces,
metrics and logs through the running relay to a real collector, and every resource arrives with
the Kubernetes attributes of its sender, found from the socket's owner or the pod's IP, without
touching what the application set itself."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agent.main import Agent
from tests.agent import fake_kube
from tests.agent.fake_kube import TOKEN, FakeKube, FakePod
from tests.conftest import CollectorProcess, start_collector
from tests.relay.support import metrics, relay_agent, trace_request, wait_for

pytestmark = pytest.mark.timeout(120)

CHATBOT_CID = "a" * 64
CHATBOT_UID = "11111111-2222-4333-8444-555566667777"
IP_POD_UID = "99999999-2222-4333-8444-555566667777"


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    tmp = tmp_path_factory.mktemp("relay-e2e")
    cp = start_collector(tmp / "store.duckdb", tmp / "collector.log")
    yield cp
    cp.stop()


def _send_all_signals(agent: Agent, protocol: str, service: str, spans: int) -> None:
    """Traces, metrics and logs from one process through the OTel SDK exporters."""
    assert agent.relay is not None
    resource = Resource.create({"service.name": service})
    if protocol == "http":
        base = f"http://127.0.0.1:{agent.relay.http_port}"
        span_exp: Any = HttpSpans(endpoint=f"{base}/v1/traces")
        metric_exp: Any = HttpMetrics(endpoint=f"{base}/v1/metrics")
        log_exp: Any = HttpLogs(endpoint=f"{base}/v1/logs")
    else:
        target = f"127.0.0.1:{agent.relay.grpc_port}"
        span_exp = GrpcSpans(endpoint=target, insecure=True)
        metric_exp = GrpcMetrics(endpoint=target, insecure=True)
        log_exp = GrpcLogs(endpoint=target, insecure=True)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exp, max_export_batch_size=7))
    tracer = tracer_provider.get_tracer("tests.relay")
    for i in range(spans):
        with tracer.start_as_current_span(f"work {i}"):
            pass
    reader = PeriodicExportingMetricReader(metric_exp, export_interval_millis=60_000)
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    meter_provider.get_meter("tests.relay").create_counter("relay.test.calls").add(5)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exp))
    pylog = logging.getLogger(f"tests.relay.{service}")
    pylog.propagate = False
    handler = LoggingHandler(logger_provider=logger_provider)
    pylog.addHandler(handler)
    pylog.warning("relayed log line")
    pylog.removeHandler(handler)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    logger_provider.shutdown()


@pytest.mark.parametrize(
    ("sdk_protocol", "forward"),
    [("http", "http"), ("grpc", "grpc"), ("http", "grpc"), ("grpc", "http")],
)
def test_sdk_exporters_reach_the_collector_through_the_relay(
    collector: CollectorProcess, sdk_protocol: str, forward: str
) -> None:
    endpoint = f"grpc://{collector.otlp_grpc}" if forward == "grpc" else collector.otlp_http
    agent = relay_agent(endpoint)
    agent.start()
    service = f"svc-{sdk_protocol}-{forward}"
    try:
        _send_all_signals(agent, sdk_protocol, service, spans=23)

        def all_relayed() -> bool:
            m = metrics(agent)
            return all(
                m[f'infersight_agent_relay_items_total{{outcome="relayed",signal="{s}"}}'] >= n
                for s, n in (("traces", 23), ("metrics", 1), ("logs", 1))
            )

        assert wait_for(all_relayed)
        m = metrics(agent)
    finally:
        agent.stop()
    for signal, n in (("traces", 23), ("metrics", 1), ("logs", 1)):
        assert m[f'infersight_agent_relay_items_total{{outcome="accepted",signal="{signal}"}}'] == n
        assert m[f'infersight_agent_relay_items_total{{outcome="relayed",signal="{signal}"}}'] == n
        assert m[f'infersight_agent_relay_items_total{{outcome="failed",signal="{signal}"}}'] == 0
    assert m['infersight_agent_relay_requests_total{outcome="refused_full"}'] == 0
    spans = collector.sql(
        "SELECT name, resource, k8s_node FROM spans WHERE service_name = ? ORDER BY name", [service]
    )
    assert sorted(r[0] for r in spans) == sorted(f"work {i}" for i in range(23))
    for _, resource, node in spans:
        res = json.loads(resource)
        # the sender is this process, on loopback: found as the owner of the socket
        assert res["process.pid"] == os.getpid()
        assert res["k8s.node.name"] == "node-x" == node
        assert res["telemetry.sdk.language"] == "python"
    points = collector.sql(
        "SELECT value, resource FROM metric_points WHERE metric_name = 'relay.test.calls' "
        "AND service_name = ?",
        [service],
    )
    assert [p[0] for p in points] == [5]
    assert json.loads(points[0][1])["k8s.node.name"] == "node-x"
    logs = collector.sql("SELECT body, resource FROM log_records WHERE service_name = ?", [service])
    assert len(logs) == 1
    assert json.loads(logs[0][0]) == "relayed log line"
    assert json.loads(logs[0][1])["process.pid"] == os.getpid()


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    """A procfs where this test process runs in the chatbot pod's container: its cgroup names
    the container, and its descriptor table is the real one (the relay finds its socket)."""
    root = tmp_path / "proc"
    me = root / str(os.getpid())
    me.mkdir(parents=True)
    (me / "cgroup").write_text(
        f"0::/kubepods.slice/kubepods-pod{CHATBOT_UID.replace('-', '_')}.slice/"
        f"cri-containerd-{CHATBOT_CID}.scope\n"
    )
    (me / "fd").symlink_to(f"/proc/{os.getpid()}/fd")
    return root


def _with_pod_ips(ips: dict[str, str]) -> Any:
    original = fake_kube.pod_object

    def pod_object(pod: FakePod) -> dict[str, Any]:
        doc = original(pod)
        if pod.name in ips:
            doc["status"]["podIP"] = ips[pod.name]
            doc["status"]["podIPs"] = [{"ip": ips[pod.name]}]
        return doc

    return pod_object


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    # pods reach the node's agent with their own IP; on loopback, 127.0.0.2 and .3 stand in
    monkeypatch.setattr(
        fake_kube, "pod_object", _with_pod_ips({"web-1": "127.0.0.2", "batch-7": "127.0.0.3"})
    )
    pods = [
        FakePod("chatbot-0", "apps", CHATBOT_UID, "node-x", {"app": CHATBOT_CID}),
        FakePod("web-1", "shop", IP_POD_UID, "node-x", {"web": "b" * 64}),
        FakePod("batch-7", "jobs", "77777777-2222-4333-8444-555566667777", "node-x", {"j": None}),
    ]
    with FakeKube(pods) as k:
        yield k


def _k8s(kube: FakeKube, tmp_path: Path, proc_root: Path) -> dict[str, Any]:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    return {
        "mode": "kubelet",
        "kubelet_url": f"{kube.url}/pods",
        "token_path": str(token),
        "proc_root": str(proc_root),
    }


def _resources(collector: CollectorProcess, service: str) -> list[dict[str, Any]]:
    rows = collector.sql("SELECT resource FROM spans WHERE service_name = ?", [service])
    return [json.loads(r[0]) for r in rows]


def test_kubernetes_attributes_of_the_socket_owner_never_overwrite_the_apps(
    collector: CollectorProcess, kube: FakeKube, tmp_path: Path, proc_root: Path
) -> None:
    agent = relay_agent(collector.otlp_http, k8s=_k8s(kube, tmp_path, proc_root))
    agent.start()
    assert agent.relay is not None
    url = f"http://127.0.0.1:{agent.relay.http_port}/v1/traces"
    try:
        for service, extra in (
            ("k8s-plain", {}),
            ("k8s-own", {"k8s.pod.name": "chatbot-0", "k8s.cluster.name": "prod"}),
            ("k8s-other", {"k8s.pod.name": "elsewhere-1", "k8s.namespace.name": "ops"}),
        ):
            provider = TracerProvider(resource=Resource.create({"service.name": service, **extra}))
            provider.add_span_processor(BatchSpanProcessor(HttpSpans(endpoint=url)))
            with provider.get_tracer("t").start_as_current_span("call"):
                pass
            provider.shutdown()
        assert wait_for(lambda: len(_resources(collector, "k8s-other")) == 1)
    finally:
        agent.stop()
    (plain,) = _resources(collector, "k8s-plain")
    assert plain["k8s.pod.name"] == "chatbot-0"
    assert plain["k8s.namespace.name"] == "apps"
    assert plain["k8s.pod.uid"] == CHATBOT_UID
    assert plain["k8s.container.name"] == "app"
    assert plain["k8s.node.name"] == "node-x"
    assert plain["process.pid"] == os.getpid()
    (own,) = _resources(collector, "k8s-own")
    assert (own["k8s.pod.name"], own["k8s.namespace.name"]) == ("chatbot-0", "apps")
    assert own["k8s.cluster.name"] == "prod"
    (other,) = _resources(collector, "k8s-other")
    # the application names another pod: nothing of ours is mixed into its identity
    assert (other["k8s.pod.name"], other["k8s.namespace.name"]) == ("elsewhere-1", "ops")
    assert "k8s.pod.uid" not in other
    assert "k8s.container.name" not in other


def test_kubernetes_attributes_from_the_senders_pod_ip(
    collector: CollectorProcess, kube: FakeKube, tmp_path: Path, proc_root: Path
) -> None:
    # this process is in no pod here: only the IP the request came from, or the one the
    # resource declares, names the pod
    (proc_root / str(os.getpid()) / "cgroup").write_text("0::/user.slice/session-1.scope\n")
    agent = relay_agent(collector.otlp_http, k8s=_k8s(kube, tmp_path, proc_root))
    agent.start()
    assert agent.relay is not None
    url = f"http://127.0.0.1:{agent.relay.http_port}/v1/traces"
    headers = {"content-type": "application/x-protobuf"}
    try:
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as client:
            body = trace_request(2, service="by-peer-ip").SerializeToString()
            assert client.post(url, content=body, headers=headers).status_code == 200
        declared = trace_request(1, service="by-declared-ip", resource={"k8s.pod.ip": "127.0.0.3"})
        resp = httpx.post(url, content=declared.SerializeToString(), headers=headers)
        assert resp.status_code == 200
        assert wait_for(lambda: len(_resources(collector, "by-declared-ip")) == 1)
    finally:
        agent.stop()
    for res in _resources(collector, "by-peer-ip"):
        assert (res["k8s.pod.name"], res["k8s.namespace.name"]) == ("web-1", "shop")
        assert res["k8s.pod.uid"] == IP_POD_UID
        assert res["k8s.node.name"] == "node-x"
    (res,) = _resources(collector, "by-declared-ip")
    assert (res["k8s.pod.name"], res["k8s.namespace.name"]) == ("batch-7", "jobs")
    # one pod list read serves the resolver and the IP index
    assert all(path == "/pods" for path, _, _ in kube.requests)
