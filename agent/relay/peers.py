"""Who sent an OTLP request to the relay: the process behind a TCP peer, or the pod behind an IP.

Takes in: the peer's address and port and the relay's own port of the connection; the agent's
procfs view (`/proc/net/tcp{,6}` of its own network namespace, `<proc_root>/<pid>/fd`), and the
node's pod list as the workload resolver last read it (`RecordingPodSource` wraps the source so
that the list is read once for both).
Gives out: `SocketOwners.pid_of(peer, local_port)`, the host pid owning the peer's socket when
the sender shares the agent's network namespace (a process on the host, or the agent's own
pod), and `PodsByIp.pod_of(ip)`, the pod whose IP the sender used (the usual case in a cluster:
pods reach the node's agent through its host port with their own IP). Both cache what they
learnt; neither raises.
The socket search reads every process's descriptor table, so it runs once per new connection
(OTLP exporters keep theirs open) and looks at recent senders first.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.k8s.pods import PodListSource

log = logging.getLogger(__name__)

_ESTABLISHED = "01"
_MAX_CACHED = 4096
#: A peer's port may later belong to another process: what was learnt expires.
_CACHE_TTL_S = 60.0


def _proc_net_addr(text: str) -> tuple[str, int] | None:
    """`0100007F:1F90` (IPv4) or the 32-hex IPv6 form, in the kernel's byte order."""
    try:
        addr_hex, port_hex = text.split(":")
        raw = bytes.fromhex(addr_hex)
        if len(raw) == 4:
            ip = ipaddress.IPv4Address(raw[::-1])
        elif len(raw) == 16:
            # four 32-bit words, each in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
            v6 = ipaddress.IPv6Address(words)
            return (str(v6.ipv4_mapped or v6), int(port_hex, 16))
        else:
            return None
        return (str(ip), int(port_hex, 16))
    except ValueError:
        return None


def normalize_ip(ip: str) -> str:
    """An address as `ipaddress` writes it (IPv4-mapped IPv6 as plain IPv4)."""
    try:
        parsed = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


class SocketOwners:
    """(peer ip, peer port) -> pid of the process holding that end of the connection."""

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        net_root: Path = Path("/proc/net"),
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._proc_root = proc_root
        self._net_root = net_root
        self._clock_s = clock_s
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], tuple[int | None, float]] = OrderedDict()
        self._recent: OrderedDict[int, None] = OrderedDict()  # pids that sent before

    def pid_of(self, peer_ip: str, peer_port: int, local_port: int) -> int | None:
        """The pid behind the peer's socket, or None when it is not visible from here."""
        key = (normalize_ip(peer_ip), peer_port)
        now = self._clock_s()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now - cached[1] < _CACHE_TTL_S:
                self._cache.move_to_end(key)
                return cached[0]
        pid = None
        inode = self._inode(key, local_port)
        if inode is not None:
            pid = self._owner(inode)
        with self._lock:
            self._cache[key] = (pid, now)
            self._cache.move_to_end(key)
            while len(self._cache) > _MAX_CACHED:
                self._cache.popitem(last=False)
            if pid is not None:
                self._recent[pid] = None
                self._recent.move_to_end(pid)
                while len(self._recent) > 64:
                    self._recent.popitem(last=False)
        return pid

    def _inode(self, peer: tuple[str, int], local_port: int) -> int | None:
        for name in ("tcp", "tcp6"):
            try:
                lines = (self._net_root / name).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) < 10 or fields[3] != _ESTABLISHED:
                    continue
                local = _proc_net_addr(fields[1])
                remote = _proc_net_addr(fields[2])
                # the sender's end: its local address is our peer, its remote our port
                if local == peer and remote is not None and remote[1] == local_port:
                    inode = int(fields[9])
                    return inode or None
        return None

    def _owner(self, inode: int) -> int | None:
        wanted = f"socket:[{inode}]"
        with self._lock:
            recent = list(reversed(self._recent))
        try:
            everyone = [int(p) for p in os.listdir(self._proc_root) if p.isdigit()]
        except OSError:
            return None
        seen: set[int] = set()
        for pid in [*recent, *everyone]:
            if pid in seen:
                continue
            seen.add(pid)
            fd_dir = self._proc_root / str(pid) / "fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(fd_dir / fd) == wanted:
                        return pid
                except OSError:
                    continue
        return None


