"""Connection tracking on synthetic kernel events: plaintext, TLS binding, filters, exits."""

from __future__ import annotations

import socket

from agent.capture.events import (
    ConnCloseEvent,
    ConnOpenEvent,
    Direction,
    ProcessEvent,
    RawEvent,
    TlsBindEvent,
    TlsFreeEvent,
)
from agent.capture.exchange import Role
from agent.capture.sockets import SocketInfo
from agent.capture.tracker import ConnectionTracker

REQ = b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"
H2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def opened(
    conn_id: int,
    pid: int = 100,
    fd: int = 5,
    role: Role = Role.CLIENT,
    peer_port: int = 8000,
    sock: SocketInfo | None = None,
) -> ConnOpenEvent:
    return ConnOpenEvent(
        mono_ns=1,
        pid=pid,
        tid=pid,
        conn_id=conn_id,
        fd=fd,
        role=role,
        family=socket.AF_INET,
        peer_addr="10.0.0.9",
        peer_port=peer_port,
        comm="app",
        socket=sock,
    )


def data(
    conn_id: int,
    direction: Direction,
    payload: bytes,
    t: int,
    *,
    pid: int = 100,
    fd: int = 5,
    tls: bool = False,
    ssl: int = 0,
    lost: int = 0,
) -> RawEvent:
    return RawEvent(
        mono_ns=t,
        pid=pid,
        tid=pid,
        conn_id=conn_id,
        fd=fd,
        direction=direction,
        role=None,
        payload=payload,
        len_bytes=len(payload) + lost,
        truncated=lost > 0,
        tls=tls,
        ssl_ptr=ssl,
        comm="app",
    )


def test_plaintext_connection_to_exchange_with_addresses() -> None:
    tr = ConnectionTracker()
    tcp = SocketInfo(socket.AF_INET, socket.SOCK_STREAM, 6, "10.0.0.1", 40000, "10.0.0.9", 8000)
    assert tr.handle(opened(1, sock=tcp)) == []
    assert tr.handle(data(1, Direction.EGRESS, REQ, 10)) == []
    out = tr.handle(data(1, Direction.INGRESS, RESP, 20))
    assert len(out) == 1
    c = out[0].conn
    assert (c.pid, c.role, c.comm, c.tls) == (100, Role.CLIENT, "app", False)
    assert (c.local_addr, c.local_port, c.peer_addr, c.peer_port) == (
        "10.0.0.1",
        40000,
        "10.0.0.9",
        8000,
    )
    assert tr.handle(ConnCloseEvent(30, 100, 100, 1, 5)) == []
    assert tr.open_connections == 0
    assert (tr.counters.exchanges, tr.counters.connections_closed) == (1, 1)


def test_close_gives_missing_response() -> None:
    tr = ConnectionTracker()
    tr.handle(opened(1))
    tr.handle(data(1, Direction.EGRESS, REQ, 10))
    out = tr.handle(ConnCloseEvent(30, 100, 100, 1, 5))
    assert [e.response_missing for e in out] == [True]
    assert tr.counters.responses_missing == 1


def test_tls_stream_bound_after_its_first_record() -> None:
    tr = ConnectionTracker()
    tr.handle(opened(7, role=Role.CLIENT))
    # A memory-BIO runtime: the request's plaintext comes before the kernel ties the SSL object.
    assert tr.handle(data(0, Direction.EGRESS, REQ, 10, tls=True, ssl=0xAA)) == []
    tr.handle(TlsBindEvent(11, 100, 100, 7, 0xAA, 5, Role.CLIENT, 3))
    out = tr.handle(data(7, Direction.INGRESS, RESP, 20, tls=True, ssl=0xAA))
    assert len(out) == 1
    c = out[0].conn
    assert c.tls
    assert (c.peer_port, c.role) == (8000, Role.CLIENT)
    assert out[0].response_body == b"done"
    assert (tr.counters.tls_streams, tr.counters.tls_bindings) == (1, 1)


def test_unbound_tls_infers_its_role_and_is_dropped_under_a_port_filter() -> None:
    tr = ConnectionTracker()
    tr.handle(data(0, Direction.INGRESS, REQ, 10, tls=True, ssl=0xBB))
    out = tr.handle(data(0, Direction.EGRESS, RESP, 20, tls=True, ssl=0xBB))
    assert [e.conn.role for e in out] == [Role.SERVER]
    filtered = ConnectionTracker(port_filter=frozenset({443}))
    filtered.handle(data(0, Direction.INGRESS, REQ, 10, tls=True, ssl=0xBB))
    assert filtered.handle(data(0, Direction.EGRESS, RESP, 20, tls=True, ssl=0xBB)) == []
    assert filtered.counters.unbound_tls_dropped == 1


