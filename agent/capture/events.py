"""Typed events decoded from the records of `ebpf/include/events.h`.

Takes the raw bytes of one ring-buffer record; gives one of `RawEvent` (bytes moved by one
call), `ConnOpenEvent`, `ConnCloseEvent`, `TlsBindEvent`, `TlsFreeEvent` or `ProcessEvent`, or
None for a record it does not understand. Pure: no eBPF, no I/O. The field tables below mirror
the C structs field by field; `tests/capture/test_event_layout.py` compiles the header and
checks every offset against them.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from agent.capture.exchange import Role
from agent.capture.sockets import SocketInfo

ABI_VERSION = 1

# event_header.kind
EV_DATA = 1
EV_CONN_OPEN = 2
EV_CONN_CLOSE = 3
EV_TLS_BIND = 4
EV_TLS_FREE = 5
EV_PROC_EXEC = 6
EV_PROC_EXIT = 7
EV_LIB_OPEN = 8
PATH_BYTES = 256

# event_header.flags
EVF_TRUNCATED = 0x01
EVF_TLS = 0x02
EVF_UNVERIFIED = 0x04
EVF_SEEDED = 0x08
EVF_LOSS = 0x10

# indexes of the kernel's per-CPU counters
CNT_RINGBUF_DROPS = 0
CNT_TRUNCATED = 1
CNT_CONNS_OPENED = 2
CNT_CONN_TABLE_FULL = 3
CNT_TLS_CIPHER = 4
CNT_READ_FAULTS = 5
CNT_MAX = 8

AF_INET = 2
AF_INET6 = 10


class Direction(IntEnum):
    """Which way the bytes went, seen from the traced process."""

    EGRESS = 0  # sent: write, send, SSL_write
    INGRESS = 1  # received: read, recv, SSL_read


class Op(IntEnum):
    """The call that moved the bytes (`data_event.op`)."""

    READ = 1
    WRITE = 2
    READV = 3
    WRITEV = 4
    SENDTO = 5
    RECVFROM = 6
    SENDMSG = 7
    RECVMSG = 8
    SSL_WRITE = 9
    SSL_READ = 10
    SSL_WRITE_EX = 11
    SSL_READ_EX = 12


class BindHow(IntEnum):
    """How an SSL object was tied to its socket (`tls_bind_event.how`)."""

    SET_FD = 1
    NESTED_CALL = 2
    THREAD_RECENT = 3


def _layout(fields: list[tuple[str, str]]) -> tuple[struct.Struct, dict[str, int]]:
    """A little-endian Struct for the fields, and each field's byte offset."""
    offsets: dict[str, int] = {}
    fmt = "<"
    for name, code in fields:
        offsets[name] = struct.calcsize(fmt)
        fmt += code
    return struct.Struct(fmt), offsets


HEADER_FIELDS = [
    ("mono_ns", "Q"),
    ("conn_id", "Q"),
    ("ssl_ptr", "Q"),
    ("cgroup_id", "Q"),
    ("pid", "I"),
    ("tid", "I"),
    ("fd", "i"),
    ("kind", "B"),
    ("direction", "B"),
    ("role", "B"),
    ("flags", "B"),
    ("comm", "16s"),
]
DATA_FIELDS = [
    ("len_bytes", "I"),
    ("cap_bytes", "I"),
    ("piece", "H"),
    ("op", "H"),
    ("_pad", "I"),
]
CONN_FIELDS = [
    ("family", "H"),
    ("peer_port", "H"),
    ("local_port", "H"),
    ("_pad", "H"),
    ("listen_fd", "i"),
    ("_pad2", "I"),
    ("peer_addr", "16s"),
    ("local_addr", "16s"),
]
BIND_FIELDS = [("how", "I"), ("_pad", "I")]

HEADER, HEADER_OFFSETS = _layout(HEADER_FIELDS)
DATA_TAIL, DATA_TAIL_OFFSETS = _layout(DATA_FIELDS)
CONN_TAIL, CONN_TAIL_OFFSETS = _layout(CONN_FIELDS)
BIND_TAIL, BIND_TAIL_OFFSETS = _layout(BIND_FIELDS)
DATA_PAYLOAD_OFFSET = HEADER.size + DATA_TAIL.size

