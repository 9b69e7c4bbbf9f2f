"""The kubelet PodResources client against a real gRPC server on a unix socket.

The server speaks `/v1.PodResourcesLister/List` with the v1 messages and answers with two pods
holding `nvidia.com/gpu` devices; the client's answer goes through `device_assignments()` and a
`GpuAttributor`. A missing socket is reported as unavailable, once in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.gpu.attribution import GpuAttributor, PodRef, device_assignments
from agent.gpu.podresources import (
    LIST_METHOD,
    SERVICE,
    ContainerDevices,
    ContainerResources,
    KubeletPodResources,
    ListPodResourcesRequest,
    ListPodResourcesResponse,
    PodResources,
    PodResourcesError,
)

GPU_A = "GPU-1f6e2c55-9a7e-4d7a-8f3b-2b1c0d9e8a71"
GPU_B = "GPU-7c0d4b2a-33e1-4c59-a6de-5e8f9b1a2c34"
GPU_C = "GPU-c3a9e0f1-0b6d-4e2a-9d7c-8f1e2a3b4c5d"


def two_pods() -> Any:
    return ListPodResourcesResponse(
        pod_resources=[
            PodResources(
                name="vllm-llama-0",
                namespace="inference",
                containers=[
                    ContainerResources(
                        name="vllm",
                        devices=[
                            ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[GPU_A]),
                        ],
                    ),
                    ContainerResources(name="metrics-sidecar"),
                ],
            ),
            PodResources(
                name="trainer-5d8f7",
                namespace="batch",
                containers=[
                    ContainerResources(
                        name="train",
                        devices=[
                            ContainerDevices(
                                resource_name="nvidia.com/gpu", device_ids=[GPU_B, GPU_C]
                            ),
                            ContainerDevices(resource_name="example.com/nic", device_ids=["eth7"]),
                        ],
                    )
                ],
            ),
        ]
    )


class KubeletStandIn:
    """A gRPC server on a unix socket serving the PodResources v1 List method."""

    def __init__(self, socket_path: Path, response: Any) -> None:
        self.response = response
        self.requests = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))

        def list_pods(request: Any, context: grpc.ServicerContext) -> Any:
            assert isinstance(request, ListPodResourcesRequest)
            self.requests += 1
            return self.response

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "List": grpc.unary_unary_rpc_method_handler(
                    list_pods,
                    request_deserializer=ListPodResourcesRequest.FromString,
                    response_serializer=lambda m: m.SerializeToString(),
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        assert self.server.add_insecure_port(f"unix://{socket_path}") == 1
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "pod-resources" / "kubelet.sock"


@pytest.fixture
def kubelet(socket_path: Path) -> Iterator[KubeletStandIn]:
    socket_path.parent.mkdir()
    server = KubeletStandIn(socket_path, two_pods())
    try:
        yield server
    finally:
        server.stop()


def test_method_path_is_the_kubelets() -> None:
    assert LIST_METHOD == "/v1.PodResourcesLister/List"
    assert ListPodResourcesResponse.DESCRIPTOR.full_name == "v1.ListPodResourcesResponse"


def test_list_over_the_socket_feeds_device_assignments(
    kubelet: KubeletStandIn, socket_path: Path
) -> None:
    client = KubeletPodResources(str(socket_path), timeout_s=5.0)
    try:
        assert client.available()
        response = client.list_pod_resources()
        assert kubelet.requests == 1
        assert client.calls == 1
        assert client.errors == 0
        assignments = device_assignments(response)
    finally:
        client.close()
    assert assignments == {
        GPU_A: [PodRef("inference", "vllm-llama-0", "vllm")],
        GPU_B: [PodRef("batch", "trainer-5d8f7", "train")],
        GPU_C: [PodRef("batch", "trainer-5d8f7", "train")],
    }


def test_attributor_names_the_pod_from_the_kubelet(
    kubelet: KubeletStandIn, socket_path: Path, tmp_path: Path
) -> None:
    proc = tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    # a process whose cgroup names no container (e.g. the host's view was not mounted)
    (proc / "4242" / "cgroup").write_text("0::/\n")
    client = KubeletPodResources(str(socket_path), timeout_s=5.0)
    try:
        attributor = GpuAttributor(None, client, proc_root=proc, pod_resources_ttl_s=0.0)
        who = attributor.attribute(4242, GPU_C)
        assert (who.namespace, who.pod, who.container) == ("batch", "trainer-5d8f7", "train")
        # the kubelet reassigns the device: the next call sees it
        kubelet.response = ListPodResourcesResponse(
            pod_resources=[
                PodResources(
                    name="vllm-qwen-0",
                    namespace="inference",
                    containers=[
                        ContainerResources(
                            name="vllm",
                            devices=[
                                ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[GPU_C])
                            ],
                        )
                    ],
                )
            ]
        )
        assert attributor.attribute(4242, GPU_C).pod == "vllm-qwen-0"
        assert attributor.pod_resources_errors == 0
    finally:
        client.close()


def test_missing_socket_is_unavailable_and_logged_once(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = KubeletPodResources(str(socket_path), timeout_s=1.0)
    reason = client.unavailable_reason()
    assert reason is not None
    assert str(socket_path) in reason
    assert not client.available()
    with caplog.at_level(logging.WARNING, logger="agent.gpu.podresources"):
        for _ in range(3):
            with pytest.raises(PodResourcesError, match="no kubelet PodResources socket"):
                client.list_pod_resources()
    lines = [r for r in caplog.records if r.name == "agent.gpu.podresources"]
    assert len(lines) == 1
    assert str(socket_path) in lines[0].getMessage()
    assert client.errors == 3
    assert client.calls == 0
    # the attributor keeps going without device assignments
    attributor = GpuAttributor(None, client, proc_root=socket_path.parent, pod_resources_ttl_s=0.0)
    assert attributor.pods_for_device(GPU_A) == []
    assert attributor.pod_resources_errors == 1
    client.close()
    client.close()


def test_a_file_that_is_not_a_socket_is_unavailable(socket_path: Path) -> None:
    socket_path.parent.mkdir()
    socket_path.write_text("")
    client = KubeletPodResources(str(socket_path))
    assert client.unavailable_reason() == f"{socket_path} is not a unix socket"
    with pytest.raises(PodResourcesError):
        client.list_pod_resources()


def test_a_server_that_went_away_is_an_error_not_a_hang(socket_path: Path) -> None:
    socket_path.parent.mkdir()
    server = KubeletStandIn(socket_path, two_pods())
    client = KubeletPodResources(str(socket_path), timeout_s=1.0)
    try:
        assert len(client.list_pod_resources().pod_resources) == 2
        server.stop()
        # whether or not the socket file lingers, the call fails within its deadline
        with pytest.raises(PodResourcesError):
            client.list_pod_resources()
        assert client.errors == 1
    finally:
        client.close()
