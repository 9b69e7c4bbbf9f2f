"""Pods in the shape the kubelet's `GET /pods` returns them (a `v1.PodList`, JSON).

Every field a real answer carries that discovery could trip over is there: metadata with uid,
labels, annotations and owner references; spec with node name, containers, images, ports with
names and protocols, resources; status with phase, host and pod IPs, conditions and container
statuses whose `containerID` is `<runtime>://<64 hex>`.
"""

from __future__ import annotations

import uuid
from typing import Any

NODE = "gpu-node-7"
HOST_IP = "10.42.0.17"


def container(
    name: str, image: str, ports: list[tuple[str, int, str]] | None = None, gpus: int = 0
) -> dict[str, Any]:
    """A `v1.Container`; ports are (name, containerPort, protocol)."""
    c: dict[str, Any] = {
        "name": name,
        "image": image,
        "args": ["--port", str(ports[0][1])] if ports else [],
        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }
    if ports:
        c["ports"] = [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports]
    return c


def pod(
    name: str,
    namespace: str,
    pod_ip: str | None,
    containers: list[dict[str, Any]],
    *,
    annotations: dict[str, str] | None = None,
    phase: str = "Running",
    container_ids: dict[str, str] | None = None,
    host_network: bool = False,
) -> dict[str, Any]:
    """A `v1.Pod` as the kubelet reports it; `container_ids` maps container name -> 64 hex."""
    ids = container_ids or {}
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2025-07-21T09:12:03Z"},
            {
                "type": "Ready",
                "status": "True" if phase == "Running" else "False",
                "lastTransitionTime": "2025-07-21T09:14:40Z",
            },
            {
                "type": "PodScheduled",
                "status": "True",
                "lastTransitionTime": "2025-07-21T09:12:01Z",
            },
        ],
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "startTime": "2025-07-21T09:12:03Z",
        "qosClass": "Burstable",
        "containerStatuses": [
            {
                "name": c["name"],
                "state": {"running": {"startedAt": "2025-07-21T09:12:30Z"}},
                "ready": phase == "Running",
                "restartCount": 0,
                "image": c["image"],
                "imageID": c["image"] + "@sha256:" + "ab" * 32,
                "started": phase == "Running",
                **({"containerID": "containerd://" + ids[c["name"]]} if c["name"] in ids else {}),
            }
            for c in containers
        ],
    }
    if pod_ip is not None:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return {
        "metadata": {
            "name": name,
            "generateName": name.rsplit("-", 1)[0] + "-",
            "namespace": namespace,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}/{name}")),
            "resourceVersion": "81231",
            "creationTimestamp": "2025-07-21T09:12:01Z",
            "labels": {"app": name.rsplit("-", 1)[0]},
            "annotations": {
                "kubernetes.io/config.seen": "2025-07-21T09:12:01.512Z",
                "kubernetes.io/config.source": "api",
                **(annotations or {}),
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": name.rsplit("-", 1)[0],
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": containers,
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": NODE,
            "hostNetwork": host_network,
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
        "status": status,
    }


def pod_list(*pods: dict[str, Any]) -> dict[str, Any]:
    """The kubelet's answer: a `PodList` (the kubelet leaves `metadata` empty)."""
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": list(pods)}
