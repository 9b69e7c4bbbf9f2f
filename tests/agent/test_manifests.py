"""The Kubernetes manifests under deploy/kubernetes: every object validates against the
Kubernetes OpenAPI schemas (offline, the schemas shipped by `kubernetes-validate`, strict: no
unknown fields), and the agent's DaemonSet has what eBPF capture and attribution need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import load_config
from tests.conftest import REPO

kubernetes_validate = pytest.importorskip("kubernetes_validate")

MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
K8S_VERSION = "1.33.0"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in _docs(p)}


def test_there_are_manifests() -> None:
    assert any(p.name == "agent-daemonset.yaml" for p in MANIFESTS)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_object_validates_against_the_openapi_schema(path: Path) -> None:
    docs = _docs(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_object_is_rejected() -> None:
    ds = _all()[("DaemonSet", "infersight-agent")]
    broken = yaml.safe_load(yaml.safe_dump(ds))
    broken["spec"]["template"]["spec"]["hostPid"] = True  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_daemonset_has_what_capture_needs() -> None:
    objs = _all()
    pod = objs[("DaemonSet", "infersight-agent")]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    (agent,) = pod["containers"]
    caps = set(agent["securityContext"]["capabilities"]["add"])
    assert {"BPF", "PERFMON", "SYS_ADMIN"} <= caps or agent["securityContext"].get("privileged")
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    hosts = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    for host_path in (
        "/sys/kernel/tracing",
        "/sys/kernel/debug",
        "/lib/modules",
        "/usr/src",
        "/proc",
        "/sys/fs/cgroup",
    ):
        assert host_path in hosts.values(), host_path
    assert {mounts[n] for n, p in hosts.items() if p in ("/lib/modules", "/usr/src")} == {
        "/lib/modules",
        "/usr/src",
    }  # bcc looks for headers at the host's own paths
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    ports = {p["name"]: p for p in agent["ports"]}
    assert ports["metrics"]["containerPort"] == 9464
    assert ports["otlp-grpc"]["hostPort"] == 4317
    assert ports["otlp-http"]["hostPort"] == 4318
    assert pod["serviceAccountName"] == "infersight-agent"


def test_rbac_lets_the_agent_list_pods() -> None:
    objs = _all()
    role = objs[("ClusterRole", "infersight-agent")]
    assert any("pods" in r["resources"] and "list" in r["verbs"] for r in role["rules"])
    binding = objs[("ClusterRoleBinding", "infersight-agent")]
    assert binding["roleRef"]["name"] == "infersight-agent"
    (subject,) = binding["subjects"]
    sa = objs[("ServiceAccount", subject["name"])]
    assert sa["metadata"]["namespace"] == subject["namespace"]


def test_the_shipped_agent_configuration_loads(tmp_path: Path) -> None:
    cm = _all()[("ConfigMap", "infersight-agent")]
    path = tmp_path / "agent.yaml"
    path.write_text(cm["data"]["agent.yaml"])
    cfg = load_config(path, environ={})
    assert cfg.k8s.proc_root == "/host/proc"
    assert cfg.capture.proc_root == "/host/proc"
    assert cfg.agent.content == "off"
    assert cfg.agent.metrics_port == 9464
    ds = _all()[("DaemonSet", "infersight-agent")]
    (agent,) = ds["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in agent["volumeMounts"]}
    assert "/etc/infersight/agent.yaml" in agent["args"]
    assert mounts["config"] == "/etc/infersight"
