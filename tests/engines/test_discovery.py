"""Candidate endpoints: the kubelet's pod list, and listening sockets found through /proc."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.engines.discovery import (
    DEFAULT_PROCESS_PATTERN,
    Endpoint,
    endpoints_from_pod_list,
    listening_sockets,
    local_endpoints,
    merge_endpoints,
    parse_proc_net_tcp,
    process_command_line,
    socket_owners,
)
from agent.k8s.pods import PodIndex
from tests.engines.kubelet_pods import container, pod, pod_list

CID_VLLM = "1f" * 32
CID_SIDECAR = "2e" * 32


def realistic_pods() -> dict[str, object]:
    return pod_list(
        # no annotations: every declared TCP port is a candidate
        pod(
            "vllm-llama-0",
            "inference",
            "10.244.1.12",
            [
                container(
                    "vllm",
                    "vllm/vllm-openai:v0.10.1",
                    [("http", 8000, "TCP"), ("nccl", 29500, "TCP")],
                    gpus=1,
                ),
                container("log-shipper", "fluent/fluent-bit:3.1", [("dns", 53, "UDP")]),
            ],
            container_ids={"vllm": CID_VLLM, "log-shipper": CID_SIDECAR},
        ),
        # annotations pick the port, path and scheme
        pod(
            "tgi-mistral-0",
            "inference",
            "10.244.1.13",
            [
                container(
                    "tgi",
                    "ghcr.io/huggingface/text-generation-inference:3.0.1",
                    [("http", 80, "TCP")],
                    gpus=1,
                ),
                container("metrics-proxy", "example/proxy:1", [("prom", 9000, "TCP")]),
            ],
            annotations={
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9000",
                "prometheus.io/path": "stats/prometheus",
                "prometheus.io/scheme": "https",
            },
        ),
        # opted out
        pod(
            "sglang-qwen-0",
            "inference",
            "10.244.1.14",
            [container("sglang", "lmsysorg/sglang:v0.4.9", [("http", 30000, "TCP")])],
            annotations={"prometheus.io/scrape": "false"},
        ),
        # not running, or no IP yet
        pod(
            "vllm-pending-0",
            "inference",
            None,
            [container("vllm", "vllm/vllm-openai:v0.10.1", [("http", 8000, "TCP")])],
            phase="Pending",
        ),
        pod(
            "done-0",
            "batch",
            "10.244.1.20",
            [container("job", "busybox:1.36", [("http", 8080, "TCP")])],
            phase="Succeeded",
        ),
        # annotation port not declared by any container: a single-container pod owns it
        pod(
            "sglang-phi-0",
            "inference",
            "10.244.1.15",
            [container("sglang", "lmsysorg/sglang:v0.4.9")],
            annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "30000"},
        ),
    )


def test_endpoints_from_a_kubelet_pod_list() -> None:
    found = endpoints_from_pod_list(realistic_pods())
    assert found == [
        Endpoint(
            "10.244.1.12", 8000, "/metrics", "http", "kubelet", "inference", "vllm-llama-0", "vllm"
        ),
        Endpoint(
            "10.244.1.12", 29500, "/metrics", "http", "kubelet", "inference", "vllm-llama-0", "vllm"
        ),
        Endpoint(
            "10.244.1.13",
            9000,
            "/stats/prometheus",
            "https",
            "kubelet",
            "inference",
            "tgi-mistral-0",
            "metrics-proxy",
        ),
        Endpoint(
            "10.244.1.15",
            30000,
            "/metrics",
            "http",
            "kubelet",
            "inference",
            "sglang-phi-0",
            "sglang",
        ),
    ]
    assert found[2].url == "https://10.244.1.13:9000/stats/prometheus"
    assert endpoints_from_pod_list({"kind": "PodList", "items": None}) == []


def test_proc_net_tcp_text() -> None:
    # the kernel's layout: addresses in hex, IPv4 in little-endian, IPv6 as four LE words
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 "
        "       0 771201 1 0000000000000000 100 0 0 10 0\n"
        "   1: 00000000:7530 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 771202 1 0000000000000000 100 0 0 10 0\n"
        "   2: 0100007F:1F40 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000  1000 "
        "       0 771203 1 0000000000000000 20 4 30 10 -1\n"
    )
    tcp6 = (
        "  sl  local_address                         remote_address                        st "
        "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000     0        0 881001 1 0000000000000000 100 "
        "0 0 10 0\n"
        "   1: 0000000000000000FFFF00000100007F:2382 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000     0        0 881002 1 0000000000000000 100 "
        "0 0 10 0\n"
        "   2: B80D0120000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000     0        0 881003 1 0000000000000000 100 "
        "0 0 10 0\n"
    )
    assert [(s.address, s.port, s.inode) for s in parse_proc_net_tcp(tcp)] == [
        ("127.0.0.1", 8000, 771201),
        ("0.0.0.0", 30000, 771202),
    ]  # the ESTABLISHED one is out
    assert [(s.address, s.port, s.inode) for s in parse_proc_net_tcp(tcp6)] == [
        ("::1", 80, 881001),
        ("127.0.0.1", 9090, 881002),
        ("2001:db8::1", 8080, 881003),
    ]


@pytest.fixture(params=["127.0.0.1", "::1"])
def listener(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    host: str = request.param
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((host, 0))
    except OSError as err:
        pytest.skip(f"no {host} on this machine: {err}")
    sock.listen(1)
    try:
        yield sock
    finally:
        sock.close()


def test_a_real_listening_socket_is_found_with_its_process(listener: socket.socket) -> None:
    host, port = listener.getsockname()[:2]
    sockets = [s for s in listening_sockets() if (s.address, s.port) == (host, port)]
    assert len(sockets) == 1, listening_sockets()
    inode = sockets[0].inode
    assert inode == os.fstat(listener.fileno()).st_ino
    assert socket_owners([inode]) == {inode: os.getpid()}

    mine = local_endpoints(process_filter=lambda pid, _cmd: pid == os.getpid())
    assert Endpoint(host, port, source="local", pid=os.getpid()) in mine
    # an owner the filter rejects is not probed
    assert all(ep.port != port for ep in local_endpoints(process_filter=lambda _p, _c: False))
    listener.close()
    assert all(
        ep.port != port
        for ep in local_endpoints(process_filter=lambda pid, _cmd: pid == os.getpid())
    )


def test_wildcard_listeners_are_reached_on_loopback() -> None:
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen(1)
    try:
        port = sock.getsockname()[1]
        mine = local_endpoints(process_filter=lambda pid, _cmd: pid == os.getpid())
        assert Endpoint("127.0.0.1", port, source="local", pid=os.getpid()) in mine
    finally:
        sock.close()


def test_engine_processes_by_command_line() -> None:
    for cmdline in (
        "python3 -m vllm.entrypoints.openai.api_server --model m",
        "/usr/bin/python3 /usr/local/bin/vllm serve Qwen/Qwen2.5-7B-Instruct",
        "python3 -m sglang.launch_server --model-path m --enable-metrics",
        "text-generation-router --port 80 --master-shard-uds-path /tmp/x",
        "/opt/conda/bin/python /opt/conda/bin/text-generation-server serve m",
    ):
        assert DEFAULT_PROCESS_PATTERN.search(cmdline), cmdline
    for cmdline in (
        "/usr/sbin/sshd -D",
        "/usr/bin/containerd",
        "python3 -m http.server",
        "/bin/node_exporter --web.listen-address=:9100",
    ):
        assert not DEFAULT_PROCESS_PATTERN.search(cmdline), cmdline
    own = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")[0].decode()
    assert process_command_line(os.getpid()).startswith(own)
    assert process_command_line(2**22 + 17) == ""


def test_a_local_engine_in_a_pod_is_named_by_its_cgroup(tmp_path: Path) -> None:
    """A synthetic /proc: a host-network vLLM (its socket, fd link, command line and cgroup)
    and an sshd; the pod list names the vLLM container."""
    root = tmp_path / "proc"
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 5001 1 0000000000000000 100 0 0 10 0\n"
        "   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 5002 1 0000000000000000 100 0 0 10 0\n"
    )
    for pid, inode, cmdline, cgroup in (
        (
            4242,
            5001,
            b"python3\0-m\0vllm.entrypoints.openai.api_server\0",
            f"0::/kubepods.slice/kubepods-pod0a0a0a0a_1111_2222_3333_444444444444.slice/"
            f"cri-containerd-{CID_VLLM}.scope\n",
        ),
        (77, 5002, b"/usr/sbin/sshd\0-D\0", "0::/system.slice/ssh.service\n"),
    ):
        (root / str(pid) / "fd").mkdir(parents=True)
        os.symlink(f"socket:[{inode}]", root / str(pid) / "fd" / "7")
        os.symlink("/dev/null", root / str(pid) / "fd" / "0")
        (root / str(pid) / "cmdline").write_bytes(cmdline)
        (root / str(pid) / "cgroup").write_text(cgroup)
    containers = PodIndex.from_pod_list(realistic_pods()).by_container
    assert set(containers) == {CID_VLLM, CID_SIDECAR}
    found = local_endpoints(root, containers=containers)
    assert found == [
        Endpoint(
            "127.0.0.1",
            8000,
            source="local",
            namespace="inference",
            pod="vllm-llama-0",
            container="vllm",
            pid=4242,
        )
    ]


def test_merge_prefers_the_pod_list_and_keeps_the_pid() -> None:
    from_pods = [
        Endpoint("10.0.0.5", 8000, source="kubelet", namespace="ns", pod="p", container="c")
    ]
    local = [
        Endpoint("10.0.0.5", 8000, source="local", pid=99),
        Endpoint("127.0.0.1", 30000, source="local", pid=100),
    ]
    static = [Endpoint("127.0.0.1", 30000, path="/other", source="static")]
    assert merge_endpoints(from_pods, local, static) == [
        Endpoint(
            "10.0.0.5", 8000, source="kubelet", namespace="ns", pod="p", container="c", pid=99
        ),
        Endpoint("127.0.0.1", 30000, source="local", pid=100),
    ]
