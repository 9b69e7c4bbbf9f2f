"""CLOCK_MONOTONIC nanoseconds (what the kernel stamps events with) to unix nanoseconds.

Takes in: monotonic timestamps (`*_mono_ns`). Gives out: unix timestamps (`*_unix_ns`) for span
start and end times. The offset `time_ns() - monotonic_ns()` is measured at start and measured
again once it is older than `refresh_s`, so a wall clock stepped by NTP is followed within that
time; each measurement reads the monotonic clock on both sides of the wall clock read, three
times, and keeps the tightest bracket. Thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class MonoToUnix:
    """Converts monotonic nanoseconds to unix nanoseconds with a periodically refreshed offset."""

    def __init__(
        self,
        refresh_s: float = 10.0,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._refresh_ns = int(refresh_s * 1e9)
        self._wall_ns = wall_ns
        self._mono_ns = mono_ns
        self._lock = threading.Lock()
        self._offset_ns = 0
        self._measured_mono_ns = 0
        self.measurements = 0
        self._measure()

    def _measure(self) -> None:
        best: tuple[int, int, int] | None = None  # (bracket width, offset, mono)
        for _ in range(3):
            before = self._mono_ns()
            wall = self._wall_ns()
            after = self._mono_ns()
            width = after - before
            if best is None or width < best[0]:
                best = (width, wall - (before + width // 2), after)
        assert best is not None
        with self._lock:
            self._offset_ns = best[1]
            self._measured_mono_ns = best[2]
            self.measurements += 1

    def offset_ns(self) -> int:
        """unix ns minus monotonic ns, refreshed when stale."""
        with self._lock:
            stale = self._mono_ns() - self._measured_mono_ns >= self._refresh_ns
        if stale:
            self._measure()
        with self._lock:
            return self._offset_ns

    def to_unix_ns(self, mono_ns: int) -> int:
        """The unix time of a monotonic timestamp."""
        return mono_ns + self.offset_ns()