# Offsets of every field as `struct.field`, for the layout test.
FIELD_OFFSETS: dict[str, int] = {
    **{f"event_header.{k}": v for k, v in HEADER_OFFSETS.items()},
    **{f"data_event.{k}": HEADER.size + v for k, v in DATA_TAIL_OFFSETS.items()},
    "data_event.payload": DATA_PAYLOAD_OFFSET,
    **{f"conn_event.{k}": HEADER.size + v for k, v in CONN_TAIL_OFFSETS.items()},
    **{f"tls_bind_event.{k}": HEADER.size + v for k, v in BIND_TAIL_OFFSETS.items()},
}
FIELD_OFFSETS["path_event.path"] = HEADER.size
STRUCT_SIZES: dict[str, int] = {
    "event_header": HEADER.size,
    "path_event": HEADER.size + PATH_BYTES,
    "conn_event": HEADER.size + CONN_TAIL.size,
    "tls_bind_event": HEADER.size + BIND_TAIL.size,
}


def wire_role(value: int) -> Role | None:
    """`ROLE_*` from the kernel as a `Role`, None when unknown."""
    if value == 1:
        return Role.CLIENT
    if value == 2:
        return Role.SERVER
    return None


def role_code(role: Role | None) -> int:
    """The inverse of `wire_role`."""
    if role is Role.CLIENT:
        return 1
    if role is Role.SERVER:
        return 2
    return 0


def format_addr(family: int, raw: bytes) -> str:
    """An address from a conn_event as text; IPv4-mapped IPv6 shown as IPv4; "" when unknown."""
    if family == AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == AF_INET6:
        addr = ipaddress.IPv6Address(raw[:16])
        return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)
    return ""


def _comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class RawEvent:
    """Bytes one call moved on one connection (or one piece of a large call).

    `payload` holds what was copied; `len_bytes` is how many bytes the piece stands for, so
    `lost_bytes` were not copied (payload cap, pieces cap, or a fault) and `truncated` is set.
    For TLS (`tls`), the payload is plaintext from OpenSSL and `conn_id` is 0 until the SSL
    object (`ssl_ptr`) is tied to its socket. `lost_before`: records or events of this stream
    were lost (ring buffer or queue full) between its previous one and this one.
    """

    mono_ns: int
    pid: int
    tid: int
    conn_id: int
    fd: int
    direction: Direction
    role: Role | None
    payload: bytes
    len_bytes: int
    truncated: bool
    tls: bool = False
    ssl_ptr: int = 0
    op: int = 0
    piece: int = 0
    cgroup_id: int = 0
    comm: str = ""
    lost_before: bool = False

    def stream_key(self) -> tuple[int, int, int]:
        """What identifies this record's stream: its connection, or (TLS) process and SSL
        object (the connection of a TLS stream may be learnt later)."""
        return (self.pid, 0, self.ssl_ptr) if self.tls else (0, self.conn_id, 0)

    @property
    def lost_bytes(self) -> int:
        """Bytes of this piece that went by without being copied."""
        return max(0, self.len_bytes - len(self.payload))


@dataclass(frozen=True, slots=True)
class ConnOpenEvent:
    """A TCP connection started being tracked: the process connected (client) or accepted."""

    mono_ns: int
    pid: int
    tid: int
    conn_id: int
    fd: int
    role: Role | None
    family: int
    peer_addr: str
    peer_port: int
    local_addr: str = ""
    local_port: int = 0
    unverified: bool = False
    seeded: bool = False
    cgroup_id: int = 0
    comm: str = ""
    socket: SocketInfo | None = None  # what user space found the socket to be, when it looked
    listen_fd: int = -1  # server: the listening socket it came from


@dataclass(frozen=True, slots=True)
class ConnCloseEvent:
    """The tracked socket was closed."""

    mono_ns: int
    pid: int
    tid: int
    conn_id: int
    fd: int
    role: Role | None = None


@dataclass(frozen=True, slots=True)
class TlsBindEvent:
    """The SSL object `ssl_ptr` of process `pid` moves its ciphertext over connection `conn_id`."""

    mono_ns: int
    pid: int
    tid: int
    conn_id: int
    ssl_ptr: int
    fd: int
    role: Role | None
    how: int


@dataclass(frozen=True, slots=True)
class TlsFreeEvent:
    """SSL_free on an SSL object that carried data: its stream is over."""

    mono_ns: int
    pid: int
    tid: int
    conn_id: int
    ssl_ptr: int


@dataclass(frozen=True, slots=True)
class ProcessEvent:
    """A process called exec, or a process that owned tracked state exited."""

    mono_ns: int
    pid: int
    tid: int
    exited: bool
    comm: str = ""


