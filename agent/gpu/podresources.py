"""The kubelet's PodResources v1 API: which container holds which device.

Takes in: the path of the kubelet's PodResources unix socket
(`/var/lib/kubelet/pod-resources/kubelet.sock` by default, mounted from the host).
Gives out: the v1 protobuf message classes (`ListPodResourcesRequest`,
`ListPodResourcesResponse` and the messages inside it, built from a descriptor at import, so no
generated code is needed), the method path `/v1.PodResourcesLister/List`, and
`KubeletPodResources`, a `PodResourcesSource` for `agent.gpu.attribution.GpuAttributor` whose
`list_pod_resources()` makes one unary gRPC call over the socket and returns the response
message (which `device_assignments()` reads).
Must not: retry or block for long (one call with a short deadline; the attributor keeps its
last answer when a call fails), nor log more than one line per outage of the socket.
The descriptor carries the fields this agent reads with the kubelet's field numbers; the
fields it does not declare (topology, CPU ids, memory, dynamic resources) are skipped by the
protobuf parser as unknown fields.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from typing import Any, Final

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from agent.gpu.attribution import DEFAULT_POD_RESOURCES_SOCKET

log = logging.getLogger(__name__)

PACKAGE: Final = "v1"
SERVICE: Final = f"{PACKAGE}.PodResourcesLister"
LIST_METHOD: Final = f"/{SERVICE}/List"
#: a node with hundreds of pods answers with more than gRPC's default 4 MiB receive limit
MAX_RESPONSE_BYTES: Final = 32 << 20

_Field = tuple[str, int, int, int, str]


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="infersight/podresources/v1/api.proto", package=PACKAGE, syntax="proto3"
    )
    fd = descriptor_pb2.FieldDescriptorProto
    rep, opt = fd.LABEL_REPEATED, fd.LABEL_OPTIONAL
    text, msg = fd.TYPE_STRING, fd.TYPE_MESSAGE

    def add(name: str, fields: list[_Field]) -> None:
        message = fdp.message_type.add(name=name)
        for field_name, number, label, kind, type_name in fields:
            f = message.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name:
                f.type_name = f".{PACKAGE}.{type_name}"

    add("ListPodResourcesRequest", [])
    add("ContainerDevices", [("resource_name", 1, opt, text, ""), ("device_ids", 2, rep, text, "")])
    add(
        "ContainerResources",
        [("name", 1, opt, text, ""), ("devices", 2, rep, msg, "ContainerDevices")],
    )
    add(
        "PodResources",
        [
            ("name", 1, opt, text, ""),
            ("namespace", 2, opt, text, ""),
            ("containers", 3, rep, msg, "ContainerResources"),
        ],
    )
    add("ListPodResourcesResponse", [("pod_resources", 1, rep, msg, "PodResources")])
    service = fdp.service.add(name="PodResourcesLister")
    service.method.add(
        name="List",
        input_type=f".{PACKAGE}.ListPodResourcesRequest",
        output_type=f".{PACKAGE}.ListPodResourcesResponse",
    )
    return fdp


# a pool of our own: the names must not collide with anything else loaded in the process
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def message_class(name: str) -> Any:
    """The generated class of one v1 message (`ListPodResourcesResponse`, `PodResources`, ...)."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


ListPodResourcesRequest: Any = message_class("ListPodResourcesRequest")
ListPodResourcesResponse: Any = message_class("ListPodResourcesResponse")
PodResources: Any = message_class("PodResources")
ContainerResources: Any = message_class("ContainerResources")
ContainerDevices: Any = message_class("ContainerDevices")


class PodResourcesError(Exception):
    """The kubelet's PodResources socket is missing or the call failed."""


def socket_problem(path: str) -> str | None:
    """Why `path` cannot be dialled (None when it is a unix socket)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return (
            f"no kubelet PodResources socket at {path}: mount the host's "
            "/var/lib/kubelet/pod-resources into the agent (or set gpu.pod_resources_socket)"
        )
    except OSError as exc:
        return f"kubelet PodResources socket {path}: {exc.strerror or exc}"
    if not stat.S_ISSOCK(mode):
        return f"{path} is not a unix socket"
    return None


class KubeletPodResources:
    """`PodResourcesSource` over the kubelet's unix socket; `close()` it (safe twice)."""

    def __init__(self, socket_path: str = DEFAULT_POD_RESOURCES_SOCKET, *, timeout_s: float = 2.0):
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._list: Any = None
        self._reported: str | None = None
        self._closed = False
        #: calls that answered / failed
        self.calls = 0
        self.errors = 0

    def unavailable_reason(self) -> str | None:
        """Why the socket cannot be used now (None when it is there); never logs."""
        return socket_problem(self.socket_path)

    def available(self) -> bool:
        return self.unavailable_reason() is None

    def _stub(self) -> Any:
        with self._lock:
            if self._closed:
                raise PodResourcesError("the PodResources client is closed")
            if self._channel is None:
                self._channel = grpc.insecure_channel(
                    f"unix://{os.path.abspath(self.socket_path)}",
                    options=[("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)],
                )
                self._list = self._channel.unary_unary(
                    LIST_METHOD,
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=ListPodResourcesResponse.FromString,
                )
            return self._list

    def _fail(self, reason: str) -> PodResourcesError:
        self.errors += 1
        # one line per outage: the attributor asks every few seconds
        if self._reported != reason:
            log.warning("GPU device attribution: %s", reason)
            self._reported = reason
        return PodResourcesError(reason)

    def list_pod_resources(self) -> Any:
        """The kubelet's `ListPodResourcesResponse`; raises `PodResourcesError`."""
        problem = self.unavailable_reason()
        if problem is not None:
            raise self._fail(problem)
        call = self._stub()
        try:
            response = call(ListPodResourcesRequest(), timeout=self.timeout_s)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            detail = err.details() if isinstance(err, grpc.Call) else str(err)
            name = code.name if code is not None else "error"
            raise self._fail(f"PodResources List on {self.socket_path}: {name} {detail}") from err
        self.calls += 1
        if self._reported is not None:
            log.info("GPU device attribution: PodResources on %s answers again", self.socket_path)
            self._reported = None
        return response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
