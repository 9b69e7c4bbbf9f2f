"""GPU processes to pods: cgroups, the container resolver, and PodResources device assignment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from agent.gpu.attribution import (
    GpuAttributor,
    PodRef,
    device_assignments,
    normalize_device_id,
)
from agent.gpu.nvml_sampler import NvmlSampler
from agent.gpu.podresources import ListPodResourcesResponse
from agent.gpu.types import GpuProcessSample
from tests.gpu.fake_nvml.scenario import FakeDevice, FakeProc, Scenario

CID_A = "a" * 63 + "1"
CID_B = "b" * 63 + "2"
UID_A = "11111111-2222-3333-4444-555555555555"
UID_B = "66666666-7777-8888-9999-000000000000"


def write_proc(root: Path, pid: int, cgroup: str) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "cgroup").write_text(cgroup)


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    write_proc(
        root,
        100,
        f"0::/kubepods.slice/kubepods-burstable.slice/"
        f"kubepods-burstable-pod{UID_A.replace('-', '_')}.slice/"
        f"cri-containerd-{CID_A}.scope\n",
    )
    write_proc(root, 200, f"12:memory:/kubepods/besteffort/pod{UID_B}/{CID_B}\n")
    write_proc(root, 300, "0::/system.slice/some-daemon.service\n")
    return root


RESOLVER: dict[str, PodRef] = {
    CID_A: PodRef("inference", "vllm-llama-0", "vllm"),
    CID_B: PodRef("batch", "embedder-7f9c", "embed"),
}


def pod_resources_message_class() -> Any:
    """The kubelet PodResources v1 List response, as the agent's real protobuf message class."""
    return ListPodResourcesResponse


LIST_RESPONSE: dict[str, Any] = {
    "pod_resources": [
        {
            "name": "vllm-llama-0",
            "namespace": "inference",
            "containers": [
                {
                    "name": "vllm",
                    "devices": [
                        {"resource_name": "nvidia.com/gpu", "device_ids": ["GPU-aaaa", "GPU-bbbb"]}
                    ],
                },
                {
                    "name": "sidecar",
                    "devices": [{"resource_name": "example.com/nic", "device_ids": ["eth9"]}],
                },
            ],
        },
        {
            "name": "embedder-7f9c",
            "namespace": "batch",
            "containers": [
                {
                    "name": "embed",
                    "devices": [
                        {"resource_name": "nvidia.com/mig-1g.10gb", "device_ids": ["MIG-cccc"]}
                    ],
                }
            ],
        },
        {
            "name": "shared-a",
            "namespace": "dev",
            "containers": [
                {
                    "name": "nb",
                    "devices": [{"resource_name": "nvidia.com/gpu", "device_ids": ["GPU-dddd::0"]}],
                }
            ],
        },
        {
            "name": "shared-b",
            "namespace": "dev",
            "containers": [
                {
                    "name": "nb",
                    "devices": [{"resource_name": "nvidia.com/gpu", "device_ids": ["GPU-dddd::1"]}],
                }
            ],
        },
        {"name": "no-devices", "namespace": "kube-system", "containers": [{"name": "dns"}]},
    ]
}

EXPECTED = {
    "GPU-aaaa": [PodRef("inference", "vllm-llama-0", "vllm")],
    "GPU-bbbb": [PodRef("inference", "vllm-llama-0", "vllm")],
    "MIG-cccc": [PodRef("batch", "embedder-7f9c", "embed")],
    "GPU-dddd": [PodRef("dev", "shared-a", "nb"), PodRef("dev", "shared-b", "nb")],
}


def test_device_assignments_from_every_response_shape() -> None:
    cls = pod_resources_message_class()
    proto = json_format.ParseDict(LIST_RESPONSE, cls())
    camel = json_format.MessageToDict(proto)  # the JSON names: podResources, deviceIds, ...
    assert "podResources" in camel
    for shape in (LIST_RESPONSE, proto, camel):
        assert device_assignments(shape) == EXPECTED


