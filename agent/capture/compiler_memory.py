"""Give back the memory bcc's compiler held once the BPF programs are loaded.

Takes nothing (reads `/proc/self/smaps` of the running process); gives out a `Released` record
of the resident kilobytes before and after.

bcc compiles the programs in process with LLVM and clang: the compile leaves about 80 MB of
their shared libraries' code resident and tens of megabytes of freed heap that glibc keeps,
none of which the agent touches again (attaching uprobes and reading ring buffers are
libbcc's own code). Two steps return it:
  * `malloc_trim(0)` hands free heap pages of every malloc arena back to the kernel;
  * `madvise(MADV_DONTNEED)` drops the resident pages of the compiler libraries' mappings that
    are read-only and still exactly the file's contents (no private copy: `Anonymous: 0`), so
    a page needed later is read again from the file. Mappings with private copies (relocated
    read-only data) and writable ones are left alone: dropping those would lose their state.
Linux and glibc only; on anything else, or on any error, nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import re
from dataclasses import dataclass
from typing import Final

log = logging.getLogger(__name__)

#: shared libraries of the in-process compiler (LLVM, clang)
_COMPILER_LIBS: Final = re.compile(r"/lib(LLVM|clang)[^/]*\.so")
_MAPPING: Final = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")
_MADV_DONTNEED: Final = 4


@dataclass(frozen=True, slots=True)
class Released:
    """Resident memory of the process around the release, in KiB."""

    rss_before_kib: int
    rss_after_kib: int
    mappings_dropped: int


@dataclass(slots=True)
class _Mapping:
    start: int
    end: int
    perms: str
    path: str
    anonymous_kib: int = 0


def _mappings(smaps: str) -> list[_Mapping]:
    out: list[_Mapping] = []
    for line in smaps.splitlines():
        m = _MAPPING.match(line)
        if m is not None:
            out.append(_Mapping(int(m[1], 16), int(m[2], 16), m[3], m[4].strip()))
        elif line.startswith("Anonymous:") and out:
            out[-1].anonymous_kib = int(line.split()[1])
    return out


def droppable(smaps: str) -> list[tuple[int, int]]:
    """(start, end) of the compiler libraries' mappings whose pages can be dropped: not
    writable and without private copies."""
    return [
        (m.start, m.end)
        for m in _mappings(smaps)
        if _COMPILER_LIBS.search(m.path) and "w" not in m.perms and m.anonymous_kib == 0
    ]


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def release_compiler_memory() -> Released | None:
    """Trim the heap and drop the compiler's clean pages (see the module docstring)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        before = _rss_kib()
        libc.malloc_trim(0)
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as f:
            ranges = droppable(f.read())
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        libc.madvise.restype = ctypes.c_int
        dropped = sum(
            libc.madvise(start, end - start, _MADV_DONTNEED) == 0 for start, end in ranges
        )
        released = Released(before, _rss_kib(), dropped)
    except (OSError, AttributeError, ValueError) as exc:
        log.debug("compiler memory not released: %s", exc)
        return None
    log.info(
        "BPF compiler memory released: resident %d -> %d MiB",
        released.rss_before_kib // 1024,
        released.rss_after_kib // 1024,
    )
    return released