@dataclass(frozen=True, slots=True)
class PodRef:
    """A pod of this node, as its IP names it."""

    namespace: str
    name: str
    uid: str | None
    node: str | None


class RecordingPodSource:
    """Wraps a `PodListSource`, keeping the last list it answered (one read serves both the
    workload resolver and the IP index)."""

    def __init__(self, inner: PodListSource) -> None:
        self.inner = inner
        self.description = inner.description
        self.last: Mapping[str, Any] | None = None
        self.version = 0

    def pod_list(self) -> Mapping[str, Any]:
        doc = self.inner.pod_list()
        self.last = doc
        self.version += 1
        return doc


def _ips_of(pod: Mapping[str, Any]) -> list[str]:
    status = pod.get("status")
    if not isinstance(status, Mapping):
        return []
    ips = [status.get("podIP")]
    for entry in status.get("podIPs") or ():
        if isinstance(entry, Mapping):
            ips.append(entry.get("ip"))
    host_ip = status.get("hostIP")
    # a host-network pod has the node's address, which every such pod shares
    return sorted({normalize_ip(ip) for ip in ips if isinstance(ip, str) and ip and ip != host_ip})


def index_by_ip(doc: Mapping[str, Any]) -> dict[str, PodRef]:
    """IP -> pod for a `v1.PodList` (addresses held by two pods are left out)."""
    out: dict[str, PodRef] = {}
    shared: set[str] = set()
    items = doc.get("items")
    for pod in items if isinstance(items, list) else ():
        if not isinstance(pod, Mapping):
            continue
        meta, spec = pod.get("metadata"), pod.get("spec")
        if not isinstance(meta, Mapping) or (isinstance(spec, Mapping) and spec.get("hostNetwork")):
            continue
        name, namespace, uid = meta.get("name"), meta.get("namespace"), meta.get("uid")
        if not isinstance(name, str) or not isinstance(namespace, str):
            continue
        node = spec.get("nodeName") if isinstance(spec, Mapping) else None
        ref = PodRef(
            namespace,
            name,
            uid if isinstance(uid, str) and uid else None,
            node if isinstance(node, str) else None,
        )
        for ip in _ips_of(pod):
            if ip in out and out[ip] != ref:
                shared.add(ip)
            out[ip] = ref
    for ip in shared:
        del out[ip]
    return out


class PodsByIp:
    """IP -> pod over the recorded pod list; on a miss the list is read again, at most every
    `min_refresh_interval_s` (through `refresh`, the resolver's own read)."""

    def __init__(
        self,
        source: RecordingPodSource,
        refresh: Callable[[], object],
        *,
        min_refresh_interval_s: float = 2.0,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._refresh = refresh
        self._min_refresh_s = min_refresh_interval_s
        self._clock_s = clock_s
        self._lock = threading.Lock()
        self._version = -1
        self._index: dict[str, PodRef] = {}
        self._last_refresh_s: float | None = None

    def _current(self) -> dict[str, PodRef]:
        with self._lock:
            if self._source.version != self._version and self._source.last is not None:
                self._index = index_by_ip(self._source.last)
                self._version = self._source.version
            return self._index

    def pod_of(self, ip: str) -> PodRef | None:
        ip = normalize_ip(ip)
        found = self._current().get(ip)
        if found is not None:
            return found
        now = self._clock_s()
        with self._lock:
            if (
                self._last_refresh_s is not None
                and now - self._last_refresh_s < self._min_refresh_s
            ):
                return None
            self._last_refresh_s = now
        try:
            self._refresh()
        except Exception:
            log.debug("pod list refresh for an unknown sender failed", exc_info=True)
            return None
        return self._current().get(ip)
