"""Which pod a GPU process belongs to.

Takes in: GPU process samples (pid, device uuid), `/proc/<pid>/cgroup` through
`agent.k8s.cgroup`, an injectable resolver `container_id -> PodRef`, and optionally the kubelet
PodResources `List` response (from a `PodResourcesSource`) for device assignment.
Gives out: `ProcessAttribution` per pid and attributed copies of `GpuProcessSample`, plus
`device_assignments()`, the pure mapping from a PodResources `List` response to
device id -> containers holding it.

Order of evidence: the process's own cgroup (container id, pod uid) and the resolver's answer for
that container; where that leaves the pod unknown (no resolver, /proc unreadable, container
unknown to the resolver) and exactly one container holds the device according to PodResources,
that container. A device shared by several pods (time-slicing, MPS) is never guessed.
The gRPC call to the kubelet socket is not made here: `PodResourcesSource` is the seam.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.gpu.types import GpuProcessSample
from agent.k8s.cgroup import CgroupInfo, read_cgroup_info

#: the kubelet's PodResources socket (gRPC, v1 API); not dialled by this module
DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
#: extended resources that name GPUs (NVIDIA device plugin, whole GPUs and MIG strategies)
DEFAULT_GPU_RESOURCE_PREFIXES: tuple[str, ...] = ("nvidia.com/",)


@dataclass(frozen=True, slots=True)
class PodRef:
    """A container in a pod."""

    namespace: str
    pod: str
    container: str | None = None


#: resolves a 64-hex container id to its pod; None when the container is unknown
ContainerResolver = Callable[[str], PodRef | None]


class PodResourcesSource(Protocol):
    """Where the PodResources `List` response comes from (the kubelet gRPC socket in a cluster).

    The answer is the `ListPodResourcesResponse` as a protobuf message or as a dict with either
    the proto field names (`pod_resources`, `device_ids`) or their JSON names
    (`podResources`, `deviceIds`).
    """

    def list_pod_resources(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class ProcessAttribution:
    """What is known about the workload behind one pid."""

    container_id: str | None = None
    pod_uid: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None


def _field(obj: Any, snake: str, camel: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(snake, obj.get(camel))
    return getattr(obj, snake, None)


def _items(value: Any) -> Iterable[Any]:
    return value if value is not None else ()


def normalize_device_id(device_id: str, index_to_uuid: Mapping[int, str] | None = None) -> str:
    """A device plugin id as an NVML uuid where possible.

    Time-sliced replicas are advertised as `<uuid>::<replica>`; the index id strategy
    advertises `0`, `1`, ... which `index_to_uuid` (from the sampler's device list) maps.
    """
    base = device_id.split("::", 1)[0]
    if index_to_uuid is not None and base.isdigit():
        return index_to_uuid.get(int(base), base)
    return base


def device_assignments(
    response: Any,
    resource_prefixes: tuple[str, ...] = DEFAULT_GPU_RESOURCE_PREFIXES,
    index_to_uuid: Mapping[int, str] | None = None,
) -> dict[str, list[PodRef]]:
    """Device id (GPU or MIG uuid) -> the containers the kubelet assigned it to."""
    out: dict[str, list[PodRef]] = {}
    for pod in _items(_field(response, "pod_resources", "podResources")):
        pod_name = str(_field(pod, "name", "name") or "")
        namespace = str(_field(pod, "namespace", "namespace") or "")
        for container in _items(_field(pod, "containers", "containers")):
            ref = PodRef(namespace, pod_name, str(_field(container, "name", "name") or "") or None)
            for devices in _items(_field(container, "devices", "devices")):
                resource = str(_field(devices, "resource_name", "resourceName") or "")
                if not resource.startswith(resource_prefixes):
                    continue
                for device_id in _items(_field(devices, "device_ids", "deviceIds")):
                    uuid = normalize_device_id(str(device_id), index_to_uuid)
                    holders = out.setdefault(uuid, [])
                    if ref not in holders:
                        holders.append(ref)
    return out


class GpuAttributor:
    """pid -> container -> pod, with short-lived caches so each process tick stays cheap."""

    def __init__(
        self,
        resolver: ContainerResolver | None = None,
        pod_resources: PodResourcesSource | None = None,
        *,
        proc_root: Path = Path("/proc"),
        cache_ttl_s: float = 30.0,
        pod_resources_ttl_s: float = 10.0,
        resource_prefixes: tuple[str, ...] = DEFAULT_GPU_RESOURCE_PREFIXES,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._pod_resources = pod_resources
        self._proc_root = proc_root
        self._ttl_s = cache_ttl_s
        self._pr_ttl_s = pod_resources_ttl_s
        self._prefixes = resource_prefixes
        self._clock_s = clock_s
        self._lock = threading.Lock()
        self._cgroups: dict[int, tuple[float, CgroupInfo | None]] = {}
        self._assignments: dict[str, list[PodRef]] = {}
        self._assignments_at: float | None = None
        self.index_to_uuid: dict[int, str] = {}
        #: PodResources List calls that failed (the socket missing, the kubelet restarting)
        self.pod_resources_errors = 0

    def _cgroup(self, pid: int) -> CgroupInfo | None:
        now = self._clock_s()
        with self._lock:
            cached = self._cgroups.get(pid)
            if cached is not None and now - cached[0] < self._ttl_s:
                return cached[1]
        info = read_cgroup_info(pid, self._proc_root)
        with self._lock:
            self._cgroups[pid] = (now, info)
            if len(self._cgroups) > 4096:
                # forget pids not seen for a while so a long-lived agent stays bounded
                self._cgroups = {p: v for p, v in self._cgroups.items() if now - v[0] < self._ttl_s}
        return info

    def pods_for_device(self, gpu_uuid: str) -> list[PodRef]:
        """Containers the kubelet assigned this device to (empty without PodResources)."""
        if self._pod_resources is None:
            return []
        now = self._clock_s()
        with self._lock:
            fresh = self._assignments_at is not None and now - self._assignments_at < self._pr_ttl_s
            if fresh:
                return list(self._assignments.get(gpu_uuid, ()))
        try:
            response = self._pod_resources.list_pod_resources()
            assignments = device_assignments(response, self._prefixes, self.index_to_uuid)
        except Exception:
            # keep serving the last answer: a kubelet restart must not blank attribution
            with self._lock:
                self.pod_resources_errors += 1
                self._assignments_at = now
                return list(self._assignments.get(gpu_uuid, ()))
        with self._lock:
            self._assignments = assignments
            self._assignments_at = now
            return list(assignments.get(gpu_uuid, ()))

    def attribute(self, pid: int, gpu_uuid: str | None = None) -> ProcessAttribution:
        """Everything known about `pid`; fields stay None where no evidence exists."""
        info = self._cgroup(pid)
        container_id = info.container_id if info else None
        pod_uid = info.pod_uid if info else None
        ref: PodRef | None = None
        if container_id is not None and self._resolver is not None:
            ref = self._resolver(container_id)
        if ref is None and gpu_uuid is not None:
            holders = self.pods_for_device(gpu_uuid)
            if len(holders) == 1:
                ref = holders[0]
        return ProcessAttribution(
            container_id=container_id,
            pod_uid=pod_uid,
            namespace=ref.namespace if ref else None,
            pod=ref.pod if ref else None,
            container=ref.container if ref else None,
        )

    def apply(self, sample: GpuProcessSample) -> GpuProcessSample:
        """The sample with its container and pod fields filled in."""
        who = self.attribute(sample.pid, sample.gpu_uuid)
        return dataclasses.replace(
            sample,
            container_id=who.container_id,
            pod_uid=who.pod_uid,
            k8s_namespace=who.namespace,
            k8s_pod=who.pod,
            k8s_container=who.container,
        )