@dataclass(frozen=True, slots=True)
class LibraryOpenEvent:
    """A process opened a file named like libssl (`path` as it named it, from its root)."""

    mono_ns: int
    pid: int
    tid: int
    path: str


CaptureEvent = (
    RawEvent
    | ConnOpenEvent
    | ConnCloseEvent
    | TlsBindEvent
    | TlsFreeEvent
    | ProcessEvent
    | LibraryOpenEvent
)


def decode(record: bytes) -> CaptureEvent | None:
    """One ring-buffer record as a typed event; None when it is short or of an unknown kind."""
    if len(record) < HEADER.size:
        return None
    (mono_ns, conn_id, ssl_ptr, cgroup_id, pid, tid, fd, kind, direction, role, flags, comm_raw) = (
        HEADER.unpack_from(record, 0)
    )
    if kind == EV_DATA:
        if len(record) < DATA_PAYLOAD_OFFSET:
            return None
        len_bytes, cap_bytes, piece, op, _ = DATA_TAIL.unpack_from(record, HEADER.size)
        payload = bytes(record[DATA_PAYLOAD_OFFSET : DATA_PAYLOAD_OFFSET + cap_bytes])
        return RawEvent(
            mono_ns=mono_ns,
            pid=pid,
            tid=tid,
            conn_id=conn_id,
            fd=fd,
            direction=Direction.INGRESS if direction == 1 else Direction.EGRESS,
            role=wire_role(role),
            payload=payload,
            len_bytes=max(len_bytes, len(payload)),
            truncated=bool(flags & EVF_TRUNCATED) or len(payload) < len_bytes,
            tls=bool(flags & EVF_TLS),
            ssl_ptr=ssl_ptr,
            op=op,
            piece=piece,
            cgroup_id=cgroup_id,
            comm=_comm(comm_raw),
            lost_before=bool(flags & EVF_LOSS),
        )
    if kind == EV_CONN_OPEN:
        if len(record) < HEADER.size + CONN_TAIL.size:
            return None
        (family, peer_port, local_port, _, listen_fd, _, peer_raw, local_raw) = (
            CONN_TAIL.unpack_from(record, HEADER.size)
        )
        return ConnOpenEvent(
            mono_ns=mono_ns,
            pid=pid,
            tid=tid,
            conn_id=conn_id,
            fd=fd,
            role=wire_role(role),
            family=family,
            peer_addr=format_addr(family, peer_raw),
            peer_port=peer_port,
            local_addr=format_addr(family, local_raw) if any(local_raw) else "",
            local_port=local_port,
            unverified=bool(flags & EVF_UNVERIFIED),
            seeded=bool(flags & EVF_SEEDED),
            cgroup_id=cgroup_id,
            comm=_comm(comm_raw),
            listen_fd=listen_fd,
        )
    if kind == EV_CONN_CLOSE:
        return ConnCloseEvent(mono_ns, pid, tid, conn_id, fd, wire_role(role))
    if kind == EV_TLS_BIND:
        if len(record) < HEADER.size + BIND_TAIL.size:
            return None
        how, _ = BIND_TAIL.unpack_from(record, HEADER.size)
        return TlsBindEvent(mono_ns, pid, tid, conn_id, ssl_ptr, fd, wire_role(role), how)
    if kind == EV_TLS_FREE:
        return TlsFreeEvent(mono_ns, pid, tid, conn_id, ssl_ptr)
    if kind == EV_LIB_OPEN:
        raw = record[HEADER.size : HEADER.size + PATH_BYTES]
        path = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        return LibraryOpenEvent(mono_ns, pid, tid, path)
    if kind in (EV_PROC_EXEC, EV_PROC_EXIT):
        return ProcessEvent(mono_ns, pid, tid, exited=kind == EV_PROC_EXIT, comm=_comm(comm_raw))
    return None


def encode_header(
    kind: int,
    *,
    mono_ns: int = 0,
    conn_id: int = 0,
    ssl_ptr: int = 0,
    cgroup_id: int = 0,
    pid: int = 0,
    tid: int = 0,
    fd: int = -1,
    direction: int = 0,
    role: int = 0,
    flags: int = 0,
    comm: bytes = b"",
) -> bytes:
    """An event_header as the kernel lays it out (for records made in user space and tests)."""
    return HEADER.pack(
        mono_ns,
        conn_id,
        ssl_ptr,
        cgroup_id,
        pid,
        tid,
        fd,
        kind,
        direction,
        role,
        flags,
        comm[:16].ljust(16, b"\0"),
    )
