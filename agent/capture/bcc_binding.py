"""A narrow, typed wrapper over bcc, the only module that touches it.

Takes BPF C source text and compiler flags; gives `BccProgram`, which attaches uprobes, polls a
ring buffer into a callback of raw bytes, reads and writes maps by raw key/value bytes, and
sums per-CPU counters. bcc ships without type information, so everything it returns is turned
into plain Python types here. `bcc_unavailable_reason()` says why capture cannot run (not root,
bcc missing) without raising.

Two promises the rest of the capture relies on: a poll returns after at most `busy_ms` of
delivering records, even while the kernel writes faster than the callback reads (libbpf alone
would keep consuming for as long as records keep coming); and the native objects are never
freed while a poll is running. bcc frees them from an `atexit` hook of its own, whatever thread
is inside `ring_buffer_poll` at the time (a crash at exit); that hook is replaced by `close()`,
which waits for the running poll to return and refuses to free under it.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

# How long `close()` waits for a running poll to return before giving up on freeing.
_CLOSE_WAIT_S = 5.0


class BccError(RuntimeError):
    """bcc could not compile, load or attach something."""


_bcc_module: ModuleType | None = None
_bcc_import_error: str | None = None


def _bcc() -> ModuleType:
    global _bcc_module, _bcc_import_error
    if _bcc_module is None:
        try:
            with warnings.catch_warnings():
                # bcc 0.26's own source has an invalid escape sequence; not ours to fix.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", SyntaxWarning)
                _bcc_module = importlib.import_module("bcc")
        except Exception as exc:  # bcc raises more than ImportError when libbcc is missing
            _bcc_import_error = f"{type(exc).__name__}: {exc}"
            raise BccError(f"bcc is not importable ({_bcc_import_error})") from exc
    return _bcc_module


def bcc_unavailable_reason() -> str | None:
    """Why eBPF capture cannot run here, or None when it can (root and bcc importable)."""
    if os.geteuid() != 0:
        return "eBPF capture needs root (CAP_BPF and CAP_PERFMON)"
    try:
        _bcc()
    except BccError as exc:
        return (
            f"{exc}; install Debian's python3-bpfcc and run .ci/ebpf-setup.sh to link it "
            "into the virtual environment"
        )
    if not os.path.exists("/sys/kernel/btf/vmlinux") and not os.path.isdir(
        f"/lib/modules/{os.uname().release}/build"
    ):
        return "no kernel headers for bcc: run .ci/ebpf-setup.sh"
    return None


RecordCallback = Callable[[bytes], None]


class BccProgram:
    """One compiled and loaded bcc program (tracepoint probes attach themselves on load)."""

    def __init__(self, text: str, cflags: Sequence[str]) -> None:
        bcc = _bcc()
        try:
            self._bpf: Any = bcc.BPF(text=text.encode(), cflags=list(cflags))
        except Exception as exc:
            raise BccError(f"BPF program failed to compile or load: {exc}") from exc
        # bcc's own exit hook frees the ring buffer under a thread that may still be polling
        # it; ours waits for that poll to end first (the kernel frees the rest at exit anyway).
        atexit.unregister(self._bpf.cleanup)
        atexit.register(self.close)
        # bcc keeps only a weak hold on the ctypes callback; keep it alive here.
        self._callbacks: list[Any] = []
        self._closed = False
        self._closing = False
        # Held for the whole of each poll: close() takes it before freeing anything.
        self._poll_lock = threading.Lock()
        self._busy_ns = 0
        self._deadline_ns = 0
        self._delivered = 0

    def attach_uprobe(self, path: str, symbol: str, fn_name: str, *, retprobe: bool) -> None:
        """Attach `fn_name` to the entry (or return) of `symbol` in the file at `path`."""
        try:
            if retprobe:
                self._bpf.attach_uretprobe(
                    name=path.encode(), sym=symbol.encode(), fn_name=fn_name.encode()
                )
            else:
                self._bpf.attach_uprobe(
                    name=path.encode(), sym=symbol.encode(), fn_name=fn_name.encode()
                )
        except Exception as exc:
            raise BccError(f"cannot attach {fn_name} to {symbol} in {path}: {exc}") from exc

    def detach_uprobe(self, path: str, symbol: str, *, retprobe: bool) -> None:
        """Undo `attach_uprobe` (errors ignored: the probe may not exist)."""
        try:
            if retprobe:
                self._bpf.detach_uretprobe(name=path.encode(), sym=symbol.encode())
            else:
                self._bpf.detach_uprobe(name=path.encode(), sym=symbol.encode())
        except Exception as exc:  # bcc raises bare Exception for "not attached"
            del exc

    def tracepoint_count(self) -> int:
        """Tracepoints attached."""
        return int(self._bpf.num_open_tracepoints())

    def uprobe_count(self) -> int:
        """Uprobes and uretprobes attached."""
        return int(self._bpf.num_open_uprobes())

    def open_ring_buffer(self, map_name: str, callback: RecordCallback) -> None:
        """Deliver every record of the ring buffer `map_name` to `callback` as bytes."""

        def _on_record(_ctx: Any, data: Any, size: int) -> int:
            callback(ctypes.string_at(data, size))
            self._delivered += 1
            now_ns = time.monotonic_ns()
            if self._delivered == 1:
                self._deadline_ns = now_ns + self._busy_ns
            # A negative answer makes libbpf end the poll after this record (consumed, not
            # lost); under a flood it would otherwise never return to the caller.
            return -1 if now_ns >= self._deadline_ns or self._closing else 0

        self._callbacks.append(_on_record)
        self._bpf[map_name.encode()].open_ring_buffer(_on_record)

    def poll(self, timeout_ms: int, busy_ms: int = 100) -> int:
        """Wait up to `timeout_ms` for records, then run the callbacks for those available for
        at most about `busy_ms`; returns how many records were delivered (0 once closed)."""
        if self._closing:
            time.sleep(timeout_ms / 1000)  # as an empty poll would: no busy loop for callers
            return 0
        with self._poll_lock:
            if self._closed:
                return 0
            self._busy_ns = max(busy_ms, 0) * 1_000_000
            self._delivered = 0
            self._bpf.ring_buffer_poll(timeout_ms)
            return self._delivered

    def map_update(self, map_name: str, key: bytes, value: bytes) -> None:
        """Set `key` to `value` (both as the C structs' bytes) in a hash or array map."""
        table = self._bpf[map_name.encode()]
        table[table.Key.from_buffer_copy(key)] = table.Leaf.from_buffer_copy(value)

    def map_delete(self, map_name: str, key: bytes) -> bool:
        """Remove `key`; False when it was not there."""
        table = self._bpf[map_name.encode()]
        try:
            del table[table.Key.from_buffer_copy(key)]
        except KeyError:
            return False
        return True

    def map_clear(self, map_name: str) -> None:
        """Remove every key of a hash map."""
        self._bpf[map_name.encode()].clear()

    def percpu_sums(self, map_name: str, count: int) -> list[int]:
        """Entries 0..count-1 of a per-CPU array, each summed over CPUs."""
        table = self._bpf[map_name.encode()]
        return [int(table.sum(table.Key(i)).value) for i in range(count)]

    def close(self) -> None:
        """Detach everything and free the maps (safe twice, from any thread but the polling
        one). A poll still running is waited for, briefly; if it does not end, nothing is freed
        (the kernel releases it all when the process exits)."""
        if self._closed:
            return
        self._closing = True
        if not self._poll_lock.acquire(timeout=_CLOSE_WAIT_S):
            log.warning("ring buffer still being polled; leaving the BPF program to the exit")
            return
        try:
            if self._closed:
                return
            self._closed = True
            atexit.unregister(self.close)
            self._bpf.cleanup()
        finally:
            self._poll_lock.release()
