"""The capture service: kernel records in, `HttpExchange`s out, on two threads.

Takes a `CaptureConfig` and optionally a sink callback; gives `CaptureService` with `start()`,
`stop()` (safe twice, flushes what is in flight), `stats()` and, without a sink, `get()` /
`drain()` for the exchanges. The capture thread only polls the ring buffer and puts decoded
events on a bounded queue without ever waiting (a full queue drops the event and counts it:
slowing the reader would only move the loss into the kernel); the processing thread runs the
connection tracker and hands each exchange to the sink. The event source is `BpfCapture` by
default; tests may pass any object with the same methods.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.capture.bpf_loader import BpfCapture, KernelCounters
from agent.capture.config import CaptureConfig
from agent.capture.events import CaptureEvent, RawEvent
from agent.capture.exchange import HttpExchange
from agent.capture.sockets import SocketInfo
from agent.capture.tracker import ConnectionTracker

log = logging.getLogger(__name__)

Sink = Callable[[HttpExchange], None]

# After stop(): how long the capture thread keeps reading what the kernel wrote before it.
_FINAL_DRAIN_S = 1.0
# Streams remembered as having lost an event in the queue, until their next event gets in.
_MAX_LOST_STREAMS = 65536


class EventSource(Protocol):
    """What the service needs from the kernel side."""

    def open(self, on_event: Callable[[CaptureEvent], None]) -> None:
        """Start delivering events to `on_event` (from `poll`)."""
        ...

    def poll(self, timeout_ms: int) -> int | None:
        """Wait up to `timeout_ms` and deliver what arrived; how many events (None: unknown).
        Must return within about `timeout_ms` plus a bounded delivery time, however fast
        events keep coming."""
        ...

    def maintain(self) -> None:
        """Periodic housekeeping on the polling thread."""
        ...

    def untrack(self, pid: int, fd: int) -> None:
        """Stop tracking a socket (any thread)."""
        ...

    def forget_ssl(self, pid: int, ssl_ptr: int) -> None:
        """Forget an SSL object's binding (any thread)."""
        ...

    def kernel_counters(self) -> KernelCounters:
        """The kernel's own counts (any thread)."""
        ...

    def close(self) -> None:
        """Detach everything (safe twice)."""
        ...


@dataclass(frozen=True)
class CaptureStats:
    """Counts since start; every drop the capture can know about has its own field."""

    exchanges_seen: int = 0
    exchanges_truncated: int = 0
    responses_missing: int = 0
    http2_seen: int = 0
    kernel_drops: int = 0  # records lost because the kernel ring buffer was full
    queue_drops: int = 0  # events lost because the processing thread fell behind
    output_drops: int = 0  # exchanges lost because nobody drained them (no sink)
    sink_errors: int = 0
    events_received: int = 0
    events_processed: int = 0
    bytes_captured: int = 0
    bytes_lost: int = 0  # bytes that moved but were not copied (caps, faults)
    kernel_truncated_calls: int = 0
    connections_opened: int = 0
    connections_rejected: int = 0
    tls_streams: int = 0
    tls_bindings: int = 0
    non_http_connections: int = 0
    orphan_responses: int = 0
    stream_losses: int = 0  # records that followed lost ones (kernel or queue): pairing restarted
    open_connections: int = 0
    queue_depth: int = 0