def test_device_ids_by_index_and_replica() -> None:
    assert normalize_device_id("GPU-x::3") == "GPU-x"
    assert normalize_device_id("1", {0: "GPU-a", 1: "GPU-b"}) == "GPU-b"
    assert normalize_device_id("1") == "1"
    response = {
        "podResources": [
            {
                "name": "p",
                "namespace": "n",
                "containers": [
                    {
                        "name": "c",
                        "devices": [{"resourceName": "nvidia.com/gpu", "deviceIds": ["0"]}],
                    }
                ],
            }
        ]
    }
    assert device_assignments(response, index_to_uuid={0: "GPU-zero"}) == {
        "GPU-zero": [PodRef("n", "p", "c")]
    }


def test_pid_to_pod_through_cgroup_and_resolver(proc_root: Path) -> None:
    attributor = GpuAttributor(RESOLVER.get, proc_root=proc_root)
    a = attributor.attribute(100)
    assert (a.container_id, a.pod_uid, a.namespace, a.pod, a.container) == (
        CID_A,
        UID_A,
        "inference",
        "vllm-llama-0",
        "vllm",
    )
    b = attributor.attribute(200)
    assert (b.container_id, b.pod_uid, b.pod) == (CID_B, UID_B, "embedder-7f9c")
    host = attributor.attribute(300)
    assert host.container_id is None
    assert host.pod is None
    gone = attributor.attribute(999)
    assert gone.container_id is None
    assert gone.pod is None


class StaticPodResources:
    def __init__(self, response: Any) -> None:
        self.response = response
        self.calls = 0
        self.fail = False

    def list_pod_resources(self) -> Any:
        self.calls += 1
        if self.fail:
            raise ConnectionError("kubelet socket gone")
        return self.response


def test_pod_resources_fill_in_when_the_process_cannot_be_resolved(proc_root: Path) -> None:
    now = [0.0]
    source = StaticPodResources(LIST_RESPONSE)
    # no resolver, and pid 999 is not in /proc: only the device assignment can tell
    attributor = GpuAttributor(None, source, proc_root=proc_root, clock_s=lambda: now[0])
    who = attributor.attribute(999, "GPU-aaaa")
    assert (who.namespace, who.pod, who.container) == ("inference", "vllm-llama-0", "vllm")
    # the cgroup still gives the container id and pod uid
    with_cgroup = attributor.attribute(100, "MIG-cccc")
    assert with_cgroup.container_id == CID_A
    assert with_cgroup.pod == "embedder-7f9c"
    # a time-sliced GPU held by two pods is not guessed
    assert attributor.attribute(999, "GPU-dddd").pod is None
    assert attributor.pods_for_device("GPU-dddd") == EXPECTED["GPU-dddd"]
    assert source.calls == 1  # cached within its TTL
    now[0] = 60.0
    source.fail = True
    # a failing kubelet keeps the last answer
    assert attributor.attribute(999, "GPU-aaaa").pod == "vllm-llama-0"
    assert attributor.pod_resources_errors == 1


def test_resolver_wins_over_device_assignment(proc_root: Path) -> None:
    attributor = GpuAttributor(RESOLVER.get, StaticPodResources(LIST_RESPONSE), proc_root=proc_root)
    who = attributor.attribute(200, "GPU-aaaa")
    assert who.pod == "embedder-7f9c"


def test_sampler_attributes_processes_of_two_pods_on_one_gpu(
    proc_root: Path,
    use_scenario: Callable[[Scenario], Path],
    make_sampler: Callable[..., NvmlSampler],
) -> None:
    gpu = FakeDevice(
        "GPU-shared",
        procs=[
            FakeProc(100, mem_bytes=30 << 30),
            FakeProc(200, mem_bytes=10 << 30),
            FakeProc(300, mem_bytes=1 << 30),
        ],
    )
    use_scenario(Scenario([gpu]))
    attributor = GpuAttributor(RESOLVER.get, proc_root=proc_root)
    sampler = make_sampler(attributor=attributor.apply)
    assert sampler.open()
    procs = {
        r.pid: r for r in sampler.sample_once(processes=True) if isinstance(r, GpuProcessSample)
    }
    assert (procs[100].k8s_namespace, procs[100].k8s_pod, procs[100].k8s_container) == (
        "inference",
        "vllm-llama-0",
        "vllm",
    )
    assert procs[100].pod_uid == UID_A
    assert procs[100].container_id == CID_A
    assert (procs[200].k8s_namespace, procs[200].k8s_pod) == ("batch", "embedder-7f9c")
    assert procs[300].k8s_pod is None
    assert procs[300].container_id is None
    assert procs[100].mem_used_bytes == 30 << 30