def test_ssl_pointer_reused_for_another_connection_finishes_the_old_stream() -> None:
    tr = ConnectionTracker()
    tr.handle(opened(1, fd=5))
    tr.handle(opened(2, fd=6, peer_port=9000))
    tr.handle(TlsBindEvent(1, 100, 100, 1, 0xCC, 5, Role.CLIENT, 1))
    tr.handle(data(1, Direction.EGRESS, REQ, 10, tls=True, ssl=0xCC, fd=5))
    out = tr.handle(TlsBindEvent(12, 100, 100, 2, 0xCC, 6, Role.CLIENT, 1))
    assert [e.response_missing for e in out] == [True]
    tr.handle(data(2, Direction.EGRESS, REQ, 20, tls=True, ssl=0xCC, fd=6))
    out = tr.handle(data(2, Direction.INGRESS, RESP, 30, tls=True, ssl=0xCC, fd=6))
    assert [e.conn.peer_port for e in out] == [9000]


def test_tls_free_and_close_finish_streams() -> None:
    tr = ConnectionTracker()
    tr.handle(opened(1))
    tr.handle(TlsBindEvent(1, 100, 100, 1, 0xDD, 5, Role.CLIENT, 2))
    tr.handle(data(1, Direction.EGRESS, REQ, 10, tls=True, ssl=0xDD))
    out = tr.handle(TlsFreeEvent(20, 100, 100, 1, 0xDD))
    assert [e.response_missing for e in out] == [True]
    assert tr.open_tls_streams == 0


def test_rejected_socket_is_untracked_and_its_data_ignored() -> None:
    untracked: list[tuple[int, int]] = []
    tr = ConnectionTracker(untrack=lambda pid, fd: untracked.append((pid, fd)))
    udp = SocketInfo(socket.AF_INET, socket.SOCK_DGRAM, 17, "0.0.0.0", 5353, "", 0)
    tr.handle(opened(4, fd=9, sock=udp))
    assert untracked == [(100, 9)]
    assert tr.handle(data(4, Direction.EGRESS, REQ, 10, fd=9)) == []
    assert tr.open_connections == 0
    assert tr.counters.connections_rejected == 1


def test_port_filter_applies_to_the_service_port() -> None:
    untracked: list[tuple[int, int]] = []
    tr = ConnectionTracker(
        port_filter=frozenset({8000}), untrack=lambda pid, fd: untracked.append((pid, fd))
    )
    tr.handle(opened(1, peer_port=8000))
    tr.handle(opened(2, fd=6, peer_port=5432))
    srv = SocketInfo(socket.AF_INET, socket.SOCK_STREAM, 6, "10.0.0.1", 8000, "10.0.0.7", 5555)
    tr.handle(opened(3, fd=7, role=Role.SERVER, peer_port=5555, sock=srv))
    assert tr.open_connections == 2
    assert untracked == [(100, 6)]


def test_process_exit_finishes_and_untracks_everything_of_the_pid() -> None:
    untracked: list[tuple[int, int]] = []
    forgotten: list[tuple[int, int]] = []
    tr = ConnectionTracker(
        untrack=lambda p, f: untracked.append((p, f)),
        forget_ssl=lambda p, s: forgotten.append((p, s)),
    )
    tr.handle(opened(1, fd=5))
    tr.handle(opened(2, fd=6, pid=200))
    tr.handle(data(1, Direction.EGRESS, REQ, 10))
    tr.handle(data(0, Direction.EGRESS, REQ, 11, tls=True, ssl=0xEE))
    out = tr.handle(ProcessEvent(50, 100, 100, exited=True))
    assert sorted(e.conn.tls for e in out) == [False, True]
    assert untracked == [(100, 5)]
    assert forgotten == [(100, 0xEE)]
    assert tr.open_connections == 1
    assert tr.known_fds(200) == [6]


def test_fd_reuse_with_a_missed_close() -> None:
    tr = ConnectionTracker()
    tr.handle(opened(1, fd=5))
    tr.handle(data(1, Direction.EGRESS, REQ, 10))
    out = tr.handle(opened(2, fd=5))
    assert [e.response_missing for e in out] == [True]
    assert tr.open_connections == 1


def test_data_for_a_connection_whose_open_was_lost() -> None:
    tr = ConnectionTracker()
    tr.handle(data(8, Direction.EGRESS, REQ, 10))
    out = tr.handle(data(8, Direction.INGRESS, RESP, 20))
    assert len(out) == 1
    assert tr.counters.data_for_unknown_connection == 1


def test_http2_counted_once_per_connection_and_lost_bytes_counted() -> None:
    tr = ConnectionTracker()
    tr.handle(opened(1))
    tr.handle(data(1, Direction.EGRESS, H2, 10))
    tr.handle(data(1, Direction.EGRESS, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", 11, lost=100))
    tr.handle(ConnCloseEvent(30, 100, 100, 1, 5))
    assert tr.counters.http2_connections == 1
    assert tr.counters.bytes_lost == 100
    assert tr.counters.non_http_connections == 0


def test_sweep_and_close_all() -> None:
    tr = ConnectionTracker()
    tr.handle(opened(1))
    tr.handle(data(1, Direction.EGRESS, REQ, 10))
    assert tr.sweep(100, idle_ns=1_000) == []
    assert [e.response_missing for e in tr.sweep(5_000, idle_ns=1_000)] == [True]
    tr.handle(data(1, Direction.EGRESS, REQ, 6_000))
    assert [e.response_missing for e in tr.close_all(7_000)] == [True]
    assert tr.open_connections == 0
