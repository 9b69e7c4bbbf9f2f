"""The pods of this node, indexed by container id and pod uid, and where the list comes from.

Takes in: a Kubernetes `v1.PodList` as JSON (the kubelet's `/pods` answer and the API server's
`GET /api/v1/pods?fieldSelector=spec.nodeName=<node>` answer have the same shape).
Gives out: `PodIndex` (container id -> `PodInfo`, pod uid -> `PodInfo` without a container) and
two sources of the list: `KubeletPodSource` (HTTPS to the kubelet with the service-account token,
or its read-only HTTP port) and `ApiServerPodSource` (the `kubernetes` client, one node's pods).
Sources raise `PodSourceError` when they cannot answer; they never guess. Does not cache: the
resolver in `agent.k8s.resolver` decides when to ask again.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import httpx

DEFAULT_TOKEN_PATH: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
DEFAULT_CA_PATH: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
_CONTAINER_ID: Final = re.compile(r"^(?:[a-z0-9.-]+://)?([0-9a-f]{64})$")
_STATUS_LISTS: Final = ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses")


class PodSourceError(RuntimeError):
    """The pod list could not be read (network, authorization, a body that is not a list)."""


@dataclass(frozen=True, slots=True)
class PodInfo:
    """One container of one pod (container fields are None for a pod-level answer)."""

    namespace: str
    name: str
    uid: str | None = None
    node: str | None = None
    container_name: str | None = None
    container_id: str | None = None


def container_id_of(value: object) -> str | None:
    """The bare 64-hex id from a status `containerID` (`containerd://<id>`, `cri-o://<id>`)."""
    if not isinstance(value, str):
        return None
    match = _CONTAINER_ID.match(value.strip().lower())
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class PodIndex:
    """Lookups over one pod list."""

    by_container: Mapping[str, PodInfo]
    by_uid: Mapping[str, PodInfo]

    @classmethod
    def empty(cls) -> PodIndex:
        return cls({}, {})

    @classmethod
    def from_pod_list(cls, doc: Mapping[str, Any]) -> PodIndex:
        """Index a `v1.PodList` JSON document; items that lack a name or namespace are skipped."""
        items = doc.get("items")
        if not isinstance(items, list):
            raise PodSourceError("the answer is not a PodList (no items array)")
        by_container: dict[str, PodInfo] = {}
        by_uid: dict[str, PodInfo] = {}
        for pod in items:
            for info in _pod_entries(pod):
                if info.container_id is None:
                    if info.uid:
                        by_uid[info.uid] = info
                else:
                    by_container[info.container_id] = info
        return cls(by_container, by_uid)

    def __len__(self) -> int:
        return len(self.by_uid)


def _pod_entries(pod: object) -> Iterable[PodInfo]:
    if not isinstance(pod, Mapping):
        return
    meta = pod.get("metadata")
    if not isinstance(meta, Mapping):
        return
    name, namespace, uid = meta.get("name"), meta.get("namespace"), meta.get("uid")
    if not isinstance(name, str) or not isinstance(namespace, str):
        return
    uid = uid if isinstance(uid, str) and uid else None
    spec = pod.get("spec")
    node = spec.get("nodeName") if isinstance(spec, Mapping) else None
    node = node if isinstance(node, str) else None
    yield PodInfo(namespace, name, uid, node)
    status = pod.get("status")
    if not isinstance(status, Mapping):
        return
    for key in _STATUS_LISTS:
        statuses = status.get(key)
        if not isinstance(statuses, list):
            continue
        for cs in statuses:
            if not isinstance(cs, Mapping):
                continue
            cid = container_id_of(cs.get("containerID"))
            cname = cs.get("name")
            if cid is not None:
                yield PodInfo(
                    namespace, name, uid, node, cname if isinstance(cname, str) else None, cid
                )


class PodListSource(Protocol):
    """Anything that can read this node's pod list."""

    description: str

    def pod_list(self) -> Mapping[str, Any]:
        """The `v1.PodList` JSON; raises `PodSourceError` when it cannot."""
        ...


