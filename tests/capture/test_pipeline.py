"""The capture service's threads, bounded queue and stop(), driven by a scripted event source.

The source stands in for the kernel side only; the queue, threads, tracker and reassembly are
the real ones.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from agent.capture.bpf_loader import KernelCounters
from agent.capture.config import CaptureConfig
from agent.capture.events import CaptureEvent, ConnOpenEvent, Direction, RawEvent
from agent.capture.exchange import HttpExchange, Role
from agent.capture.pipeline import CaptureService

REQ = b"GET /v1/models HTTP/1.1\r\nHost: h\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def conversation(conn_id: int, n: int) -> list[CaptureEvent]:
    out: list[CaptureEvent] = [
        ConnOpenEvent(1, 10, 10, conn_id, 3, Role.CLIENT, socket.AF_INET, "127.0.0.1", 80)
    ]
    for i in range(n):
        for direction, payload in ((Direction.EGRESS, REQ), (Direction.INGRESS, RESP)):
            out.append(
                RawEvent(
                    10 + i, 10, 10, conn_id, 3, direction, Role.CLIENT, payload, len(payload), False
                )
            )
    return out


class ScriptedSource:
    """Delivers a fixed list of events, in batches, as a ring buffer poll would."""

    def __init__(self, events: list[CaptureEvent], batch: int = 50, drops: int = 0) -> None:
        self._events = list(events)
        self._batch = batch
        self._on: Callable[[CaptureEvent], None] | None = None
        self.closed = 0
        self.untracked: list[tuple[int, int]] = []
        self._drops = drops
        self.polls = 0

    def open(self, on_event: Callable[[CaptureEvent], None]) -> None:
        self._on = on_event

    def poll(self, timeout_ms: int) -> None:
        self.polls += 1
        if not self._events:
            time.sleep(timeout_ms / 1000)
            return
        batch, self._events = self._events[: self._batch], self._events[self._batch :]
        assert self._on is not None
        for e in batch:
            self._on(e)

    def maintain(self) -> None:
        pass

    def untrack(self, pid: int, fd: int) -> None:
        self.untracked.append((pid, fd))

    def forget_ssl(self, pid: int, ssl_ptr: int) -> None:
        pass

    def kernel_counters(self) -> KernelCounters:
        return KernelCounters(ringbuf_drops=self._drops)

    def close(self) -> None:
        self.closed += 1

    @property
    def empty(self) -> bool:
        return not self._events


def wait_until(pred: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not pred():
        time.sleep(0.01)
    return pred()


def test_events_become_exchanges_and_stop_is_safe_twice() -> None:
    source = ScriptedSource(conversation(1, 23), drops=3)
    got: list[HttpExchange] = []
    svc = CaptureService(CaptureConfig(), sink=got.append, source=source)
    svc.start()
    assert wait_until(lambda: len(got) == 23)
    svc.stop()
    svc.stop()
    assert source.closed == 1
    stats = svc.stats()
    assert stats.exchanges_seen == 23
    assert stats.events_received == stats.events_processed == 1 + 46
    assert stats.kernel_drops == 3
    assert stats.queue_drops == 0
    assert [e.path for e in got] == ["/v1/models"] * 23


def test_full_queue_drops_and_counts_instead_of_blocking() -> None:
    events = conversation(1, 200)
    source = ScriptedSource(events, batch=len(events))
    release = threading.Event()
    got: list[HttpExchange] = []

    def slow_sink(ex: HttpExchange) -> None:
        release.wait(10)
        got.append(ex)

    svc = CaptureService(CaptureConfig(queue_size=10), sink=slow_sink, source=source)
    svc.start()
    # The whole script goes out in one poll while the processing thread is stuck in the sink.
    assert wait_until(lambda: source.empty and source.polls > 1)
    release.set()
    svc.stop()
    stats = svc.stats()
    assert stats.queue_drops > 0
    assert stats.events_received + stats.queue_drops == len(events)
    assert stats.events_processed == stats.events_received


def test_stop_flushes_open_exchanges() -> None:
    events = conversation(1, 1)[:-1]  # the response never comes
    source = ScriptedSource(events)
    svc = CaptureService(CaptureConfig(), source=source)
    svc.start()
    assert wait_until(lambda: svc.stats().events_processed == len(events))
    assert svc.drain() == []
    svc.stop()
    out = svc.drain()
    assert [e.response_missing for e in out] == [True]


def test_output_queue_without_sink_is_bounded() -> None:
    source = ScriptedSource(conversation(1, 30))
    svc = CaptureService(CaptureConfig(output_queue_size=5), source=source)
    with svc:
        assert wait_until(lambda: svc.stats().exchanges_seen == 30)
    assert len(svc.drain()) == 5
    assert svc.stats().output_drops == 25


def test_a_failing_sink_does_not_stop_the_capture() -> None:
    source = ScriptedSource(conversation(1, 3))
    calls: list[int] = []

    def sink(ex: HttpExchange) -> None:
        calls.append(1)
        raise RuntimeError("downstream broke")

    svc = CaptureService(CaptureConfig(), sink=sink, source=source)
    with svc:
        assert wait_until(lambda: len(calls) == 3)
    assert svc.stats().sink_errors == 3


def test_queued_payload_bytes_are_bounded() -> None:
    """However many events fit in the queue, their payloads together stay under
    `queue_max_bytes`; what does not fit is dropped and counted like a full queue."""
    events = conversation(1, 200)
    payload_bytes = sum(len(e.payload) for e in events if isinstance(e, RawEvent))
    source = ScriptedSource(events, batch=len(events))
    release = threading.Event()

    def slow_sink(ex: HttpExchange) -> None:
        release.wait(10)

    limit = 1024
    assert payload_bytes > 4 * limit
    config = CaptureConfig(max_payload_bytes=64, queue_max_bytes=limit)
    svc = CaptureService(config, sink=slow_sink, source=source)
    svc.start()
    assert wait_until(lambda: source.empty and source.polls > 1)
    held = svc._queued_bytes  # the processing thread is stuck: this is what waits
    release.set()
    svc.stop()
    stats = svc.stats()
    assert 0 < held <= limit
    assert stats.queue_drops > 0
    assert stats.events_received + stats.queue_drops == len(events)
    assert svc._queued_bytes == 0  # every queued event was taken and accounted for
