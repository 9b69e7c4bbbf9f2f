"""Container id and pod uid from /proc/<pid>/cgroup, for each runtime and cgroup version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.k8s.cgroup import parse_cgroup_path, parse_proc_cgroup, read_cgroup_info

CID = "3f9a1c0e7b5d4a2f8e6c1b0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
UID = "5b0e3a4c-2f1d-4e6a-9b8c-7d6e5f4a3b2c"
UID_ = UID.replace("-", "_")

V2_CASES = [
    # (runtime label, /proc/<pid>/cgroup text, expected runtime)
    (
        "containerd systemd",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n",
        "containerd",
    ),
    (
        "containerd systemd guaranteed",
        f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        "containerd",
    ),
    (
        "cri-o systemd",
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"crio-{CID}.scope\n",
        "cri-o",
    ),
    (
        "cri-o with a sub-cgroup",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"crio-{CID}.scope/container\n",
        "cri-o",
    ),
    (
        "docker (dockershim) systemd",
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"docker-{CID}.scope\n",
        "docker",
    ),
    ("containerd cgroupfs", f"0::/kubepods/burstable/pod{UID}/{CID}\n", None),
    (
        "kind node (nested kubelet slice)",
        f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        "containerd",
    ),
    (
        "seen from a private cgroup namespace",
        f"0::/../../kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n",
        "containerd",
    ),
]

V1_CASES = [
    (
        "containerd cgroupfs v1",
        f"12:memory:/kubepods/burstable/pod{UID}/{CID}\n"
        f"11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}\n"
        f"1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n",
        None,
    ),
    (
        "containerd systemd v1",
        f"11:devices:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n"
        f"4:cpu,cpuacct:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope\n",
        "containerd",
    ),
    (
        "cri-o systemd v1",
        f"9:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"crio-{CID}.scope\n",
        "cri-o",
    ),
    ("docker cgroupfs v1 (dockershim)", f"10:memory:/kubepods/besteffort/pod{UID}/{CID}\n", None),
    (
        "hybrid: v1 controllers plus an empty unified line",
        f"12:memory:/kubepods/pod{UID}/{CID}\n0::/\n",
        None,
    ),
]


@pytest.mark.parametrize(
    ("label", "text", "runtime"), V2_CASES + V1_CASES, ids=[c[0] for c in V2_CASES + V1_CASES]
)
def test_pod_container_from_every_format(label: str, text: str, runtime: str | None) -> None:
    info = parse_proc_cgroup(text)
    assert info.container_id == CID, label
    assert info.pod_uid == UID, label
    assert info.runtime == runtime, label


@pytest.mark.parametrize(
    "text",
    [
        f"0::/system.slice/docker-{CID}.scope\n",
        f"13:cpuset:/docker/{CID}\n",
        f"0::/machine.slice/libpod-{CID}.scope\n",
    ],
)
def test_plain_containers_without_a_pod(text: str) -> None:
    info = parse_proc_cgroup(text)
    assert info.container_id == CID
    assert info.pod_uid is None


@pytest.mark.parametrize(
    "text",
    [
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        "0::/\n",
        "12:memory:/\n1:name=systemd:/init.scope\n",
        "",
        "garbage without colons\n",
    ],
)
def test_host_processes_have_no_container(text: str) -> None:
    info = parse_proc_cgroup(text)
    assert info.container_id is None
    assert info.pod_uid is None


def test_crio_conmon_is_not_the_container() -> None:
    info = parse_cgroup_path(f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{CID}.scope")
    assert info.container_id is None
    assert info.pod_uid == UID


def test_pod_sandbox_slice_without_container() -> None:
    info = parse_cgroup_path(
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
    )
    assert (info.container_id, info.pod_uid) == (None, UID)


def test_reads_the_proc_file(tmp_path: Path) -> None:
    (tmp_path / "123").mkdir()
    (tmp_path / "123" / "cgroup").write_text(V2_CASES[0][1])
    info = read_cgroup_info(123, tmp_path)
    assert info is not None
    assert info.container_id == CID
    assert read_cgroup_info(999, tmp_path) is None  # process gone


def test_reads_this_process() -> None:
    info = read_cgroup_info(os.getpid())
    assert info is not None  # whatever it holds, reading a live process never fails
