"""A local stand-in for the kubelet's `/pods` and the API server's pod list, in their real shapes.

`pod_list(node, pods)` builds a `v1.PodList` document the way both answer it (full pod objects:
metadata with uid, labels and owner references; spec with containers and nodeName; status with
phase, conditions, IPs and container statuses whose `containerID` is `<runtime>://<64 hex>`).
`FakeKube` serves it on 127.0.0.1 (plain HTTP or TLS) at `GET /pods` (kubelet) and
`GET /api/v1/pods` (API server, honouring `fieldSelector=spec.nodeName=<node>`), checks the
bearer token, and records every request so tests can see what the agent asked.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "test-service-account-token"


@dataclass
class FakePod:
    """One pod with its containers: name -> container id (None: not started yet)."""

    name: str
    namespace: str
    uid: str
    node: str
    containers: dict[str, str | None]
    runtime: str = "containerd"
    init_containers: dict[str, str | None] = field(default_factory=dict)


def _status(name: str, cid: str | None, runtime: str, image: str) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": name,
        "state": {"running": {"startedAt": "2026-11-20T09:00:00Z"}}
        if cid
        else {"waiting": {"reason": "ContainerCreating"}},
        "lastState": {},
        "ready": cid is not None,
        "restartCount": 0,
        "image": image,
        "imageID": "",
        "started": cid is not None,
    }
    if cid:
        status["imageID"] = f"{image}@sha256:{'b' * 64}"
        status["containerID"] = f"{runtime}://{cid}"
    return status


def pod_object(pod: FakePod) -> dict[str, Any]:
    """A pod as the API returns it."""
    image = "docker.io/vllm/vllm-openai:v0.6.3"
    return {
        "metadata": {
            "name": pod.name,
            "generateName": pod.name.rsplit("-", 1)[0] + "-",
            "namespace": pod.namespace,
            "uid": pod.uid,
            "resourceVersion": "48213",
            "creationTimestamp": "2026-11-20T08:59:58Z",
            "labels": {"app": pod.name.rsplit("-", 1)[0], "pod-template-hash": "7d9f8c"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": pod.name.rsplit("-", 1)[0] + "-7d9f8c",
                    "uid": "9a2c1e44-0000-4000-8000-000000000001",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "volumes": [
                {
                    "name": "kube-api-access-x1",
                    "projected": {
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
                        ]
                    },
                }
            ],
            "initContainers": [
                {"name": n, "image": "busybox:1.36", "resources": {}} for n in pod.init_containers
            ],
            "containers": [
                {
                    "name": n,
                    "image": image,
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    "ports": [{"containerPort": 8000, "protocol": "TCP"}],
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
                for n in pod.containers
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": pod.node,
            "schedulerName": "default-scheduler",
            "priority": 0,
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": "2026-11-20T09:00:05Z",
                }
            ],
            "hostIP": "10.0.0.5",
            "hostIPs": [{"ip": "10.0.0.5"}],
            "podIP": "10.244.1.7",
            "podIPs": [{"ip": "10.244.1.7"}],
            "startTime": "2026-11-20T08:59:58Z",
            "initContainerStatuses": [
                _status(n, c, pod.runtime, "busybox:1.36") for n, c in pod.init_containers.items()
            ],
            "containerStatuses": [
                _status(n, c, pod.runtime, image) for n, c in pod.containers.items()
            ],
            "qosClass": "Burstable",
        },
    }


def pod_list(pods: list[FakePod], resource_version: str | None = None) -> dict[str, Any]:
    """A `v1.PodList` (the kubelet leaves `metadata` empty; the API server sets a version)."""
    meta: dict[str, Any] = {"resourceVersion": resource_version} if resource_version else {}
    return {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": meta,
        "items": [pod_object(p) for p in pods],
    }


class FakeKube:
    """Serves the pod lists; `pods` may be changed while it runs."""

    def __init__(
        self, pods: list[FakePod], *, cert: Path | None = None, key: Path | None = None
    ) -> None:
        self.pods = list(pods)
        self.requests: list[tuple[str, dict[str, list[str]], str | None]] = []
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.tls = cert is not None
        if cert is not None and key is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FakeKube:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        kube = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                auth = self.headers.get("Authorization")
                with kube._lock:
                    kube.requests.append((parts.path, query, auth))
                    pods = list(kube.pods)
                    fail = kube.fail_with
                if fail is not None:
                    return self._send(
                        fail,
                        {
                            "kind": "Status",
                            "status": "Failure",
                            "code": fail,
                            "message": "injected failure",
                        },
                    )
                if auth != f"Bearer {TOKEN}":
                    return self._send(
                        401,
                        {
                            "kind": "Status",
                            "status": "Failure",
                            "message": "Unauthorized",
                            "reason": "Unauthorized",
                            "code": 401,
                        },
                    )
                if parts.path == "/pods":
                    return self._send(200, pod_list(pods))
                if parts.path == "/api/v1/pods":
                    selector = query.get("fieldSelector", [""])[0]
                    if selector.startswith("spec.nodeName="):
                        node = selector.split("=", 1)[1]
                        pods = [p for p in pods if p.node == node]
                    return self._send(200, pod_list(pods, "48999"))
                return self._send(404, {"kind": "Status", "code": 404})

            def _send(self, status: int, doc: dict[str, Any]) -> None:
                raw = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler
