"""Where inference engines might serve metrics on this node: candidate endpoints.

Takes in: the kubelet's pod list (the JSON of `GET /pods`, a `v1.PodList`), and `/proc`
(`/proc/net/tcp`, `/proc/net/tcp6`, `/proc/<pid>/fd`, `/proc/<pid>/cmdline`, `/proc/<pid>/cgroup`).
Gives out: `Endpoint`s to probe. From pods: every running pod's declared TCP container ports
at its pod IP, narrowed by the `prometheus.io/scrape`, `prometheus.io/port`, `prometheus.io/path`
and `prometheus.io/scheme` annotations where present. From the local network namespace: every
listening TCP socket, with the process that owns it (socket inode -> pid through the fd links)
and, through that process's cgroup and the pod list's container ids (`agent.k8s.pods`), its
pod. `/proc/net/tcp*` shows the sockets
of the reader's network namespace: with `hostNetwork` that is the node's, which covers engines
run outside Kubernetes and host-network pods; pods with their own network are found through
the pod list.
Pure parsing plus file reads; nothing here opens a network connection.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from agent.k8s.cgroup import read_cgroup_info
from agent.k8s.pods import PodInfo

log = logging.getLogger(__name__)

ANNOTATION_SCRAPE: Final = "prometheus.io/scrape"
ANNOTATION_PORT: Final = "prometheus.io/port"
ANNOTATION_PATH: Final = "prometheus.io/path"
ANNOTATION_SCHEME: Final = "prometheus.io/scheme"

_TCP_LISTEN: Final = "0A"

#: command lines of the engines' server processes
DEFAULT_PROCESS_PATTERN: Final = re.compile(
    r"vllm|sglang|text-generation-(?:router|launcher|server)|text_generation_server"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A URL that may serve an engine's metrics, and what is known about who serves it."""

    host: str
    port: int
    path: str = "/metrics"
    scheme: str = "http"
    #: kubelet | local
    source: str = "local"
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None
    pid: int | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)


# ---- the kubelet pod list ----


def _port_number(value: Any) -> int | None:
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def endpoints_from_pod_list(pod_list: Mapping[str, Any]) -> list[Endpoint]:
    """Candidate endpoints of the running pods in a kubelet `/pods` answer."""
    out: list[Endpoint] = []
    for pod in pod_list.get("items") or ():
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if status.get("phase") != "Running" or not ip:
            continue
        annotations = meta.get("annotations") or {}
        scrape = str(annotations.get(ANNOTATION_SCRAPE, "")).strip().lower()
        if scrape == "false":
            continue
        path = str(annotations.get(ANNOTATION_PATH) or "/metrics")
        if not path.startswith("/"):
            path = "/" + path
        scheme = str(annotations.get(ANNOTATION_SCHEME) or "http").lower()
        if scheme not in ("http", "https"):
            scheme = "http"
        ports: list[tuple[int, str | None]] = []
        containers = spec.get("containers") or []
        for c in containers:
            for p in c.get("ports") or ():
                number = _port_number(p.get("containerPort"))
                if number is not None and str(p.get("protocol", "TCP")).upper() == "TCP":
                    ports.append((number, c.get("name")))
        wanted = _port_number(annotations.get(ANNOTATION_PORT))
        if wanted is not None:
            owners = [name for number, name in ports if number == wanted]
            only = containers[0].get("name") if len(containers) == 1 else None
            ports = [(wanted, owners[0] if owners else only)]
        seen: set[int] = set()
        for number, container in ports:
            if number in seen:
                continue
            seen.add(number)
            out.append(
                Endpoint(
                    host=str(ip),
                    port=number,
                    path=path,
                    scheme=scheme,
                    source="kubelet",
                    namespace=meta.get("namespace"),
                    pod=meta.get("name"),
                    container=container,
                )
            )
    return out


# ---- local listening sockets ----


@dataclass(frozen=True, slots=True)
class ListeningSocket:
    address: str
    port: int
    inode: int


def _hex_address(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # IPv6: four 32-bit words, each in the kernel's (little-endian) byte order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)


def parse_proc_net_tcp(text: str) -> list[ListeningSocket]:
    """Listening sockets in the text of `/proc/net/tcp` or `/proc/net/tcp6`."""
    out: list[ListeningSocket] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _TCP_LISTEN:
            continue
        try:
            addr_hex, port_hex = fields[1].split(":")
            out.append(ListeningSocket(_hex_address(addr_hex), int(port_hex, 16), int(fields[9])))
        except ValueError:
            continue
    return out


def listening_sockets(proc_root: Path = Path("/proc")) -> list[ListeningSocket]:
    """TCP listening sockets of this network namespace, IPv4 and IPv6."""
    out: list[ListeningSocket] = []
    for name in ("tcp", "tcp6"):
        try:
            out.extend(parse_proc_net_tcp((proc_root / "net" / name).read_text()))
        except OSError:
            continue
    return out


def socket_owners(inodes: Iterable[int], proc_root: Path = Path("/proc")) -> dict[int, int]:
    """Socket inode -> the pid of a process holding it, from the `/proc/<pid>/fd` links."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, int] = {}
    if not wanted:
        return found
    try:
        pids = [int(e) for e in os.listdir(proc_root) if e.isdigit()]
    except OSError:
        return found
    for pid in sorted(pids):
        fd_dir = proc_root / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and inode not in found:
                found[inode] = pid
        if len(found) == len(wanted):
            break
    return found


def process_command_line(pid: int, proc_root: Path = Path("/proc")) -> str:
    """The command line of a process with spaces between arguments ('' when unreadable)."""
    try:
        raw = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def _connect_address(address: str) -> str:
    # a wildcard listener is reached on loopback, in the family it listens in
    if address == "0.0.0.0":
        return "127.0.0.1"
    if address == "::":
        return "::1"
    return address


def local_endpoints(
    proc_root: Path = Path("/proc"),
    *,
    process_filter: Callable[[int, str], bool] | None = None,
    containers: Mapping[str, PodInfo] | None = None,
) -> list[Endpoint]:
    """Listening sockets of engine processes in this network namespace, as endpoints.

    `process_filter(pid, command_line)` decides which owners are worth probing (default: the
    command line matches `DEFAULT_PROCESS_PATTERN`); sockets whose owner cannot be found are
    left out. `containers` (container id -> pod, `agent.k8s.pods.PodIndex.by_container`) names
    the pod of an owner that runs in a container.
    """
    accept = process_filter or (
        lambda _pid, cmdline: DEFAULT_PROCESS_PATTERN.search(cmdline) is not None
    )
    sockets = listening_sockets(proc_root)
    owners = socket_owners({s.inode for s in sockets}, proc_root)
    out: list[Endpoint] = []
    seen: set[tuple[str, int]] = set()
    for s in sockets:
        pid = owners.get(s.inode)
        if pid is None or not accept(pid, process_command_line(pid, proc_root)):
            continue
        ep = Endpoint(host=_connect_address(s.address), port=s.port, source="local", pid=pid)
        if ep.key in seen:
            continue
        seen.add(ep.key)
        if containers:
            info = read_cgroup_info(pid, proc_root)
            ref = containers.get(info.container_id) if info and info.container_id else None
            if ref is not None:
                ep = replace(
                    ep, namespace=ref.namespace, pod=ref.name, container=ref.container_name
                )
        out.append(ep)
    return out


def merge_endpoints(*groups: Iterable[Endpoint]) -> list[Endpoint]:
    """Endpoints by (host, port), the first group's entry winning, its gaps filled by later
    groups (a pod's endpoint gains the pid a local scan found, for instance)."""
    merged: dict[tuple[str, int], Endpoint] = {}
    for group in groups:
        for ep in group:
            have = merged.get(ep.key)
            if have is None:
                merged[ep.key] = ep
            else:
                merged[ep.key] = replace(
                    have,
                    pid=have.pid if have.pid is not None else ep.pid,
                    namespace=have.namespace or ep.namespace,
                    pod=have.pod or ep.pod,
                    container=have.container or ep.container,
                )
    return list(merged.values())
