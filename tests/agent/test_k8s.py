"""Kubernetes attribution: pid -> cgroup -> container id -> pod, against a local fake kubelet
and API server that answer the real `v1.PodList` shape.

The kubelet source is exercised over HTTPS (self-signed certificate, with and without
verification) and plain HTTP; the API server source through the real `kubernetes` client,
configured by a kubeconfig file written here. Processes are a synthetic procfs and cgroupfs in
a temporary directory (cgroup files in every runtime's format) plus this test's own process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.k8s.pods import (
    ApiServerPodSource,
    KubeletPodSource,
    PodIndex,
    PodSourceError,
    container_id_of,
)
from agent.k8s.resolver import WorkloadResolver, scan_cgroup_ids
from tests.agent.fake_kube import TOKEN, FakeKube, FakePod, pod_list
from tests.support.certs import make_cert

NODE = "node-a"
VLLM_ID = "1" * 64
SIDECAR_ID = "2" * 64
INIT_ID = "3" * 64
OTHER_NODE_ID = "4" * 64
LATE_ID = "5" * 64
VLLM_UID = "0d5f0e5c-aaaa-4bbb-8ccc-111122223333"


def _pods() -> list[FakePod]:
    return [
        FakePod(
            "vllm-0",
            "inference",
            VLLM_UID,
            NODE,
            {"vllm": VLLM_ID, "proxy": SIDECAR_ID},
            init_containers={"setup": INIT_ID},
        ),
        FakePod(
            "crio-app-x1",
            "apps",
            "7e6d5c4b-aaaa-4bbb-8ccc-999988887777",
            NODE,
            {"app": "6" * 64},
            runtime="cri-o",
        ),
        FakePod(
            "elsewhere-1",
            "inference",
            "11111111-2222-4333-8444-555566667777",
            "node-b",
            {"vllm": OTHER_NODE_ID},
        ),
        FakePod(
            "starting-0", "inference", "22222222-3333-4444-8555-666677778888", NODE, {"app": None}
        ),
    ]


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def _kubeconfig(tmp_path: Path, server: str, ca: Path | None = None) -> Path:
    cluster = f"    server: {server}\n"
    cluster += f"    certificate-authority: {ca}\n" if ca else ""
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: test\n  cluster:\n{cluster}"
        "users:\n- name: agent\n  user:\n"
        f"    token: {TOKEN}\n"
        "contexts:\n- name: test\n  context:\n    cluster: test\n    user: agent\n"
        "current-context: test\n"
    )
    return path


# --- the index ------------------------------------------------------------------------------


def test_index_reads_every_container_status_kind() -> None:
    index = PodIndex.from_pod_list(pod_list(_pods()))
    vllm = index.by_container[VLLM_ID]
    assert (vllm.namespace, vllm.name, vllm.uid, vllm.node, vllm.container_name) == (
        "inference",
        "vllm-0",
        VLLM_UID,
        NODE,
        "vllm",
    )
    assert index.by_container[SIDECAR_ID].container_name == "proxy"
    assert index.by_container[INIT_ID].container_name == "setup"
    assert index.by_container["6" * 64].name == "crio-app-x1"
    # a container not started yet has no id; its pod is still known by uid
    assert index.by_uid["22222222-3333-4444-8555-666677778888"].name == "starting-0"
    assert len(index) == 4


def test_container_id_forms() -> None:
    assert container_id_of(f"containerd://{VLLM_ID}") == VLLM_ID
    assert container_id_of(f"cri-o://{VLLM_ID}") == VLLM_ID
    assert container_id_of(f"docker://{VLLM_ID.upper()}") == VLLM_ID
    assert container_id_of("containerd://abc") is None
    assert container_id_of(None) is None


def test_not_a_pod_list_is_an_error() -> None:
    with pytest.raises(PodSourceError):
        PodIndex.from_pod_list({"kind": "Status", "code": 403})


# --- the sources ----------------------------------------------------------------------------


def test_kubelet_over_https_with_token(tmp_path: Path, token_file: Path) -> None:
    cert, key = make_cert(tmp_path)
    with FakeKube(_pods(), cert=cert, key=key) as kube:
        for verify in (False, str(cert)):
            source = KubeletPodSource(f"{kube.url}/pods", token_path=token_file, verify=verify)
            index = PodIndex.from_pod_list(source.pod_list())
            source.close()
            # the kubelet answers for its own node only; the fake answers everything it has
            assert index.by_container[VLLM_ID].name == "vllm-0"
        assert all(path == "/pods" and auth == f"Bearer {TOKEN}" for path, _, auth in kube.requests)
        # verification on, with the system CAs: the self-signed certificate is refused
        strict = KubeletPodSource(f"{kube.url}/pods", token_path=token_file, verify=True)
        with pytest.raises(PodSourceError):
            strict.pod_list()


def test_kubelet_errors_are_reported(tmp_path: Path, token_file: Path) -> None:
    with FakeKube(_pods()) as kube:
        wrong = tmp_path / "wrong"
        wrong.write_text("nope")
        with pytest.raises(PodSourceError, match="401"):
            KubeletPodSource(f"{kube.url}/pods", token_path=wrong).pod_list()
        url = kube.url
    with pytest.raises(PodSourceError):
        KubeletPodSource(f"{url}/pods", token_path=token_file, timeout_s=1).pod_list()


def test_api_server_through_the_kubernetes_client(tmp_path: Path) -> None:
    with FakeKube(_pods()) as kube:
        source = ApiServerPodSource.from_kubeconfig(NODE, str(_kubeconfig(tmp_path, kube.url)))
        doc = source.pod_list()
        index = PodIndex.from_pod_list(doc)
        path, query, auth = kube.requests[-1]
        assert path == "/api/v1/pods"
        assert query["fieldSelector"] == [f"spec.nodeName={NODE}"]
        assert auth == f"Bearer {TOKEN}"
        assert VLLM_ID in index.by_container
        assert OTHER_NODE_ID not in index.by_container  # the field selector did its job
        kube.fail_with = 403
        with pytest.raises(PodSourceError, match="403"):
            source.pod_list()


def test_api_server_over_tls_with_the_kubeconfig_ca(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    with FakeKube(_pods(), cert=cert, key=key) as kube:
        source = ApiServerPodSource.from_kubeconfig(
            NODE, str(_kubeconfig(tmp_path, kube.url, ca=cert))
        )
        assert VLLM_ID in PodIndex.from_pod_list(source.pod_list()).by_container


def test_in_cluster_outside_a_cluster_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(PodSourceError, match="not inside a Kubernetes pod"):
        ApiServerPodSource.in_cluster(NODE)


# --- the resolver ---------------------------------------------------------------------------

CGROUP_FILES = {
    # systemd driver + containerd, cgroup v2
    1001: f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
    f"{VLLM_UID.replace('-', '_')}.slice/cri-containerd-{VLLM_ID}.scope\n",
    # cgroupfs driver, cgroup v1 (the sidecar of the same pod)
    1002: f"12:memory:/kubepods/burstable/pod{VLLM_UID}/{SIDECAR_ID}\n"
    f"11:cpu,cpuacct:/kubepods/burstable/pod{VLLM_UID}/{SIDECAR_ID}\n",
    # CRI-O
    1003: f"0::/kubepods.slice/kubepods-pod7e6d5c4b_aaaa_4bbb_8ccc_999988887777.slice/"
    f"crio-{'6' * 64}.scope\n",
    # a container started after the last pod list was read
    1004: f"0::/kubepods.slice/kubepods-podaaaaaaaa_bbbb_4ccc_8ddd_eeeeeeeeeeee.slice/"
    f"cri-containerd-{LATE_ID}.scope\n",
    # not in any container
    1005: "0::/user.slice/user-0.slice/session-1.scope\n",
}


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    for pid, text in CGROUP_FILES.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(text)
        (root / str(pid) / "exe").symlink_to(
            f"/usr/bin/prog{pid} (deleted)" if pid == 1005 else f"/opt/bin/prog{pid}"
        )
    return root


class CountingSource:
    """A pod list source that counts its reads (wrapping the real kubelet source)."""

    def __init__(self, inner: KubeletPodSource) -> None:
        self.inner = inner
        self.description = inner.description
        self.reads = 0

    def pod_list(self) -> dict[str, object]:
        self.reads += 1
        return dict(self.inner.pod_list())


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_resolver_names_pods_and_refreshes_on_miss(proc_root: Path, token_file: Path) -> None:
    clock = Clock()
    with FakeKube(_pods()) as kube:
        source = CountingSource(KubeletPodSource(f"{kube.url}/pods", token_path=token_file))
        resolver = WorkloadResolver(
            source,
            proc_root=proc_root,
            cgroup_root=proc_root / "none",
            ttl_s=30,
            min_refresh_interval_s=2,
            clock_s=clock,
        )
        w = resolver.resolve(1001, "vllm")
        assert (w.namespace, w.pod, w.container, w.container_id, w.pod_uid) == (
            "inference",
            "vllm-0",
            "vllm",
            VLLM_ID,
            VLLM_UID,
        )
        assert w.executable == "prog1001"
        w = resolver.resolve(1002, "envoy")
        assert (w.pod, w.container) == ("vllm-0", "proxy")
        assert resolver.resolve(1003).pod == "crio-app-x1"
        assert source.reads == 1  # one read served all three

        # a container the list does not know: one more read, rate-limited
        clock.now_s += 2.5
        assert resolver.resolve(1004).pod is None
        assert source.reads == 2
        assert resolver.resolve(1004).pod is None
        assert source.reads == 2  # within min_refresh_interval_s: not asked again
        kube.pods.append(
            FakePod(
                "late-0",
                "inference",
                "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee",
                NODE,
                {"app": LATE_ID},
            )
        )
        clock.now_s += 2.5
        late = resolver.resolve(1004)
        assert (late.pod, late.container) == ("late-0", "app")
        assert source.reads == 3

        # outside any container: no pod, no read of the list
        plain = resolver.resolve(1005, "bash")
        assert (plain.pod, plain.container_id, plain.executable) == (None, None, "prog1005")
        assert source.reads == 3

        # the list is read again once it is older than the TTL; a failing source keeps it
        kube.fail_with = 500
        clock.now_s += 31
        assert resolver.resolve(1001).pod == "vllm-0"
        assert source.reads == 4
        assert resolver.stats.refresh_errors == 1
        assert "500" in (resolver.last_error or "")
        assert resolver.stats.pod_hits >= 5
        assert resolver.stats.pod_misses == 2


def test_exited_process_found_through_its_cgroup_id(tmp_path: Path) -> None:
    cg = tmp_path / "cgroup"
    scope = (
        cg
        / "kubepods.slice"
        / "kubepods-burstable.slice"
        / f"kubepods-burstable-pod{VLLM_UID.replace('-', '_')}.slice"
        / f"cri-containerd-{VLLM_ID}.scope"
    )
    scope.mkdir(parents=True)
    cgroup_id = os.stat(scope).st_ino
    ids = scan_cgroup_ids(cg)
    assert ids[cgroup_id].endswith(f"cri-containerd-{VLLM_ID}.scope")
    index_pods = [FakePod("vllm-0", "inference", VLLM_UID, NODE, {"vllm": VLLM_ID})]

    class Static:
        description = "static"

        def pod_list(self) -> dict[str, object]:
            return pod_list(index_pods)

    resolver = WorkloadResolver(Static(), proc_root=tmp_path / "empty-proc", cgroup_root=cg)
    w = resolver.resolve(31337, "curl", cgroup_id=cgroup_id)
    assert (w.pod, w.container, w.container_id, w.executable) == ("vllm-0", "vllm", VLLM_ID, "curl")


def test_without_kubernetes_process_fields_are_still_there() -> None:
    resolver = WorkloadResolver(None)
    w = resolver.resolve(os.getpid(), "pytest")
    assert w.pid == os.getpid()
    assert w.executable is not None
    assert w.executable.startswith("python")
    assert w.pod is None
    gone = resolver.resolve(2**22 + 12345, "ghost")
    assert (gone.executable, gone.pod) == ("ghost", None)
