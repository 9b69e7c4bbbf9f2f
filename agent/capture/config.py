"""Settings of the eBPF capture, with their defaults and checks.

Takes keyword values (from the agent's configuration file or tests); gives a validated, frozen
`CaptureConfig`. `validate()` raises `ValueError` naming the offending key. Does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

PAGE_BYTES = 4096


@dataclass(frozen=True)
class CaptureConfig:
    """How much to copy, what to watch, and how big every buffer is."""

    max_payload_bytes: int = 16384
    """Bytes copied into one kernel record; a call moving more is split into several records."""
    max_pieces_per_call: int = 8
    """Records per call at most; past `max_pieces_per_call * max_payload_bytes` the rest of the
    call is reported as lost bytes (the exchange is marked truncated)."""
    ring_buffer_bytes: int = 8 * 1024 * 1024
    """Kernel ring buffer shared by all CPUs (power of two, at least one page). When user space
    falls behind and it fills up, records are dropped and counted (`kernel_drops`)."""
    conn_table_size: int = 65536
    """Sockets tracked at once by the kernel side (LRU beyond that)."""
    queue_size: int = 65536
    """Events waiting between the capture thread and the processing thread; beyond that they
    are dropped and counted (`queue_drops`) rather than slowing the ring buffer's reader."""
    queue_max_bytes: int = 16 * 1024 * 1024
    """Payload bytes those waiting events may hold at most (the agent's memory under a flood);
    beyond that they are dropped and counted like a full queue."""
    output_queue_size: int = 10000
    """Exchanges waiting for a consumer when no sink callback is given (drops counted)."""
    poll_timeout_ms: int = 100
    """Longest wait for kernel records before the capture thread does its housekeeping."""
    tls: bool = True
    """Attach the OpenSSL uprobes (TLS plaintext)."""
    filter_pids: frozenset[int] | None = None
    """Capture only these processes (thread group ids); None: all."""
    filter_cgroup_ids: frozenset[int] | None = None
    """Capture only tasks in these cgroup v2 ids (a pod's containers); None: all."""
    filter_ports: frozenset[int] | None = None
    """Capture only connections whose service port (the peer's for clients, the local one for
    servers) is in the set; None: all."""
    capture_self: bool = False
    """Also capture the agent's own process (tests run their servers in-process)."""
    bind_window_ms: int = 250
    """How close in time, on one thread, a ciphertext call and an SSL call must be to tie the
    SSL object to that socket (runtimes with memory BIOs: Node.js, Python asyncio)."""
    rescan_interval_s: float = 30.0
    """Full scan of /proc/*/maps for new OpenSSL libraries and executables."""
    new_process_scan_delays_s: tuple[float, ...] = (0.3, 2.0, 10.0)
    """After a process execs, scan its maps this long after (libraries load late, on dlopen)."""
    libssl_paths: tuple[str, ...] = ()
    """Extra OpenSSL libraries or executables to attach to at start, beside those found."""
    seed_existing: bool = True
    """At start, track TCP connections that already exist (keep-alive pools, long streams)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Decoded body bytes kept per message; the rest is counted and the message is marked
    truncated."""
    idle_timeout_s: float = 900.0
    """A connection silent this long, with a request still unanswered, gives that request up
    as `response_missing`."""
    proc_root: str = "/proc"
    """Where the host's procfs is mounted (a DaemonSet usually mounts it at /host/proc)."""
    extra_cflags: tuple[str, ...] = field(default_factory=tuple)
    """Extra compiler flags for the BPF programs."""

    def validate(self) -> CaptureConfig:
        """Raise ValueError naming the first invalid key; return self when all are valid."""
        if not 64 <= self.max_payload_bytes <= 262144:
            raise ValueError("capture.max_payload_bytes must be between 64 and 262144")
        if not 1 <= self.max_pieces_per_call <= 64:
            raise ValueError("capture.max_pieces_per_call must be between 1 and 64")
        rb = self.ring_buffer_bytes
        if rb < PAGE_BYTES or rb & (rb - 1) or rb > 1 << 30:
            raise ValueError(
                "capture.ring_buffer_bytes must be a power of two between 4096 and 1 GiB"
            )
        if rb < 2 * (self.max_payload_bytes + 128):
            raise ValueError("capture.ring_buffer_bytes must hold at least two full records")
        if not 1024 <= self.conn_table_size <= 1 << 22:
            raise ValueError("capture.conn_table_size must be between 1024 and 4194304")
        if self.queue_size < 1:
            raise ValueError("capture.queue_size must be positive")
        if self.queue_max_bytes < self.max_payload_bytes:
            raise ValueError("capture.queue_max_bytes must hold at least one full record")
        if self.output_queue_size < 1:
            raise ValueError("capture.output_queue_size must be positive")
        if not 1 <= self.poll_timeout_ms <= 10000:
            raise ValueError("capture.poll_timeout_ms must be between 1 and 10000")
        if not 0 <= self.bind_window_ms <= 10000:
            raise ValueError("capture.bind_window_ms must be between 0 and 10000")
        if self.rescan_interval_s <= 0:
            raise ValueError("capture.rescan_interval_s must be positive")
        if any(d < 0 for d in self.new_process_scan_delays_s):
            raise ValueError("capture.new_process_scan_delays_s must not be negative")
        if self.max_body_bytes < 0:
            raise ValueError("capture.max_body_bytes must not be negative")
        if self.idle_timeout_s <= 0:
            raise ValueError("capture.idle_timeout_s must be positive")
        for port in self.filter_ports or ():
            if not 0 < port < 65536:
                raise ValueError("capture.filter_ports holds an invalid port")
        return self

    @classmethod
    def keys(cls) -> list[str]:
        """Every setting's name (for documentation and configuration loaders)."""
        return [f.name for f in fields(cls)]
