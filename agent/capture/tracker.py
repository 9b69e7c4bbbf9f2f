"""Connection tracking: capture events in, `HttpExchange`s out.

Takes decoded events (`agent.capture.events`) in ring-buffer order; keeps one
`HttpConnection` per plaintext connection (by the kernel's conn_id) and one per TLS stream (by
process and SSL object), ties TLS streams to their connections when the kernel reports the
binding, finishes connections on close and on process exit, and gives the completed exchanges.
Optional hooks resolve a socket's local address and type (`resolver`) and tell the kernel side
to stop tracking a socket that turned out not to be TCP or not wanted (`untrack`). Counts what
it saw in `TrackerCounters`. No threads and no eBPF: tests drive it with synthetic events.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agent.capture.events import (
    CaptureEvent,
    ConnCloseEvent,
    ConnOpenEvent,
    ProcessEvent,
    RawEvent,
    TlsBindEvent,
    TlsFreeEvent,
)
from agent.capture.exchange import ConnectionInfo, HttpExchange, Role
from agent.capture.reassembly import HttpConnection
from agent.capture.sockets import SocketInfo

Resolver = Callable[[int, int], SocketInfo | None]
Untrack = Callable[[int, int], None]
ForgetSsl = Callable[[int, int], None]

_MAX_REJECTED = 65536


@dataclass
class TrackerCounters:
    """What the tracker saw (monotonic counts)."""

    events: int = 0
    data_events: int = 0
    bytes_captured: int = 0
    bytes_lost: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    connections_rejected: int = 0  # not TCP, or excluded by the port filter, once resolved
    tls_streams: int = 0
    tls_bindings: int = 0
    exchanges: int = 0
    exchanges_truncated: int = 0
    responses_missing: int = 0
    http2_connections: int = 0
    non_http_connections: int = 0
    orphan_responses: int = 0
    unbound_tls_dropped: int = 0
    data_for_unknown_connection: int = 0
    losses: int = 0  # records marked as following lost ones: pairing restarted there


@dataclass
class _Conn:
    conn_id: int
    pid: int
    fd: int
    info: ConnectionInfo
    http: HttpConnection
    ssl_keys: set[tuple[int, int]] = dataclasses.field(default_factory=set)
    saw_data: bool = False
    h2_counted: bool = False


@dataclass
class _TlsStream:
    key: tuple[int, int]
    info: ConnectionInfo
    http: HttpConnection
    conn_id: int = 0
    saw_data: bool = False
    h2_counted: bool = False


class ConnectionTracker:
    """Turns the event stream of one node into HTTP exchanges."""

    def __init__(
        self,
        *,
        max_body_bytes: int = 8 * 1024 * 1024,
        resolver: Resolver | None = None,
        untrack: Untrack | None = None,
        forget_ssl: ForgetSsl | None = None,
        port_filter: frozenset[int] | None = None,
    ) -> None:
        self.counters = TrackerCounters()
        self._max_body = max_body_bytes
        self._resolver = resolver
        self._untrack = untrack
        self._forget_ssl = forget_ssl
        self._ports = port_filter
        self._conns: dict[int, _Conn] = {}
        self._by_fd: dict[tuple[int, int], int] = {}
        self._tls: dict[tuple[int, int], _TlsStream] = {}
        self._pid_conns: dict[int, set[int]] = {}
        self._pid_tls: dict[int, set[tuple[int, int]]] = {}
        # Connections we told the kernel to drop: records already in flight still arrive.
        self._rejected: OrderedDict[int, None] = OrderedDict()

    # -- public ----------------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Connections being tracked now."""
        return len(self._conns)

    @property
    def open_tls_streams(self) -> int:
        """TLS streams being tracked now."""
        return len(self._tls)

    def handle(self, event: CaptureEvent) -> list[HttpExchange]:
        """Apply one event; the exchanges it completed."""
        self.counters.events += 1
        if isinstance(event, RawEvent):
            return self._on_data(event)
        if isinstance(event, ConnOpenEvent):
            return self._on_open(event)
        if isinstance(event, ConnCloseEvent):
            self._rejected.pop(event.conn_id, None)
            return self._on_close(event.conn_id, event.mono_ns, untrack=False)
        if isinstance(event, TlsBindEvent):
            return self._on_bind(event)
        if isinstance(event, TlsFreeEvent):
            return self._finish_tls((event.pid, event.ssl_ptr), event.mono_ns)
        if isinstance(event, ProcessEvent) and event.exited:
            return self._on_exit(event.pid, event.mono_ns)
        return []

    def sweep(self, now_mono_ns: int, idle_ns: int) -> list[HttpExchange]:
        """Give up requests on connections silent for `idle_ns` (they stay tracked)."""
        out: list[HttpExchange] = []
        for conn in list(self._conns.values()):
            out.extend(self._count(conn.http.expire(now_mono_ns, idle_ns)))
        for stream in list(self._tls.values()):
            out.extend(
                self._count(self._keep_tls(stream, stream.http.expire(now_mono_ns, idle_ns)))
            )
        return out

    def close_all(self, mono_ns: int) -> list[HttpExchange]:
        """Finish everything (the agent is stopping)."""
        out: list[HttpExchange] = []
        for key in list(self._tls):
            out.extend(self._finish_tls(key, mono_ns))
        for conn_id in list(self._conns):
            out.extend(self._on_close(conn_id, mono_ns, untrack=False))
        return out

    def known_fds(self, pid: int) -> list[int]:
        """The fds of `pid` tracked now."""
        return [self._conns[c].fd for c in self._pid_conns.get(pid, ()) if c in self._conns]

    # -- events ----------------------------------------------------------------------------

    def _new_http(self, info: ConnectionInfo, role: Role | None) -> HttpConnection:
        return HttpConnection(info, role, max_body_bytes=self._max_body)

    def _on_open(self, ev: ConnOpenEvent) -> list[HttpExchange]:
        out: list[HttpExchange] = []
        old = self._by_fd.get((ev.pid, ev.fd))
        if old is not None and old != ev.conn_id:
            # The fd was reused and we missed its close (a dropped record).
            out.extend(self._on_close(old, ev.mono_ns, untrack=False))
        info = ConnectionInfo(
            pid=ev.pid,
            tid=ev.tid,
            comm=ev.comm,
            role=ev.role or Role.CLIENT,
            local_addr=ev.local_addr,
            local_port=ev.local_port,
            peer_addr=ev.peer_addr,
            peer_port=ev.peer_port,
            cgroup_id=ev.cgroup_id,
        )
        sock = ev.socket
        if sock is None and self._resolver is not None and not ev.seeded:
            sock = self._resolver(ev.pid, ev.fd)
        if sock is not None:
            if not sock.is_tcp:
                return out + self._reject(ev)
            info.local_addr = sock.local_addr or info.local_addr
            info.local_port = sock.local_port or info.local_port
            info.peer_addr = info.peer_addr or sock.peer_addr
            info.peer_port = info.peer_port or sock.peer_port
        if self._ports is not None:
            service = info.local_port if ev.role is Role.SERVER else info.peer_port
            if service and service not in self._ports:
                return out + self._reject(ev)
        conn = _Conn(ev.conn_id, ev.pid, ev.fd, info, self._new_http(info, ev.role))
        self._conns[ev.conn_id] = conn
        self._by_fd[(ev.pid, ev.fd)] = ev.conn_id
        self._pid_conns.setdefault(ev.pid, set()).add(ev.conn_id)
        self.counters.connections_opened += 1
        return out

    def _reject(self, ev: ConnOpenEvent) -> list[HttpExchange]:
        self.counters.connections_rejected += 1
        self._rejected[ev.conn_id] = None
        if len(self._rejected) > _MAX_REJECTED:
            self._rejected.popitem(last=False)
        if self._untrack is not None:
            self._untrack(ev.pid, ev.fd)
        return []

    def _on_data(self, ev: RawEvent) -> list[HttpExchange]:
        self.counters.data_events += 1
        self.counters.bytes_captured += len(ev.payload)
        self.counters.bytes_lost += ev.lost_bytes
        if ev.tls:
            stream = self._tls_stream(ev.pid, ev.ssl_ptr, ev.tid, ev.comm, ev.cgroup_id)
            if ev.conn_id and not stream.conn_id:
                self._attach(stream, ev.conn_id)
            stream.saw_data = True
            done = self._lose(stream.http, ev)
            done += stream.http.feed(ev.direction, ev.payload, ev.mono_ns, ev.lost_bytes)
            if stream.http.http2 and not stream.h2_counted:
                stream.h2_counted = True
                self.counters.http2_connections += 1
            return self._count(self._keep_tls(stream, done))
        conn = self._conns.get(ev.conn_id)
        if conn is None:
            if ev.conn_id in self._rejected:
                return []
            # Its open record was dropped: track it with what this record tells.
            self.counters.data_for_unknown_connection += 1
            info = ConnectionInfo(
                pid=ev.pid,
                tid=ev.tid,
                comm=ev.comm,
                role=ev.role or Role.CLIENT,
                cgroup_id=ev.cgroup_id,
            )
            conn = _Conn(ev.conn_id, ev.pid, ev.fd, info, self._new_http(info, ev.role))
            self._conns[ev.conn_id] = conn
            self._by_fd[(ev.pid, ev.fd)] = ev.conn_id
            self._pid_conns.setdefault(ev.pid, set()).add(ev.conn_id)
        conn.saw_data = True
        done = self._lose(conn.http, ev)
        done += conn.http.feed(ev.direction, ev.payload, ev.mono_ns, ev.lost_bytes)
        if conn.http.http2 and not conn.h2_counted:
            conn.h2_counted = True
            self.counters.http2_connections += 1
        return self._count(done)

    def _lose(self, http: HttpConnection, ev: RawEvent) -> list[HttpExchange]:
        """Records of this stream went missing before `ev`: restart its pairing."""
        if not ev.lost_before:
            return []
        self.counters.losses += 1
        return http.lose(ev.mono_ns)

    def _tls_stream(self, pid: int, ssl: int, tid: int, comm: str, cgroup_id: int) -> _TlsStream:
        key = (pid, ssl)
        stream = self._tls.get(key)
        if stream is None:
            info = ConnectionInfo(pid=pid, tid=tid, comm=comm, tls=True, cgroup_id=cgroup_id)
            stream = _TlsStream(key, info, self._new_http(info, None))
            self._tls[key] = stream
            self._pid_tls.setdefault(pid, set()).add(key)
            self.counters.tls_streams += 1
        return stream

    def _attach(self, stream: _TlsStream, conn_id: int) -> None:
        stream.conn_id = conn_id
        conn = self._conns.get(conn_id)
        if conn is None:
            return
        conn.ssl_keys.add(stream.key)
        src = conn.info
        info = stream.info
        info.local_addr, info.local_port = src.local_addr, src.local_port
        info.peer_addr, info.peer_port = src.peer_addr, src.peer_port
        info.cgroup_id = src.cgroup_id or info.cgroup_id
        if stream.http.role is None:
            stream.http.role = src.role
            info.role = src.role
        else:
            info.role = stream.http.role

    def _on_bind(self, ev: TlsBindEvent) -> list[HttpExchange]:
        self.counters.tls_bindings += 1
        key = (ev.pid, ev.ssl_ptr)
        out: list[HttpExchange] = []
        stream = self._tls.get(key)
        if stream is not None and stream.conn_id and stream.conn_id != ev.conn_id:
            # The SSL pointer now serves another connection: the old stream is over.
            out.extend(self._finish_tls(key, ev.mono_ns, forget=False))
            stream = None
        if stream is None:
            conn = self._conns.get(ev.conn_id)
            stream = self._tls_stream(
                ev.pid,
                ev.ssl_ptr,
                ev.tid,
                conn.info.comm if conn else "",
                conn.info.cgroup_id if conn else 0,
            )
        self._attach(stream, ev.conn_id)
        return out

    def _keep_tls(self, stream: _TlsStream, done: list[HttpExchange]) -> list[HttpExchange]:
        """Under a port filter an SSL stream never tied to a socket cannot be checked: drop."""
        if self._ports is None or stream.conn_id:
            return done
        self.counters.unbound_tls_dropped += len(done)
        return []

    def _finish_tls(
        self, key: tuple[int, int], mono_ns: int, *, forget: bool = False
    ) -> list[HttpExchange]:
        stream = self._tls.pop(key, None)
        if stream is None:
            return []
        self._pid_tls.get(key[0], set()).discard(key)
        conn = self._conns.get(stream.conn_id)
        if conn is not None:
            conn.ssl_keys.discard(key)
        if forget and self._forget_ssl is not None:
            self._forget_ssl(key[0], key[1])
        self._note_kind(stream.http, stream.saw_data)
        return self._count(self._keep_tls(stream, stream.http.close(mono_ns)))

    def _on_close(self, conn_id: int, mono_ns: int, *, untrack: bool) -> list[HttpExchange]:
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return []
        if self._by_fd.get((conn.pid, conn.fd)) == conn_id:
            del self._by_fd[(conn.pid, conn.fd)]
        self._pid_conns.get(conn.pid, set()).discard(conn_id)
        self.counters.connections_closed += 1
        out: list[HttpExchange] = []
        for key in list(conn.ssl_keys):
            out.extend(self._finish_tls(key, mono_ns, forget=untrack))
        if untrack and self._untrack is not None:
            self._untrack(conn.pid, conn.fd)
        self._note_kind(conn.http, conn.saw_data and not conn.ssl_keys)
        out.extend(self._count(conn.http.close(mono_ns)))
        return out

    def _on_exit(self, pid: int, mono_ns: int) -> list[HttpExchange]:
        out: list[HttpExchange] = []
        for key in list(self._pid_tls.pop(pid, set())):
            out.extend(self._finish_tls(key, mono_ns, forget=True))
        for conn_id in list(self._pid_conns.pop(pid, set())):
            out.extend(self._on_close(conn_id, mono_ns, untrack=True))
        return out

    def _note_kind(self, http: HttpConnection, saw_data: bool) -> None:
        if saw_data and not http.http2 and not http.is_http and not http.upgraded:
            self.counters.non_http_connections += 1
        self.counters.orphan_responses += http.orphan_responses

    def _count(self, done: list[HttpExchange]) -> list[HttpExchange]:
        for ex in done:
            self.counters.exchanges += 1
            if ex.request_truncated or ex.response_truncated:
                self.counters.exchanges_truncated += 1
            if ex.response_missing:
                self.counters.responses_missing += 1
        return done