class KubeletPodSource:
    """The kubelet's `/pods` endpoint (needs `nodes/proxy` get for the service account)."""

    def __init__(
        self,
        url: str,
        *,
        token_path: Path | None = DEFAULT_TOKEN_PATH,
        verify: bool | str = True,
        timeout_s: float = 3.0,
    ) -> None:
        """`url`: `https://<node>:10250/pods` or `http://<node>:10255/pods`; `verify`: True,
        False (the kubelet's serving certificate is often self-signed) or a CA bundle path."""
        self.url = url
        self.description = f"kubelet {url}"
        self._token_path = token_path
        tls: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self._client = httpx.Client(verify=tls, timeout=timeout_s)

    def _headers(self) -> dict[str, str]:
        if self._token_path is None:
            return {}
        try:
            # read every time: projected service-account tokens rotate on disk
            token = self._token_path.read_text().strip()
        except OSError:
            return {}
        return {"Authorization": f"Bearer {token}"} if token else {}

    def pod_list(self) -> Mapping[str, Any]:
        try:
            resp = self._client.get(self.url, headers=self._headers())
        except httpx.HTTPError as exc:
            raise PodSourceError(f"{self.description}: {exc}") from exc
        if resp.status_code != 200:
            raise PodSourceError(f"{self.description}: HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError as exc:
            raise PodSourceError(f"{self.description}: the answer is not JSON") from exc
        if not isinstance(body, dict):
            raise PodSourceError(f"{self.description}: the answer is not a JSON object")
        return body

    def close(self) -> None:
        self._client.close()


class ApiServerPodSource:
    """The API server's pod list for one node, through the `kubernetes` client."""

    def __init__(self, node_name: str, configuration: Any, *, timeout_s: float = 5.0) -> None:
        """`configuration`: a `kubernetes.client.Configuration` (`in_cluster`,
        `from_kubeconfig`, or one built by hand)."""
        from kubernetes import client

        self.node_name = node_name
        self.description = f"API server {configuration.host} (node {node_name})"
        self._timeout_s = timeout_s
        self._api = client.CoreV1Api(client.ApiClient(configuration))

    @classmethod
    def in_cluster(cls, node_name: str) -> ApiServerPodSource:
        """From the pod's service account (`KUBERNETES_SERVICE_HOST` and the mounted token)."""
        from kubernetes import client, config

        conf = client.Configuration()
        loader: Any = config.load_incluster_config  # untyped in the client
        try:
            loader(client_configuration=conf)
        except config.ConfigException as exc:
            raise PodSourceError(f"not inside a Kubernetes pod: {exc}") from exc
        return cls(node_name, conf)

    @classmethod
    def from_kubeconfig(cls, node_name: str, path: str | None = None) -> ApiServerPodSource:
        """From a kubeconfig file (`$KUBECONFIG` or `~/.kube/config` when `path` is None)."""
        from kubernetes import client, config

        conf = client.Configuration()
        loader: Any = config.load_kube_config  # untyped in the client
        try:
            loader(config_file=path, client_configuration=conf)
        except (config.ConfigException, OSError, TypeError) as exc:
            raise PodSourceError(f"cannot load kubeconfig {path or ''}: {exc}") from exc
        return cls(node_name, conf)

    def pod_list(self) -> Mapping[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            # The raw JSON, not the generated model objects: deserializing a large pod list into
            # them costs far more than the request, and the index reads the JSON shape anyway.
            resp: Any = self._api.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={self.node_name}",
                _preload_content=False,
                _request_timeout=self._timeout_s,
            )
            raw = resp.data
        except ApiException as exc:
            raise PodSourceError(f"{self.description}: HTTP {exc.status} {exc.reason}") from exc
        except Exception as exc:  # urllib3 raises its own family for network failures
            raise PodSourceError(f"{self.description}: {exc}") from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise PodSourceError(f"{self.description}: the answer is not JSON") from exc
        if not isinstance(body, dict):
            raise PodSourceError(f"{self.description}: the answer is not a JSON object")
        return body
