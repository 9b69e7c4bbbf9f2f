"""The capture's limits under a flood, without the kernel: what stop() and reassembly promise.

- `CaptureService.stop()` ends even when the event source never runs dry: the final drain of
  what the kernel already wrote is bounded in time (a ring buffer written faster than it is
  read never becomes empty).
- `HttpConnection` follows pipelined requests in order up to `MAX_PENDING_REQUESTS` waiting
  for their responses; past that, a connection nobody answers is given up (its requests end
  as `response_missing`, the rest of it is ignored) instead of growing without bound.

The sources here stand in for the kernel side only; the service, tracker and reassembly are
the real ones.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from agent.capture.bpf_loader import KernelCounters
from agent.capture.config import CaptureConfig
from agent.capture.events import CaptureEvent, ConnOpenEvent, Direction, RawEvent
from agent.capture.exchange import ConnectionInfo, HttpExchange, Role
from agent.capture.pipeline import CaptureService
from agent.capture.reassembly import MAX_PENDING_REQUESTS, HttpConnection


class EndlessSource:
    """A source whose every poll delivers more: a ring buffer the kernel fills faster than it
    is read. `counts` says whether poll reports how many events it delivered."""

    def __init__(self, counts: bool) -> None:
        self._on: Callable[[CaptureEvent], None] | None = None
        self._counts = counts
        self._seq = 0
        self.polls_after_stop = 0
        self.stopping = False
        self.closed = 0

    def open(self, on_event: Callable[[CaptureEvent], None]) -> None:
        self._on = on_event
        on_event(ConnOpenEvent(1, 10, 10, 7, 3, Role.CLIENT, socket.AF_INET, "127.0.0.1", 9))

    def poll(self, timeout_ms: int) -> int | None:
        assert self._on is not None
        if self.stopping:
            self.polls_after_stop += 1
        for _ in range(20):
            self._seq += 1
            payload = b"\x00binary\x01"
            self._on(
                RawEvent(self._seq, 10, 10, 7, 3, Direction.EGRESS, Role.CLIENT, payload, 8, False)
            )
        time.sleep(0.001)
        return 20 if self._counts else None

    def maintain(self) -> None:
        pass

    def untrack(self, pid: int, fd: int) -> None:
        pass

    def forget_ssl(self, pid: int, ssl_ptr: int) -> None:
        pass

    def kernel_counters(self) -> KernelCounters:
        return KernelCounters()

    def close(self) -> None:
        self.closed += 1


def test_stop_ends_although_the_source_never_runs_dry() -> None:
    source = EndlessSource(counts=True)
    svc = CaptureService(CaptureConfig(queue_size=1000), sink=lambda ex: None, source=source)
    svc.start()
    time.sleep(0.3)
    source.stopping = True
    t0 = time.monotonic()
    svc.stop()
    took_s = time.monotonic() - t0
    assert took_s < 3.0, took_s
    # it did drain for a while (what the kernel already wrote counts), then gave up
    assert source.polls_after_stop > 10
    assert source.closed == 1
    stats = svc.stats()
    assert stats.events_received + stats.queue_drops == 1 + source._seq


def test_a_source_that_does_not_count_is_drained_once() -> None:
    source = EndlessSource(counts=False)
    svc = CaptureService(CaptureConfig(), sink=lambda ex: None, source=source)
    svc.start()
    time.sleep(0.1)
    source.stopping = True
    svc.stop()
    assert 1 <= source.polls_after_stop <= 2  # the loop's last poll, then the drain
    assert source.closed == 1


# --- reassembly ------------------------------------------------------------------------------


def _conn() -> HttpConnection:
    info = ConnectionInfo(pid=1, tid=1, comm="c", role=Role.SERVER)
    return HttpConnection(info, Role.SERVER)


def _request(i: int) -> bytes:
    body = b'{"n": %d}' % i
    return b"POST /v1/x/%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (
        i,
        len(body),
        body,
    )


def _response(i: int) -> bytes:
    body = b'{"id": "r%d"}' % i
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_deep_pipelines_pair_in_order() -> None:
    conn = _conn()
    out: list[HttpExchange] = []
    n = MAX_PENDING_REQUESTS
    # all requests first (one read), then all responses (one write): the deepest pipeline kept
    out += conn.feed(Direction.INGRESS, b"".join(_request(i) for i in range(n)), 1)
    assert out == []
    out += conn.feed(Direction.EGRESS, b"".join(_response(i) for i in range(n)), 2)
    assert [ex.path for ex in out] == [f"/v1/x/{i}" for i in range(n)]
    assert [ex.response_body for ex in out] == [b'{"id": "r%d"}' % i for i in range(n)]
    assert not any(ex.response_missing or ex.request_truncated for ex in out)
    assert not conn.pending_overflow


def test_a_connection_nobody_answers_is_given_up_not_followed_forever() -> None:
    conn = _conn()
    n = MAX_PENDING_REQUESTS + 1
    t0 = time.monotonic()
    out = conn.feed(Direction.INGRESS, b"".join(_request(i) for i in range(n)), 1)
    # every waiting request comes out, once, as a request whose response is missing
    assert [ex.path for ex in out] == [f"/v1/x/{i}" for i in range(n)]
    assert all(ex.response_missing for ex in out)
    assert conn.pending_overflow
    assert not conn.pending
    # and the rest of the connection costs nothing more
    more = b"".join(_request(i) for i in range(n, 20 * n))
    assert conn.feed(Direction.INGRESS, more, 2) == []
    assert conn.feed(Direction.EGRESS, _response(0), 3) == []
    assert not conn.pending
    assert conn.close(4) == []
    assert time.monotonic() - t0 < 2.0


# --- records lost whole ------------------------------------------------------------------------


def _paired_right(ex: HttpExchange) -> bool:
    """Request /v1/x/N answered by response rN."""
    n = ex.path.rsplit("/", 1)[-1]
    return ex.response_body == b'{"id": "r%s"}' % n.encode()


def test_a_lost_response_is_not_paired_with_the_next_request() -> None:
    conn = _conn()
    out = conn.feed(Direction.INGRESS, _request(1), 1)
    # the response to request 1 was lost whole; the next record says so
    out += conn.lose(2)
    out += conn.feed(Direction.INGRESS, _request(2), 3)
    out += conn.feed(Direction.EGRESS, _response(2), 4)
    assert [(ex.path, ex.response_missing) for ex in out] == [("/v1/x/1", True), ("/v1/x/2", False)]
    assert _paired_right(out[1])


def test_a_lost_request_leaves_its_response_unpaired() -> None:
    conn = _conn()
    out = conn.feed(Direction.INGRESS, _request(1), 1)
    out += conn.feed(Direction.EGRESS, _response(1), 2)
    # request 2 was lost whole: its response arrives after the hole and pairs with nothing
    out += conn.lose(3)
    out += conn.feed(Direction.EGRESS, _response(2), 4)
    out += conn.feed(Direction.INGRESS, _request(3), 5)
    out += conn.feed(Direction.EGRESS, _response(3), 6)
    assert [ex.path for ex in out] == ["/v1/x/1", "/v1/x/3"]
    assert all(_paired_right(ex) for ex in out)
    assert conn.orphan_responses == 1


def test_a_response_cut_by_a_hole_ends_truncated_with_its_own_request() -> None:
    conn = _conn()
    conn.feed(Direction.INGRESS, _request(1), 1)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"id": "r1"'
    assert conn.feed(Direction.EGRESS, head, 2) == []
    out = conn.lose(3)
    # the rest of response 1 (after the hole) is not mistaken for anything
    out += conn.feed(Direction.EGRESS, b', "more": "x"}', 4)
    out += conn.feed(Direction.INGRESS, _request(2), 5)
    out += conn.feed(Direction.EGRESS, _response(2), 6)
    assert [(ex.path, ex.response_truncated) for ex in out] == [
        ("/v1/x/1", True),
        ("/v1/x/2", False),
    ]
    assert _paired_right(out[1])


class BurstSource(EndlessSource):
    """Delivers a whole keep-alive conversation in one poll: more than a small queue holds."""

    def __init__(self, calls: int) -> None:
        super().__init__(counts=True)
        self._calls = calls
        self._done = False

    def open(self, on_event: Callable[[CaptureEvent], None]) -> None:
        self._on = on_event
        on_event(ConnOpenEvent(1, 10, 10, 7, 3, Role.SERVER, socket.AF_INET, "127.0.0.1", 9))

    def poll(self, timeout_ms: int) -> int | None:
        assert self._on is not None
        if self._done:
            time.sleep(timeout_ms / 1000)
            return 0
        self._done = True
        for i in range(self._calls):
            for t, (direction, data) in enumerate(
                ((Direction.INGRESS, _request(i)), (Direction.EGRESS, _response(i)))
            ):
                time.sleep(0.0005)  # about twice as fast as the slowed processing thread
                self._on(
                    RawEvent(
                        10 + 2 * i + t, 10, 10, 7, 3, direction, Role.SERVER, data, len(data), False
                    )
                )
        return 2 * self._calls


def test_events_the_queue_drops_do_not_mispair_the_rest() -> None:
    source = BurstSource(calls=300)
    got: list[HttpExchange] = []

    def slow_sink(ex: HttpExchange) -> None:  # the processing thread falls behind
        got.append(ex)
        time.sleep(0.002)

    svc = CaptureService(CaptureConfig(queue_size=16), sink=slow_sink, source=source)
    svc.start()
    time.sleep(1.5)
    svc.stop()
    stats = svc.stats()
    assert stats.queue_drops > 0
    assert stats.stream_losses > 0
    answered = [ex for ex in got if not ex.response_missing]
    assert answered
    wrong = [(ex.path, ex.response_body) for ex in answered if not _paired_right(ex)]
    assert wrong == []