class CaptureService:
    """Runs the capture: start() it, read exchanges from the sink or get(), stop() it."""

    def __init__(
        self,
        config: CaptureConfig | None = None,
        sink: Sink | None = None,
        *,
        source: EventSource | None = None,
        resolver: Callable[[int, int], SocketInfo | None] | None = None,
    ) -> None:
        self.config = (config or CaptureConfig()).validate()
        self._source: EventSource = source if source is not None else BpfCapture(self.config)
        self._sink = sink
        self._events: queue.Queue[CaptureEvent] = queue.Queue(self.config.queue_size)
        self._out: queue.Queue[HttpExchange] = queue.Queue(self.config.output_queue_size)
        # BpfCapture resolves sockets itself, on the capture thread, as soon as they open;
        # resolving later here could find the fd closed or, worse, reused.
        self._tracker = ConnectionTracker(
            max_body_bytes=self.config.max_body_bytes,
            resolver=resolver,
            untrack=self._source.untrack,
            forget_ssl=self._source.forget_ssl,
            port_filter=self.config.filter_ports,
        )
        self._stop = threading.Event()
        self._capture_done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._received = 0
        self._processed = 0
        self._queue_drops = 0
        self._queued_bytes = 0  # payload bytes of the events in `_events`
        self._output_drops = 0
        self._sink_errors = 0
        # Streams whose data event the full queue dropped (capture thread only): their next
        # event is marked, so that reassembly does not pair a request with a later response.
        self._lost_streams: OrderedDict[tuple[int, int, int], None] = OrderedDict()
        self._started = False
        self._stopped = False
        self.capture_error: BaseException | None = None

    @property
    def source(self) -> EventSource:
        """The kernel side (for inspection: attached OpenSSL files, counters)."""
        return self._source

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load the programs and start both threads; raises if loading fails."""
        if self._started:
            return
        self._source.open(self._enqueue)
        self._started = True
        capture = threading.Thread(target=self._capture_loop, name="capture-poll", daemon=True)
        process = threading.Thread(target=self._process_loop, name="capture-process", daemon=True)
        self._threads = [capture, process]
        capture.start()
        process.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling, finish the queued events and open exchanges, detach (safe twice)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._started:
            capture, process = self._threads
            capture.join(timeout_s)
            self._capture_done.set()
            process.join(timeout_s)
            if capture.is_alive():
                # Freeing the BPF object under a thread still inside ring_buffer_poll would crash
                # the process; leave it to the process exit instead.
                log.warning("capture thread still polling after %.0f s; not detaching", timeout_s)
                return
        self._source.close()

    def __enter__(self) -> CaptureService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- consumers -------------------------------------------------------------------------

    def get(self, timeout_s: float | None = None) -> HttpExchange | None:
        """The next exchange (when no sink was given); None after `timeout_s`."""
        try:
            return self._out.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def drain(self) -> list[HttpExchange]:
        """Every exchange waiting now (when no sink was given)."""
        out: list[HttpExchange] = []
        while True:
            try:
                out.append(self._out.get_nowait())
            except queue.Empty:
                return out

    def stats(self) -> CaptureStats:
        """A snapshot of the counters."""
        kc = self._source.kernel_counters()
        c = self._tracker.counters
        with self._lock:
            received, processed = self._received, self._processed
            qdrops, odrops, serr = self._queue_drops, self._output_drops, self._sink_errors
        return CaptureStats(
            exchanges_seen=c.exchanges,
            exchanges_truncated=c.exchanges_truncated,
            responses_missing=c.responses_missing,
            http2_seen=c.http2_connections,
            kernel_drops=kc.ringbuf_drops,
            queue_drops=qdrops,
            output_drops=odrops,
            sink_errors=serr,
            events_received=received,
            events_processed=processed,
            bytes_captured=c.bytes_captured,
            bytes_lost=c.bytes_lost,
            kernel_truncated_calls=kc.truncated_calls,
            connections_opened=c.connections_opened,
            connections_rejected=c.connections_rejected,
            tls_streams=c.tls_streams,
            tls_bindings=c.tls_bindings,
            non_http_connections=c.non_http_connections,
            orphan_responses=c.orphan_responses,
            stream_losses=c.losses,
            open_connections=self._tracker.open_connections,
            queue_depth=self._events.qsize(),
        )

    # -- threads ---------------------------------------------------------------------------

    def _enqueue(self, event: CaptureEvent) -> None:
        # Runs on the capture thread (and in start() for pre-existing connections).
        key: tuple[int, int, int] | None = None
        lost = self._lost_streams
        if isinstance(event, RawEvent):
            key = event.stream_key()
            if lost and key in lost and not event.lost_before:
                event = dataclasses.replace(event, lost_before=True)
        size = len(event.payload) if isinstance(event, RawEvent) else 0
        try:
            with self._lock:
                if size and self._queued_bytes + size > self.config.queue_max_bytes:
                    raise queue.Full
                self._queued_bytes += size
            try:
                self._events.put_nowait(event)
            except queue.Full:
                with self._lock:
                    self._queued_bytes -= size
                raise
        except queue.Full:
            with self._lock:
                self._queue_drops += 1
            if key is not None:
                lost[key] = None
                if len(lost) > _MAX_LOST_STREAMS:
                    lost.popitem(last=False)
            return
        if key is not None and lost:
            lost.pop(key, None)
        with self._lock:
            self._received += 1

    def _capture_loop(self) -> None:
        timeout = self.config.poll_timeout_ms
        try:
            while not self._stop.is_set():
                self._source.poll(timeout)
                self._source.maintain()
            # What the kernel already wrote is part of what we were asked to capture; under a
            # flood "already" never ends, hence the time limit.
            deadline = time.monotonic() + _FINAL_DRAIN_S
            while self._source.poll(0) and time.monotonic() < deadline:
                pass
        except BaseException as exc:  # keep the reason; the service reports it
            self.capture_error = exc
            log.exception("capture thread failed")
        finally:
            self._capture_done.set()

    def _process_loop(self) -> None:
        idle_ns = int(self.config.idle_timeout_s * 1e9)
        next_sweep = time.monotonic() + 1.0
        while True:
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                if self._capture_done.is_set() and self._stop.is_set():
                    break
                event = None
            if event is not None:
                size = len(event.payload) if isinstance(event, RawEvent) else 0
                self._deliver(self._safe_handle(event))
                with self._lock:
                    self._queued_bytes -= size
                    self._processed += 1
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + 1.0
                self._deliver(self._tracker.sweep(time.monotonic_ns(), idle_ns))
        self._deliver(self._tracker.close_all(time.monotonic_ns()))

    def _safe_handle(self, event: CaptureEvent) -> list[HttpExchange]:
        try:
            return self._tracker.handle(event)
        except Exception:  # one odd event must not end the capture
            log.exception("event handling failed")
            return []

    def _deliver(self, exchanges: list[HttpExchange]) -> None:
        for ex in exchanges:
            if self._sink is not None:
                try:
                    self._sink(ex)
                except Exception:
                    with self._lock:
                        self._sink_errors += 1
                    log.exception("exchange sink failed")
                continue
            try:
                self._out.put_nowait(ex)
            except queue.Full:
                with self._lock:
                    self._output_drops += 1
