"""Finding who sent an export: procfs socket tables in both address families, the real owner
of a real loopback connection, and pod IPs that cannot name one pod."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from agent.relay.grpc_receiver import parse_peer
from agent.relay.peers import SocketOwners, _proc_net_addr, index_by_ip
from tests.agent.fake_kube import FakePod, pod_list


def test_procfs_addresses() -> None:
    assert _proc_net_addr("0100007F:1F90") == ("127.0.0.1", 8080)
    assert _proc_net_addr("00000000000000000000000001000000:0050") == ("::1", 80)
    assert _proc_net_addr("0000000000000000FFFF00000100007F:0050") == ("127.0.0.1", 80)
    assert _proc_net_addr("zz:1") is None


def test_grpc_peer_strings() -> None:
    peer = parse_peer("ipv4:127.0.0.1:5000", 4317)
    assert peer is not None
    assert (peer.ip, peer.port, peer.local_port, peer.loopback) == ("127.0.0.1", 5000, 4317, True)
    v6 = parse_peer("ipv6:[::ffff:10.1.2.3]:6000", 4317)
    assert v6 is not None
    assert (v6.ip, v6.loopback) == ("10.1.2.3", False)
    assert parse_peer("unix:/tmp/sock", 4317) is None


def test_the_owner_of_a_real_loopback_connection(tmp_path: Path) -> None:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as server:
            server.bind((host, 0))
            server.listen()
            with socket.create_connection((host, server.getsockname()[1])) as client:
                accepted, _ = server.accept()
                with accepted:
                    ip, port = client.getsockname()[:2]
                    owners = SocketOwners()
                    assert owners.pid_of(ip, port, server.getsockname()[1]) == os.getpid()
                    # a peer nobody here holds
                    assert owners.pid_of(ip, 1, server.getsockname()[1]) is None
    # a procfs without descriptor tables finds the socket but no owner
    assert SocketOwners(proc_root=tmp_path).pid_of("127.0.0.1", 1, 2) is None


def test_pod_ips_that_name_no_single_pod() -> None:
    doc = pod_list(
        [
            FakePod("a-1", "ns", "u1", "n", {"c": None}),
            FakePod("b-1", "ns", "u2", "n", {"c": None}),
            FakePod("host-1", "kube-system", "u3", "n", {"c": None}),
        ]
    )
    items = doc["items"]
    items[0]["status"]["podIP"], items[0]["status"]["podIPs"] = "10.0.0.1", [{"ip": "10.0.0.1"}]
    items[1]["status"]["podIPs"] = [{"ip": "10.0.0.1"}, {"ip": "fd00::2"}]
    items[1]["status"]["podIP"] = "10.0.0.1"
    items[2]["spec"]["hostNetwork"] = True
    items[2]["status"]["podIP"] = "10.0.0.5"
    index = index_by_ip(doc)
    assert "10.0.0.1" not in index  # held by two pods
    assert index["fd00::2"].name == "b-1"
    assert "10.0.0.5" not in index  # the node's own address
