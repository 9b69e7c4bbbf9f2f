"""Container id and pod uid from a process's cgroup membership.

Takes in: the text of `/proc/<pid>/cgroup` (cgroup v1, v2 or hybrid), or a pid and a proc root.
Gives out: `CgroupInfo` with the container id (64 hex digits), the container runtime it was named
by, and the pod uid (dashed form) where the path shows them; None fields where it does not.
Pure text parsing; `read_cgroup_info` is the only function that touches the file system, and it
never raises for a process that is gone or unreadable.

Path shapes handled (cgroup driver x runtime):
  systemd driver:  /kubepods.slice/kubepods-burstable.slice/
                   kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
                   ...-pod<uid>.slice/crio-<id>.scope, .../docker-<id>.scope
  cgroupfs driver: /kubepods/burstable/pod<uid>/<id>, /kubepods/pod<uid>/<id>
  plain Docker:    /docker/<id>, /system.slice/docker-<id>.scope; Podman: libpod-<id>.scope
  nested paths (kind, a private cgroup namespace seen from outside: /../../kubepods...) and a
  sub-cgroup below the container scope (.../crio-<id>.scope/container) work the same.
CRI-O's `crio-conmon-<id>.scope` belongs to the monitor process, not the container, and is
reported as no container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_ID: Final = r"[0-9a-f]{64}"
# (runtime, pattern) tried on each path segment, most specific first
_SEGMENT_PATTERNS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("containerd", re.compile(rf"^cri-containerd-({_ID})\.scope$")),
    ("cri-o", re.compile(rf"^crio-({_ID})\.scope$")),
    ("docker", re.compile(rf"^docker-({_ID})\.scope$")),
    ("podman", re.compile(rf"^libpod-({_ID})\.scope$")),
    ("containerd", re.compile(rf"^containerd-({_ID})\.scope$")),
    # cgroupfs driver: the bare id; the runtime cannot be told from the path
    ("", re.compile(rf"^({_ID})$")),
)
_POD_SEGMENT: Final = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$"
)


@dataclass(frozen=True, slots=True)
class CgroupInfo:
    """What a cgroup path says about the process's container and pod."""

    container_id: str | None
    pod_uid: str | None
    #: containerd | cri-o | docker | podman, or None where the path does not name it
    runtime: str | None
    #: the path the answer came from (the v2 unified path when present)
    path: str


def parse_cgroup_path(path: str) -> CgroupInfo:
    """Read container id, runtime and pod uid from one cgroup path."""
    container_id: str | None = None
    runtime: str | None = None
    pod_uid: str | None = None
    for segment in path.split("/"):
        if not segment or segment == "..":
            continue
        pod = _POD_SEGMENT.search(segment)
        if pod:
            pod_uid = pod.group(1).replace("_", "-")
            continue
        for name, pattern in _SEGMENT_PATTERNS:
            match = pattern.match(segment)
            if match:
                # the innermost container scope wins (nested runtimes, kind nodes)
                container_id = match.group(1)
                runtime = name or None
                break
    return CgroupInfo(container_id, pod_uid, runtime, path)


def parse_proc_cgroup(text: str) -> CgroupInfo:
    """Parse `/proc/<pid>/cgroup` content (v1 `id:controllers:path`, v2 `0::path`, or both).

    The unified (v2) line is preferred; on v1 the first controller line that names a container
    wins, since every controller of a containerised process points at the same container.
    """
    unified: CgroupInfo | None = None
    best_v1: CgroupInfo | None = None
    first_path = ""
    for raw in text.splitlines():
        parts = raw.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        first_path = first_path or path
        info = parse_cgroup_path(path)
        if hierarchy == "0" and controllers == "":
            unified = info
        elif best_v1 is None or (best_v1.container_id is None and info.container_id):
            best_v1 = info
    if unified is not None and (unified.container_id or unified.pod_uid):
        return unified
    if best_v1 is not None and (best_v1.container_id or best_v1.pod_uid):
        return best_v1
    return unified or best_v1 or CgroupInfo(None, None, None, first_path)


def read_cgroup_info(pid: int, proc_root: Path = Path("/proc")) -> CgroupInfo | None:
    """Parse a live process's cgroup file; None when the process is gone or unreadable."""
    try:
        text = (proc_root / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    return parse_proc_cgroup(text)
