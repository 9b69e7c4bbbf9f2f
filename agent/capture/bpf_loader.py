"""Loads the capture programs of `ebpf/` with bcc and turns their records into typed events.

Takes a `CaptureConfig`; gives `BpfCapture`, an event source: `open(on_event)` compiles the
programs (common.h and the family files concatenated into one program, so that every family
shares the maps; or takes those `compile_early` loaded at the start of the process), writes
the filters into their maps, attaches the OpenSSL uprobes to every OpenSSL it finds, tracks
connections that already exist, and opens the ring buffer; `poll(timeout_ms)` delivers decoded
events to `on_event`; `maintain()` does the housekeeping (rescans for OpenSSL after exec and
periodically, kernel map deletions asked for by other threads, counter refresh). `poll` and
`maintain` belong to one thread (the capture thread); `untrack`, `forget_ssl` and
`kernel_counters` may be called from any thread.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.capture.bcc_binding import BccError, BccProgram
from agent.capture.compiler_memory import Released, release_compiler_memory
from agent.capture.config import PAGE_BYTES, CaptureConfig
from agent.capture.events import (
    CNT_CONN_TABLE_FULL,
    CNT_CONNS_OPENED,
    CNT_MAX,
    CNT_READ_FAULTS,
    CNT_RINGBUF_DROPS,
    CNT_TLS_CIPHER,
    CNT_TRUNCATED,
    CaptureEvent,
    ConnOpenEvent,
    LibraryOpenEvent,
    ProcessEvent,
    decode,
    role_code,
)
from agent.capture.exchange import Role
from agent.capture.sockets import existing_tcp_connections, resolve_socket
from agent.capture.tls_targets import TlsTarget, TlsTargetFinder

log = logging.getLogger(__name__)

FAMILY_FILES = {"syscalls": "syscalls.c", "tls": "tls.c", "process": "process.c"}

# Which BPF function goes on which OpenSSL symbol: (entry function, return function or None).
UPROBES: dict[str, tuple[str, str | None]] = {
    "SSL_write": ("ssl_write_enter", "ssl_write_return"),
    "SSL_write_ex": ("ssl_write_ex_enter", "ssl_write_return"),
    "SSL_read": ("ssl_read_enter", "ssl_read_return"),
    "SSL_read_ex": ("ssl_read_ex_enter", "ssl_read_return"),
    "SSL_set_fd": ("ssl_set_fd_enter", None),
    "SSL_free": ("ssl_free_enter", None),
}

# Connections made in user space (pre-existing sockets) take ids from the top half, so they
# never collide with the kernel's counter.
_SEEDED_ID_BASE = 1 << 63

_CONFIG = struct.Struct("<IIIIIIQ")  # struct capture_config
_CONN_STATE = struct.Struct("<QQHHBB2x")  # struct conn_state
_SSL_KEY = struct.Struct("<QI4x")  # struct ssl_key


def ebpf_dir() -> Path:
    """Where the C sources live: $INFERSIGHT_EBPF_DIR, else `ebpf/` at the repository root."""
    env = os.environ.get("INFERSIGHT_EBPF_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "ebpf"


def possible_cpus() -> int:
    """Number of possible CPU ids (the per-CPU scratch needs one slot for each)."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
        highest = max(int(part.split("-")[-1]) for part in text.split(","))
        return highest + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def program_text(config: CaptureConfig, source_dir: Path | None = None) -> str:
    """The one C program bcc compiles: the shared maps and helpers, then each family.

    bcc rewrites map method calls only in the main source text, not in included headers, so
    common.h is inlined rather than #included; events.h (types only) stays an include.
    """
    base = source_dir or ebpf_dir()
    parts = [(base / "include" / "common.h").read_text()]
    families = ["syscalls", "process"] + (["tls"] if config.tls else [])
    for family in families:
        parts.append(f"\n/* ---- {FAMILY_FILES[family]} ---- */\n")
        parts.append((base / FAMILY_FILES[family]).read_text())
    return "".join(parts)


