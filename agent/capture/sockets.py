"""What a process's socket is: family, type, local and peer address.

Takes a (pid, fd) pair or a pid; gives `SocketInfo`. The kernel side learns a connection's peer
from connect()/accept() arguments but not its local address (that needs kernel structs, which
the headers bcc compiles against may lay out wrongly on this kernel). `resolve_socket` borrows
the descriptor with pidfd_getfd(2) for the duration of getsockname/getsockopt calls, and falls
back to procfs (`/proc/<pid>/net/tcp*` by socket inode). `existing_tcp_connections` lists the
established TCP sockets of a process, for tracking connections opened before the agent started.
Reads procfs and borrows descriptors; changes nothing in the target process.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from agent.capture.exchange import Role

_SYS_PIDFD_OPEN = 434
_SYS_PIDFD_GETFD = 438
_TCP_ESTABLISHED = 0x01
_TCP_LISTEN = 0x0A

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """Addresses and kind of one socket ("" / 0 where unknown)."""

    family: int
    type: int
    protocol: int
    local_addr: str
    local_port: int
    peer_addr: str
    peer_port: int

    @property
    def is_tcp(self) -> bool:
        """An IPv4/IPv6 stream socket speaking TCP (MPTCP included)."""
        return (
            self.family in (socket.AF_INET, socket.AF_INET6)
            and self.type == socket.SOCK_STREAM
            and self.protocol in (0, socket.IPPROTO_TCP, 262)
        )


def _normalize(addr: str) -> str:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _borrow_fd(pid: int, fd: int) -> int:
    pidfd = int(_syscall(_SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0)))
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open failed")
    try:
        dup = int(
            _syscall(_SYS_PIDFD_GETFD, ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0))
        )
        if dup < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd failed")
        return dup
    finally:
        os.close(pidfd)


def _resolve_borrowed(pid: int, fd: int) -> SocketInfo | None:
    try:
        dup = _borrow_fd(pid, fd)
    except OSError:
        return None
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None
    try:
        family = sock.family
        stype = sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        proto = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
        local_addr, local_port = "", 0
        peer_addr, peer_port = "", 0
        if family in (socket.AF_INET, socket.AF_INET6):
            local = sock.getsockname()
            local_addr, local_port = _normalize(str(local[0])), int(local[1])
            try:
                peer = sock.getpeername()
                peer_addr, peer_port = _normalize(str(peer[0])), int(peer[1])
            except OSError as exc:
                if exc.errno != errno.ENOTCONN:
                    raise
        return SocketInfo(
            int(family), int(stype), int(proto), local_addr, local_port, peer_addr, peer_port
        )
    except OSError:
        return None
    finally:
        # detach() then close the number ourselves: closing the socket object could run
        # shutdown-like logic in some Python versions; a plain close of the duplicate cannot.
        os.close(sock.detach())


def _socket_inode(proc_root: str, pid: int, fd: int) -> int | None:
    try:
        target = os.readlink(f"{proc_root}/{pid}/fd/{fd}")
    except OSError:
        return None
    if target.startswith("socket:[") and target.endswith("]"):
        return int(target[8:-1])
    return None


def _hex_addr(text: str) -> tuple[str, int]:
    addr_hex, port_hex = text.split(":")
    raw = bytes.fromhex(addr_hex)
    if len(raw) == 4:
        addr = str(ipaddress.IPv4Address(raw[::-1]))
    else:
        # /proc prints IPv6 as four host-order 32-bit words.
        words = struct.unpack("<4I", raw)
        addr = _normalize(str(ipaddress.IPv6Address(struct.pack(">4I", *words))))
    return addr, int(port_hex, 16)


@dataclass(frozen=True, slots=True)
class _ProcTcpRow:
    family: int
    local_addr: str
    local_port: int
    peer_addr: str
    peer_port: int
    state: int


def _proc_tcp_table(proc_root: str, pid: int) -> dict[int, _ProcTcpRow]:
    """inode -> row, from the TCP tables of the network namespace `pid` lives in."""
    rows: dict[int, _ProcTcpRow] = {}
    for name, family in (("tcp", int(socket.AF_INET)), ("tcp6", int(socket.AF_INET6))):
        try:
            with open(f"{proc_root}/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 10:
                        continue
                    local = _hex_addr(parts[1])
                    peer = _hex_addr(parts[2])
                    rows[int(parts[9])] = _ProcTcpRow(
                        family, local[0], local[1], peer[0], peer[1], int(parts[3], 16)
                    )
        except (OSError, ValueError):
            continue
    return rows


def resolve_socket(pid: int, fd: int, proc_root: str = "/proc") -> SocketInfo | None:
    """Family, type and addresses of socket `fd` of process `pid`; None when it is gone."""
    info = _resolve_borrowed(pid, fd)
    if info is not None:
        return info
    inode = _socket_inode(proc_root, pid, fd)
    if inode is None:
        return None
    row = _proc_tcp_table(proc_root, pid).get(inode)
    if row is None:
        return None
    return SocketInfo(
        row.family,
        int(socket.SOCK_STREAM),
        int(socket.IPPROTO_TCP),
        row.local_addr,
        row.local_port,
        row.peer_addr,
        row.peer_port,
    )


@dataclass(frozen=True, slots=True)
class ExistingConnection:
    """An established TCP connection found in a process at start."""

    pid: int
    fd: int
    role: Role
    info: SocketInfo


def existing_tcp_connections(pid: int, proc_root: str = "/proc") -> list[ExistingConnection]:
    """Established TCP sockets of `pid`; the role is server when the local port is listened on
    in the same network namespace, client otherwise."""
    try:
        fds = os.listdir(f"{proc_root}/{pid}/fd")
    except OSError:
        return []
    inodes: dict[int, int] = {}
    for name in fds:
        if not name.isdigit():
            continue
        inode = _socket_inode(proc_root, pid, int(name))
        if inode is not None:
            inodes[inode] = int(name)
    if not inodes:
        return []
    table = _proc_tcp_table(proc_root, pid)
    listening = {row.local_port for row in table.values() if row.state == _TCP_LISTEN}
    found: list[ExistingConnection] = []
    for inode, fd in sorted(inodes.items(), key=lambda kv: kv[1]):
        row = table.get(inode)
        if row is None or row.state != _TCP_ESTABLISHED:
            continue
        role = Role.SERVER if row.local_port in listening else Role.CLIENT
        info = SocketInfo(
            row.family,
            int(socket.SOCK_STREAM),
            int(socket.IPPROTO_TCP),
            row.local_addr,
            row.local_port,
            row.peer_addr,
            row.peer_port,
        )
        found.append(ExistingConnection(pid, fd, role, info))
    return found
