"""The relay's sender threads: buffered requests out to the collector, retried as OTLP says.

Takes in: the `RelayBuffer`, a `Forwarder`, the `RelayStats` and the retry bounds. Gives out:
every buffered request delivered, or counted as failed: a permanent error, retries for longer
than `max_elapsed_s`, or still undelivered when the drain time at `stop()` ran out.
Retries wait the delay the collector asked for, else an exponential backoff (1 s doubling to at
most 32 s, ±20 % jitter, as the SDK exporters do); a stop cuts the waits short but still tries
each request until the drain deadline, so a collector that is up loses nothing the relay
accepted. `stop()` is safe twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from agent.relay.buffer import Outgoing, RelayBuffer, RelayStats
from agent.relay.forward import Forwarder

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 32.0


class RelaySenders:
    """`count` threads taking requests from the buffer and delivering them."""

    def __init__(
        self,
        buffer: RelayBuffer,
        forwarder: Forwarder,
        stats: RelayStats,
        *,
        count: int = 2,
        max_elapsed_s: float = 300.0,
    ) -> None:
        self.buffer = buffer
        self.forwarder = forwarder
        self.stats = stats
        self._count = count
        self._max_elapsed_s = max_elapsed_s
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._wake = threading.Event()  # cuts retry waits short at stop
        self._deadline_mono: float | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self.last_error: str | None = None

    def start(self) -> None:
        for i in range(self._count):
            t = threading.Thread(target=self._run, name=f"infersight-relay-send-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, drain_timeout_s: float) -> None:
        """Deliver what is buffered for at most `drain_timeout_s`; count the rest failed."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._deadline_mono = time.monotonic() + drain_timeout_s
        self._wake.set()
        self.buffer.wait_empty(drain_timeout_s)
        self._stopping.set()
        for t in self._threads:
            t.join(max(self._deadline_mono - time.monotonic(), 0) + 5)
        for item in self.buffer.drain_rest():
            self._give_up(item, "the agent stopped before the collector took it")
        self.forwarder.close()

    def _past_deadline(self) -> bool:
        return self._deadline_mono is not None and time.monotonic() >= self._deadline_mono

    def _run(self) -> None:
        while True:
            item = self.buffer.take(0.2)
            if item is None:
                if self._stopping.is_set():
                    return
                continue
            try:
                self._deliver(item)
            except Exception:  # a bug here must not lose the thread
                log.exception("relaying a %s request failed", item.signal)
                self._give_up(item, "internal error")
            finally:
                self.buffer.done(item)

    def _deliver(self, item: Outgoing) -> None:
        first_mono = time.monotonic()
        attempt = 0
        while True:
            result = self.forwarder.send(item.signal, item.payload)
            if result.outcome == "delivered":
                self.stats.items(item.signal, "relayed", item.items - result.rejected)
                self.stats.items(item.signal, "rejected", result.rejected)
                self.last_error = None
                return
            self.last_error = result.detail
            if result.outcome == "failed":
                self._give_up(item, result.detail)
                return
            delay_s = result.retry_after_s
            if delay_s is None:
                delay_s = min(2.0**attempt, _MAX_BACKOFF_S) * random.uniform(0.8, 1.2)
            attempt += 1
            if time.monotonic() + delay_s - first_mono > self._max_elapsed_s:
                self._give_up(item, f"still failing after {attempt} attempts: {result.detail}")
                return
            self.stats.retry()
            log.debug(
                "relay: %s request not delivered (%s); retry in %.1f s",
                item.signal,
                result.detail,
                delay_s,
            )
            if self._deadline_mono is None:
                self._wake.wait(delay_s)
            else:
                # stopping: keep trying until the drain deadline, without sleeping through it
                if self._past_deadline():
                    self._give_up(item, "the agent stopped before the collector took it")
                    return
                time.sleep(min(delay_s, 0.5))

    def _give_up(self, item: Outgoing, why: str) -> None:
        self.stats.items(item.signal, "failed", item.items)
        log.warning("relay: %d %s items not delivered: %s", item.items, item.signal, why)
