"""Who a captured process is: pid (and cgroup id) -> container -> pod, cached.

Takes in: a pid, its `comm` and the cgroup v2 id the kernel reported with the event; the host's
procfs and cgroupfs; optionally a `PodListSource`.
Gives out: `Workload` (pid, executable name, container id, pod uid, and where Kubernetes knows
them pod name, namespace and container name) and `pod_ref(container_id)` for GPU attribution.

How: `/proc/<pid>/cgroup` is parsed by `agent.k8s.cgroup`. A process that already exited (a
short `curl`) is found through its cgroup id instead, which is the inode number of its cgroup
directory under the cgroup v2 mount, so the container is still named. Container ids are looked
up in the node's pod list, which is read again when older than `ttl_s` and on a miss (at most
once per `min_refresh_interval_s`, so a process outside any pod cannot make the agent poll the
API server). A failing source keeps the last good list. Without a source, process and container
fields are still filled. Thread-safe; never raises.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.k8s.cgroup import CgroupInfo, parse_cgroup_path, read_cgroup_info
from agent.k8s.pods import PodIndex, PodInfo, PodListSource, PodSourceError

log = logging.getLogger(__name__)

_MAX_PIDS = 8192
_MAX_SCAN_DEPTH = 12


@dataclass(frozen=True, slots=True)
class Workload:
    """What is known about the process behind one captured call."""

    pid: int
    comm: str = ""
    executable: str | None = None
    container_id: str | None = None
    pod_uid: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None


@dataclass(frozen=True, slots=True)
class _ProcEntry:
    at_s: float
    cgroup: CgroupInfo | None
    executable: str | None


@dataclass(slots=True)
class ResolverStats:
    """Counts since start."""

    lookups: int = 0
    pod_hits: int = 0
    pod_misses: int = 0
    refreshes: int = 0
    refresh_errors: int = 0
    cgroup_scans: int = 0


class WorkloadResolver:
    """pid -> Workload, with the caches described in the module docstring."""

    def __init__(
        self,
        source: PodListSource | None = None,
        *,
        proc_root: Path = Path("/proc"),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        ttl_s: float = 30.0,
        min_refresh_interval_s: float = 2.0,
        pid_ttl_s: float = 30.0,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._proc_root = proc_root
        self._cgroup_root = cgroup_root
        self._ttl_s = ttl_s
        self._min_refresh_s = min_refresh_interval_s
        self._pid_ttl_s = pid_ttl_s
        self._clock_s = clock_s
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._index = PodIndex.empty()
        self._index_at_s: float | None = None
        self._last_attempt_s: float | None = None
        self._pids: dict[int, _ProcEntry] = {}
        self._cgroup_paths: dict[int, str] = {}
        self._last_scan_s: float | None = None
        self.last_error: str | None = None
        self.stats = ResolverStats()

    # -- pods ------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read the pod list now; False (keeping the old list) when the source fails."""
        if self.source is None:
            return False
        with self._refresh_lock:
            now = self._clock_s()
            self._last_attempt_s = now
            try:
                index = PodIndex.from_pod_list(self.source.pod_list())
            except PodSourceError as exc:
                with self._lock:
                    self.stats.refresh_errors += 1
                    first = self.last_error is None
                    self.last_error = str(exc)
                (log.warning if first else log.debug)("pod list unavailable: %s", exc)
                return False
            except Exception as exc:  # a source bug must not stop span export
                with self._lock:
                    self.stats.refresh_errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("pod list source failed")
                return False
            with self._lock:
                self._index = index
                self._index_at_s = now
                self.stats.refreshes += 1
                self.last_error = None
            return True

    def _current_index(self, *, missed: bool) -> PodIndex:
        if self.source is None:
            return self._index
        now = self._clock_s()
        with self._lock:
            stale = self._index_at_s is None or now - self._index_at_s >= self._ttl_s
            recent_try = (
                self._last_attempt_s is not None
                and now - self._last_attempt_s < self._min_refresh_s
            )
        if (stale or missed) and not recent_try:
            self.refresh()
        with self._lock:
            return self._index

    def pod_for_container(self, container_id: str) -> PodInfo | None:
        """The pod running this container (refreshing the list once on a miss)."""
        info = self._current_index(missed=False).by_container.get(container_id)
        if info is None and self.source is not None:
            info = self._current_index(missed=True).by_container.get(container_id)
        return info

    def pod_for_uid(self, pod_uid: str) -> PodInfo | None:
        """The pod with this uid (its containers may not have reported ids yet)."""
        info = self._current_index(missed=False).by_uid.get(pod_uid)
        if info is None and self.source is not None:
            info = self._current_index(missed=True).by_uid.get(pod_uid)
        return info

    # -- processes -------------------------------------------------------------------------

    def _proc_entry(self, pid: int) -> _ProcEntry | None:
        now = self._clock_s()
        with self._lock:
            entry = self._pids.get(pid)
        if entry is not None and now - entry.at_s < self._pid_ttl_s:
            return entry
        cgroup = read_cgroup_info(pid, self._proc_root)
        if cgroup is None:
            return None  # the process is gone (or was never visible)
        try:
            exe_path = os.readlink(self._proc_root / str(pid) / "exe")
            executable: str | None = os.path.basename(exe_path.removesuffix(" (deleted)"))
        except OSError:
            executable = None
        entry = _ProcEntry(now, cgroup, executable or None)
        with self._lock:
            if len(self._pids) >= _MAX_PIDS:
                self._pids = {p: e for p, e in self._pids.items() if now - e.at_s < self._pid_ttl_s}
                if len(self._pids) >= _MAX_PIDS:
                    self._pids.clear()
            self._pids[pid] = entry
        return entry

    def _cgroup_by_id(self, cgroup_id: int) -> CgroupInfo | None:
        with self._lock:
            path = self._cgroup_paths.get(cgroup_id)
        if path is None:
            now = self._clock_s()
            with self._lock:
                if self._last_scan_s is not None and now - self._last_scan_s < self._min_refresh_s:
                    return None
                self._last_scan_s = now
            paths = scan_cgroup_ids(self._cgroup_root)
            with self._lock:
                self.stats.cgroup_scans += 1
                self._cgroup_paths = paths
                path = paths.get(cgroup_id)
        return parse_cgroup_path(path) if path is not None else None

    def resolve(self, pid: int, comm: str = "", cgroup_id: int = 0) -> Workload:
        """Everything known about `pid`; fields stay None where there is no evidence."""
        with self._lock:
            self.stats.lookups += 1
        try:
            entry = self._proc_entry(pid)
            cgroup = entry.cgroup if entry is not None else None
            if (cgroup is None or cgroup.container_id is None) and cgroup_id > 0:
                cgroup = self._cgroup_by_id(cgroup_id) or cgroup
            container_id = cgroup.container_id if cgroup else None
            pod_uid = cgroup.pod_uid if cgroup else None
            pod: PodInfo | None = None
            if self.source is not None:
                if container_id is not None:
                    pod = self.pod_for_container(container_id)
                if pod is None and pod_uid is not None:
                    pod = self.pod_for_uid(pod_uid)
                with self._lock:
                    if pod is not None:
                        self.stats.pod_hits += 1
                    elif container_id is not None or pod_uid is not None:
                        self.stats.pod_misses += 1
            return Workload(
                pid=pid,
                comm=comm,
                executable=(entry.executable if entry is not None else None) or comm or None,
                container_id=container_id,
                pod_uid=pod_uid or (pod.uid if pod else None),
                namespace=pod.namespace if pod else None,
                pod=pod.name if pod else None,
                container=pod.container_name if pod else None,
            )
        except Exception:
            log.exception("workload resolution failed for pid %d", pid)
            return Workload(pid=pid, comm=comm, executable=comm or None)


def scan_cgroup_ids(root: Path) -> dict[int, str]:
    """Inode number (= cgroup v2 id) -> cgroup path (`/kubepods.slice/...`) under `root`."""
    out: dict[int, str] = {}
    stack: list[tuple[str, str, int]] = [(str(root), "", 0)]
    while stack:
        directory, rel, depth = stack.pop()
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    try:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        child_rel = f"{rel}/{entry.name}"
                        out[entry.inode()] = child_rel
                    except OSError:
                        continue
                    if depth + 1 < _MAX_SCAN_DEPTH:
                        stack.append((entry.path, child_rel, depth + 1))
        except OSError:
            continue
    return out