def compiler_flags(config: CaptureConfig, source_dir: Path | None = None) -> list[str]:
    """-I and -D flags that size the programs from the configuration."""
    base = source_dir or ebpf_dir()
    return [
        f"-I{base / 'include'}",
        f"-DMAX_PAYLOAD_BYTES={config.max_payload_bytes}",
        f"-DMAX_PIECES={config.max_pieces_per_call}",
        f"-DRINGBUF_PAGES={config.ring_buffer_bytes // PAGE_BYTES}",
        f"-DNCPU={possible_cpus()}",
        f"-DCONN_TABLE_SIZE={config.conn_table_size}",
        "-Wno-macro-redefined",
        *config.extra_cflags,
    ]


# Programs compiled ahead of `BpfCapture.open` (see `compile_early`), by (text, flags).
_early_lock = threading.Lock()
_early: dict[tuple[str, tuple[str, ...]], tuple[BccProgram, Released | None]] = {}


def compile_early(config: CaptureConfig) -> bool:
    """Compile and load the capture programs now, for the next `BpfCapture.open` with the same
    programs to take; True when it worked.

    Meant for the very start of the agent process: the compile's transient memory (LLVM and
    clang, about 120 MB) then does not stack on the agent's own, and is given back before the
    rest of the agent is imported. Loaded programs capture nothing until `open` has written
    their configuration (the kernel side reads `enabled`, 0 until then)."""
    text, flags = program_text(config), compiler_flags(config)
    try:
        prog = BccProgram(text, flags)
    except BccError as exc:
        log.debug("early compile failed (the capture will say why when it starts): %s", exc)
        return False
    released = release_compiler_memory()
    with _early_lock:
        stale = list(_early.values())
        _early.clear()
        _early[(text, tuple(flags))] = (prog, released)
    for old, _ in stale:
        old.close()
    return True


def discard_early() -> None:
    """Free programs compiled early that no capture took (safe to call any time)."""
    with _early_lock:
        stale = list(_early.values())
        _early.clear()
    for prog, _ in stale:
        prog.close()


def _take_early(text: str, flags: list[str]) -> tuple[BccProgram, Released | None] | None:
    with _early_lock:
        found = _early.pop((text, tuple(flags)), None)
    discard_early()  # compiled for another configuration
    return found


@dataclass(frozen=True)
class KernelCounters:
    """The kernel side's own counts (summed over CPUs)."""

    ringbuf_drops: int = 0
    truncated_calls: int = 0
    connections_opened: int = 0
    conn_table_full: int = 0
    tls_cipher_calls: int = 0
    read_faults: int = 0


