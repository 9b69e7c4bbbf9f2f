"""The relay's bounded buffer of accepted OTLP requests, and its books.

Takes in: `Outgoing` requests (signal, serialized protobuf, item count), offered by the
receivers after they accepted them. Gives out: the same requests, oldest first, to the sender
threads (`take`), which report each one's end (`done`). The bound is on bytes: a request that
does not fit is refused (`offer` returns False) and its sender is told to retry later; nothing
accepted is ever dropped to make room. Requests the node-local pairing held back and releases
later were accepted already, so they are `put` past the bound (the pairing's own bound keeps
that finite).
`RelayStats` counts, per signal, items accepted, relayed, refused because the buffer was full,
rejected by the collector and failed (retries exhausted, a permanent error, or still buffered
when the agent stopped), plus requests refused as invalid and retried attempts.
Thread-safe; never blocks an offer.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Final

SIGNALS: Final = ("traces", "metrics", "logs")
ITEM_OUTCOMES: Final = ("accepted", "relayed", "refused_full", "rejected", "failed")
REQUEST_OUTCOMES: Final = ("accepted", "refused_full", "invalid")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One request on its way to the collector."""

    signal: str
    payload: bytes
    items: int


class RelayStats:
    """The relay's counters (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: Counter[tuple[str, str]] = Counter()
        self._requests: Counter[str] = Counter()
        self._retries = 0

    def items(self, signal: str, outcome: str, n: int) -> None:
        """`n` items of `signal` ended in (or passed through) `outcome`."""
        if n:
            with self._lock:
                self._items[(signal, outcome)] += n

    def request(self, outcome: str) -> None:
        """One export request answered with `outcome`."""
        with self._lock:
            self._requests[outcome] += 1

    def retry(self) -> None:
        """One more delivery attempt after a failed one."""
        with self._lock:
            self._retries += 1

    def snapshot(self) -> dict[str, Any]:
        """`items[(signal, outcome)]`, `requests[outcome]` and `retries`."""
        with self._lock:
            return {
                "items": {
                    (s, o): self._items.get((s, o), 0) for s in SIGNALS for o in ITEM_OUTCOMES
                },
                "requests": {o: self._requests.get(o, 0) for o in REQUEST_OUTCOMES},
                "retries": self._retries,
            }


class RelayBuffer:
    """FIFO of `Outgoing` requests bounded by `max_bytes` (what senders hold counts too)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._queue: deque[Outgoing] = deque()
        self._cond = threading.Condition()
        self._bytes = 0  # queued plus being delivered
        self._in_flight = 0

    def offer(self, item: Outgoing) -> bool:
        """Queue `item` if it fits under the bound; False (nothing queued) when it does not."""
        with self._cond:
            if self._bytes + len(item.payload) > self.max_bytes:
                return False
            self._append(item)
            return True

    def has_room(self, nbytes: int) -> bool:
        """Whether `nbytes` more would fit now."""
        with self._cond:
            return self._bytes + nbytes <= self.max_bytes

    def put(self, item: Outgoing) -> None:
        """Queue `item` whatever the bound (for requests accepted earlier and held back)."""
        with self._cond:
            self._append(item)

    def _append(self, item: Outgoing) -> None:
        self._bytes += len(item.payload)
        self._queue.append(item)
        self._cond.notify()

    def take(self, timeout_s: float) -> Outgoing | None:
        """The oldest request, waiting up to `timeout_s` for one; the caller must `done()` it."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            self._in_flight += 1
            return self._queue.popleft()

    def done(self, item: Outgoing) -> None:
        """`item` left the relay (delivered or given up): its bytes are free again."""
        with self._cond:
            self._bytes -= len(item.payload)
            self._in_flight -= 1
            self._cond.notify_all()

    def drain_rest(self) -> list[Outgoing]:
        """Remove and return everything still queued (at stop, after the drain time)."""
        with self._cond:
            rest = list(self._queue)
            self._queue.clear()
            for item in rest:
                self._bytes -= len(item.payload)
            self._cond.notify_all()
            return rest

    def wait_empty(self, timeout_s: float) -> bool:
        """Wait until nothing is queued or being delivered; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    @property
    def bytes(self) -> int:
        """Bytes queued or being delivered."""
        with self._cond:
            return self._bytes

    @property
    def requests(self) -> int:
        """Requests queued or being delivered."""
        with self._cond:
            return len(self._queue) + self._in_flight
