"""Kubernetes attributes for the resources of a relayed OTLP request.

Takes in: a parsed `Export{Trace,Metrics,Logs}ServiceRequest`, the TCP peer it came from and the
relay's port, plus the node's means of attribution: `SocketOwners` (peer -> pid), the
`WorkloadResolver` (pid -> container -> pod) and `PodsByIp` (pod IP -> pod).
Gives out: the same request with `k8s.pod.name`, `k8s.namespace.name`, `k8s.pod.uid`,
`k8s.node.name` (and `k8s.container.name`, `process.pid` when the sending process was found)
added to each resource that lacks them, and one `Origin` per resource (host pid and pod), which
node-local pairing compares with the captures.
Where the sender is looked for, in order: the process holding the peer's socket (a sender in the
agent's network namespace), the pod whose IP the peer used, the resource's own `k8s.pod.ip`,
and, for a sender on loopback, the resource's `process.pid`. An attribute the application set
is never overwritten, and when it names another pod (or namespace) than the one found, no pod
attribute is added at all.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.semconv._incubating.attributes import k8s_attributes as k8s
from opentelemetry.semconv._incubating.attributes import process_attributes

from agent.k8s.resolver import Workload, WorkloadResolver
from agent.relay.peers import PodRef, PodsByIp, SocketOwners

K8S_POD_IP = "k8s.pod.ip"
_ENVELOPES = ("resource_spans", "resource_metrics", "resource_logs")


@dataclass(frozen=True, slots=True)
class Peer:
    """The TCP peer of one request and the relay port it reached."""

    ip: str
    port: int
    local_port: int

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.ip.split("%", 1)[0]).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one resource's telemetry came from, as far as the agent knows."""

    pid: int | None = None  # host pid
    pod: str | None = None
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class _Found:
    pid: int | None = None
    namespace: str | None = None
    pod: str | None = None
    pod_uid: str | None = None
    container: str | None = None
    node: str | None = None


def _from_workload(w: Workload, node: str | None) -> _Found:
    return _Found(w.pid, w.namespace, w.pod, w.pod_uid if w.pod else None, w.container, node)


def _from_pod(p: PodRef, node: str | None) -> _Found:
    return _Found(None, p.namespace, p.name, p.uid, None, p.node or node)


class Enricher:
    """Adds the attributes described in the module docstring."""

    def __init__(
        self,
        node_name: str | None,
        owners: SocketOwners | None,
        resolver: WorkloadResolver | None,
        pods_by_ip: PodsByIp | None,
    ) -> None:
        self.node_name = node_name
        self._owners = owners
        self._resolver = resolver
        self._pods_by_ip = pods_by_ip

    def _sender(self, peer: Peer | None) -> _Found | None:
        if peer is None:
            return None
        if self._owners is not None:
            pid = self._owners.pid_of(peer.ip, peer.port, peer.local_port)
            if pid is not None:
                w = self._resolver.resolve(pid) if self._resolver is not None else Workload(pid)
                if w.pod is None and self._pods_by_ip is not None:
                    pod = self._pods_by_ip.pod_of(peer.ip)
                    if pod is not None:
                        return _Found(pid, pod.namespace, pod.name, pod.uid, None, pod.node)
                return _from_workload(w, self.node_name)
        if self._pods_by_ip is not None:
            pod = self._pods_by_ip.pod_of(peer.ip)
            if pod is not None:
                return _from_pod(pod, self.node_name)
        return None

    def enrich(self, request: Any, peer: Peer | None) -> list[Origin]:
        """Add the attributes to every resource of `request` (in place); one `Origin` each."""
        sender = self._sender(peer)
        origins: list[Origin] = []
        for name in _ENVELOPES:
            if request.DESCRIPTOR.fields_by_name.get(name) is None:
                continue
            for envelope in getattr(request, name):
                origins.append(self._resource(envelope.resource, sender, peer))
        return origins

    def _resource(self, resource: Any, sender: _Found | None, peer: Peer | None) -> Origin:
        attrs: dict[str, AnyValue] = {kv.key: kv.value for kv in resource.attributes}
        found = sender
        if found is None or found.pod is None:
            found = self._from_resource(attrs, peer) or found
        if found is None:
            return _origin(attrs, None)
        conflict = any(
            (own := _text(attrs.get(key))) is not None and ours is not None and own != ours
            for key, ours in (
                (k8s.K8S_POD_NAME, found.pod),
                (k8s.K8S_POD_UID, found.pod_uid),
                (k8s.K8S_NAMESPACE_NAME, found.namespace),
            )
        )
        additions: list[tuple[str, str | int | None]] = []
        if not conflict:
            additions += [
                (k8s.K8S_POD_NAME, found.pod),
                (k8s.K8S_NAMESPACE_NAME, found.namespace),
                (k8s.K8S_POD_UID, found.pod_uid),
                (k8s.K8S_CONTAINER_NAME, found.container),
                (k8s.K8S_NODE_NAME, found.node or self.node_name),
            ]
        if sender is not None and sender.pid is not None and found is sender:
            additions.append((process_attributes.PROCESS_PID, sender.pid))
        for key, value in additions:
            if value is None or key in attrs:
                continue
            kv = KeyValue(key=key)
            if isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = value
            resource.attributes.append(kv)
            attrs[key] = kv.value
        return _origin(attrs, found.pid if not conflict else None)

    def _from_resource(self, attrs: dict[str, AnyValue], peer: Peer | None) -> _Found | None:
        pod_ip = _text(attrs.get(K8S_POD_IP))
        if pod_ip and self._pods_by_ip is not None:
            pod = self._pods_by_ip.pod_of(pod_ip)
            if pod is not None:
                return _from_pod(pod, self.node_name)
        pid_value = attrs.get(process_attributes.PROCESS_PID)
        if (
            pid_value is not None
            and pid_value.WhichOneof("value") == "int_value"
            and peer is not None
            and peer.loopback
            and self._resolver is not None
            and pid_value.int_value > 0
        ):
            # a pid the sender reported means a host pid only when it runs beside the agent
            w = self._resolver.resolve(int(pid_value.int_value))
            if w.container_id is not None or w.executable is not None:
                return _from_workload(w, self.node_name)
        return None


def _text(value: AnyValue | None) -> str | None:
    if value is None or value.WhichOneof("value") != "string_value":
        return None
    return str(value.string_value) or None


def _origin(attrs: dict[str, AnyValue], pid: int | None) -> Origin:
    return Origin(pid, _text(attrs.get(k8s.K8S_POD_NAME)), _text(attrs.get(k8s.K8S_NAMESPACE_NAME)))