def cgroup2_root(mounts: str = "/proc/self/mounts") -> str | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on hybrid
    systems); None without one."""
    try:
        with open(mounts) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    return None


def cgroup_id_of(pid: int, proc_root: str = "/proc", cgroup_root: str | None = None) -> int:
    """The cgroup v2 id of a process, as bpf_get_current_cgroup_id() gives it (the inode of its
    cgroup directory); 0 if unknown."""
    root = cgroup_root or cgroup2_root()
    if root is None:
        return 0
    try:
        with open(f"{proc_root}/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    path = line[3:].strip()
                    return os.stat(f"{root.rstrip('/')}{path}").st_ino
    except OSError:
        pass
    return 0


class BpfCapture:
    """The kernel side of the capture, seen from user space."""

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config.validate()
        self._prog: BccProgram | None = None
        self._on_event: Callable[[CaptureEvent], None] | None = None
        # Files are looked for in every process, ours included: a library found through any
        # process is probed for all of them.
        self._finder = TlsTargetFinder(config.proc_root)
        self._targets: list[TlsTarget] = []
        self._attach_failures: list[str] = []
        self._scans: list[tuple[float, int]] = []  # (due monotonic s, pid), a heap
        self._next_full_scan = 0.0
        self._next_counters = 0.0
        self._requests: deque[tuple[str, int, int]] = deque()
        self._lock = threading.Lock()
        self._counters = KernelCounters()
        self._seeded_ids = 0
        self._listeners: dict[tuple[int, int], int] = {}
        self._record_errors = 0
        self._closed = False
        #: what giving back the compiler's memory after loading achieved (None: not done)
        self.compiler_memory: Released | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def _listener_port(self, pid: int, fd: int) -> int:
        key = (pid, fd)
        port = self._listeners.get(key)
        if port is None:
            sock = resolve_socket(pid, fd, self.config.proc_root)
            port = sock.local_port if sock is not None else 0
            if len(self._listeners) > 4096:
                self._listeners.clear()
            self._listeners[key] = port
        return port

    def _skip_pids(self) -> set[int]:
        return set() if self.config.capture_self else {os.getpid()}

    def open(self, on_event: Callable[[CaptureEvent], None]) -> None:
        """Compile, load, configure and attach; then deliver events to `on_event` on poll."""
        self._on_event = on_event
        text, flags = program_text(self.config), compiler_flags(self.config)
        early = _take_early(text, flags)
        if early is not None:
            prog, self.compiler_memory = early
        else:
            prog = BccProgram(text, flags)
            # the compiler's libraries and heap are not needed again once the programs load
            self.compiler_memory = release_compiler_memory()
        self._prog = prog
        try:
            self._write_config(prog)
            prog.open_ring_buffer("events", self._on_record)
            if self.config.tls:
                for path in self.config.libssl_paths:
                    target = self._finder.consider_path(path)
                    if target is not None:
                        self._attach(target)
                self._scan_all()
            if self.config.seed_existing:
                self._seed_existing()
        except Exception:
            prog.close()
            self._prog = None
            raise
        self._refresh_counters()

    def close(self) -> None:
        """Detach and free everything (safe twice)."""
        if self._closed:
            return
        self._closed = True
        if self._prog is not None:
            self._refresh_counters()
            self._prog.close()
            self._prog = None

    # -- the capture thread ----------------------------------------------------------------

    def poll(self, timeout_ms: int) -> int:
        """Wait up to `timeout_ms` for records and deliver them, for at most about
        `poll_timeout_ms` of delivering (so that housekeeping and stop requests get their turn
        under a flood); returns how many were delivered."""
        prog = self._prog
        if prog is None:
            return 0
        return prog.poll(timeout_ms, self.config.poll_timeout_ms)

    def maintain(self) -> None:
        """Housekeeping: due OpenSSL scans, requested map deletions, counters."""
        prog = self._prog
        if prog is None:
            return
        while self._requests:
            what, a, b = self._requests.popleft()
            if what == "conn":
                prog.map_delete("conns", struct.pack("<Q", (a << 32) | (b & 0xFFFFFFFF)))
            elif what == "ssl":
                prog.map_delete("ssl_state", _SSL_KEY.pack(b, a))
        now = time.monotonic()
        if self.config.tls:
            while self._scans and self._scans[0][0] <= now:
                _, pid = heapq.heappop(self._scans)
                for target in self._finder.scan_pid(pid):
                    self._attach(target)
            if now >= self._next_full_scan:
                self._scan_all()
        if now >= self._next_counters:
            self._refresh_counters()

    def _on_record(self, record: bytes) -> None:
        # Called from inside bcc's ctypes callback, where an exception would only be printed.
        try:
            self._handle_record(record)
        except Exception:
            self._record_errors += 1
            log.exception("capture record handling failed")

    def _handle_record(self, record: bytes) -> None:
        event = decode(record)
        if event is None:
            self._record_errors += 1
            return
        if isinstance(event, ConnOpenEvent) and not event.seeded:
            # Look now, while the socket most likely still exists (short connections close
            # within milliseconds): the tracker decides what to do with the answer.
            sock = resolve_socket(event.pid, event.fd, self.config.proc_root)
            if sock is not None:
                event = dataclasses.replace(event, socket=sock)
            elif event.local_port == 0 and event.listen_fd >= 0:
                # Gone already: the listener it came from (long-lived) still tells the port.
                port = self._listener_port(event.pid, event.listen_fd)
                if port:
                    event = dataclasses.replace(event, local_port=port)
        if isinstance(event, LibraryOpenEvent):
            # The loader of some process is opening a libssl: attach before its first TLS call.
            if self.config.tls:
                target = self._finder.consider_opened(event.pid, event.path)
                if target is not None:
                    self._attach(target)
            return
        if isinstance(event, ProcessEvent) and not event.exited and self.config.tls:
            # The new image may be an executable with OpenSSL inside: look at once; its
            # libraries load later (some only on dlopen), so look again after a while.
            for target in self._finder.scan_pid(event.pid):
                self._attach(target)
            now = time.monotonic()
            for delay in self.config.new_process_scan_delays_s:
                heapq.heappush(self._scans, (now + delay, event.pid))
        if self._on_event is not None:
            self._on_event(event)

    # -- requests from other threads -------------------------------------------------------

    def untrack(self, pid: int, fd: int) -> None:
        """Ask the kernel side to stop tracking socket `fd` of `pid`."""
        self._requests.append(("conn", pid, fd))

    def forget_ssl(self, pid: int, ssl_ptr: int) -> None:
        """Ask the kernel side to forget the binding of an SSL object."""
        self._requests.append(("ssl", pid, ssl_ptr))

    def kernel_counters(self) -> KernelCounters:
        """The latest snapshot of the kernel's counters (refreshed about once a second)."""
        with self._lock:
            return self._counters

    def record_errors(self) -> int:
        """Records that could not be decoded or handled."""
        return self._record_errors

    def tls_targets(self) -> list[TlsTarget]:
        """Files the OpenSSL uprobes are attached to."""
        return list(self._targets)

    def attach_failures(self) -> list[str]:
        """Why some OpenSSL files could not be attached to."""
        return list(self._attach_failures)

    # -- internals -------------------------------------------------------------------------

    def _write_config(self, prog: BccProgram) -> None:
        cfg = self.config
        self_pid = 0 if cfg.capture_self else os.getpid()
        # The sets first, then the configuration that switches the programs on: the probes are
        # live from the moment the program loaded and must not act on a half-written filter.
        for pid in cfg.filter_pids or ():
            prog.map_update("filter_pid_set", struct.pack("<I", pid), b"\x01")
        for cg in cfg.filter_cgroup_ids or ():
            prog.map_update("filter_cgroup_set", struct.pack("<Q", cg), b"\x01")
        for port in cfg.filter_ports or ():
            prog.map_update("filter_port_set", struct.pack("<H", port), b"\x01")
        prog.map_update(
            "capture_cfg",
            struct.pack("<I", 0),
            _CONFIG.pack(
                1,
                self_pid,
                int(cfg.filter_pids is not None),
                int(cfg.filter_cgroup_ids is not None),
                int(cfg.filter_ports is not None),
                0,
                cfg.bind_window_ms * 1_000_000,
            ),
        )

    def _scan_all(self) -> None:
        for target in self._finder.scan_all():
            self._attach(target)
        self._next_full_scan = time.monotonic() + self.config.rescan_interval_s

    def _attach(self, target: TlsTarget) -> None:
        prog = self._prog
        if prog is None:
            return
        attached: list[str] = []
        try:
            for symbol in target.symbols:
                fns = UPROBES.get(symbol)
                if fns is None:
                    continue
                entry, ret = fns
                # Return probe first: a return without its entry is ignored by the programs,
                # an entry without its return would leave a call open on the thread forever.
                if ret is not None:
                    prog.attach_uprobe(target.path, symbol, ret, retprobe=True)
                try:
                    prog.attach_uprobe(target.path, symbol, entry, retprobe=False)
                except BccError:
                    if ret is not None:
                        prog.detach_uprobe(target.path, symbol, retprobe=True)
                    raise
                attached.append(symbol)
        except BccError as exc:
            # Usually the process we found the file through exited: undo, and let a later
            # scan find the file again through another process.
            for symbol in attached:
                entry, ret = UPROBES[symbol]
                prog.detach_uprobe(target.path, symbol, retprobe=False)
                if ret is not None:
                    prog.detach_uprobe(target.path, symbol, retprobe=True)
            self._finder.forget(target)
            self._attach_failures.append(str(exc))
            log.info("OpenSSL uprobes not attached to %s: %s", target.path, exc)
            return
        if attached:
            self._targets.append(target)
            log.info(
                "OpenSSL uprobes attached to %s%s (%s)",
                target.path,
                _real_name(target.path),
                ", ".join(attached),
            )

    def _allowed_pid(self, pid: int) -> bool:
        cfg = self.config
        if pid in self._skip_pids():
            return False
        if cfg.filter_pids is not None and pid not in cfg.filter_pids:
            return False
        return cfg.filter_cgroup_ids is None or (
            cgroup_id_of(pid, cfg.proc_root) in cfg.filter_cgroup_ids
        )

    def _seed_existing(self) -> None:
        """Track TCP connections opened before the agent started (keep-alive pools)."""
        prog = self._prog
        if prog is None or self._on_event is None:
            return
        try:
            pids = [int(n) for n in os.listdir(self.config.proc_root) if n.isdigit()]
        except OSError:
            return
        ports = self.config.filter_ports
        now_ns = time.monotonic_ns()
        for pid in pids:
            if not self._allowed_pid(pid):
                continue
            for found in existing_tcp_connections(pid, self.config.proc_root):
                info = found.info
                service = info.local_port if found.role is Role.SERVER else info.peer_port
                if ports is not None and service not in ports:
                    continue
                self._seeded_ids += 1
                conn_id = _SEEDED_ID_BASE + self._seeded_ids
                key = struct.pack("<Q", (pid << 32) | (found.fd & 0xFFFFFFFF))
                value = _CONN_STATE.pack(
                    conn_id, 0, info.family, info.peer_port, role_code(found.role), 0
                )
                try:
                    prog.map_update("conns", key, value)
                except Exception as exc:  # the table is full, or the map refused the entry
                    log.debug("could not seed connection %s/%s: %s", pid, found.fd, exc)
                    continue
                prog.map_update("tracked_pids", struct.pack("<I", pid), b"\x01")
                self._on_event(
                    ConnOpenEvent(
                        mono_ns=now_ns,
                        pid=pid,
                        tid=pid,
                        conn_id=conn_id,
                        fd=found.fd,
                        role=found.role,
                        family=info.family,
                        peer_addr=info.peer_addr,
                        peer_port=info.peer_port,
                        local_addr=info.local_addr,
                        local_port=info.local_port,
                        seeded=True,
                        comm=_comm_of(pid, self.config.proc_root),
                    )
                )

    def _refresh_counters(self) -> None:
        prog = self._prog
        if prog is None:
            return
        try:
            sums = prog.percpu_sums("counters", CNT_MAX)
        except Exception as exc:  # map read failures must not stop the capture
            log.debug("kernel counters unreadable: %s", exc)
            return
        with self._lock:
            self._counters = KernelCounters(
                ringbuf_drops=sums[CNT_RINGBUF_DROPS],
                truncated_calls=sums[CNT_TRUNCATED],
                connections_opened=sums[CNT_CONNS_OPENED],
                conn_table_full=sums[CNT_CONN_TABLE_FULL],
                tls_cipher_calls=sums[CNT_TLS_CIPHER],
                read_faults=sums[CNT_READ_FAULTS],
            )
        self._next_counters = time.monotonic() + 1.0


def _real_name(path: str) -> str:
    """` (= /usr/bin/node)` for a `/proc/<pid>/exe` path, so that the log names the program."""
    if not path.endswith("/exe"):
        return ""
    try:
        return f" (= {os.readlink(path)})"
    except OSError:
        return ""


def _comm_of(pid: int, proc_root: str) -> str:
    try:
        with open(f"{proc_root}/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
