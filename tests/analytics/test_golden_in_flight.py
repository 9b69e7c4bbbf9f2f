"""Golden signals' in-flight figure where calls cross several bucket edges, start before the
range, or run past a range end that cuts its last bucket, against overlaps summed in Python."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.analytics import synth
from tests.analytics.conftest import Seeded


def _busy_s(calls: list[synth.Call], group: Any, by: str, lo_s: float, hi_s: float) -> float:
    busy = 0.0
    for c in calls:
        if c.group(by) != group:
            continue
        overlap = min(c.end_s, hi_s) - max(c.start_s, lo_s)
        if overlap > 0:
            busy += overlap
    return busy


def _check(seeded: Seeded, start_s: float, end_s: float, step_s: float, by: str) -> int:
    """Every point's calls and in-flight figure; gives how many points held a call that
    crossed more than one bucket edge, so that the case is known to be exercised."""
    resp = seeded.get(
        "/api/v1/golden-signals",
        start=synth.ts(start_s).isoformat(),
        end=synth.ts(end_s).isoformat(),
        step=f"{step_s}s",
        group_by=by,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    n = math.ceil((end_s - start_s) / step_s - 1e-9)
    assert body["buckets"] == n
    crossing = 0
    for series in body["series"]:
        group = series["group"]
        assert len(series["points"]) == n
        for b, point in enumerate(series["points"]):
            lo = start_s + b * step_s
            hi = min(lo + step_s, end_s)
            assert point["width_s"] == pytest.approx(hi - lo)
            mine = [
                c
                for c in seeded.calls
                if c.group(by) == group and lo <= c.start_s < hi and start_s <= c.start_s
            ]
            assert point["calls"] == len(mine), (group, b)
            want = _busy_s(seeded.calls, group, by, lo, hi) / (hi - lo)
            assert point["in_flight"] == pytest.approx(want, rel=1e-9, abs=1e-9), (group, b)
            crossing += any(c.start_s < lo - step_s and c.end_s > lo for c in seeded.calls)
    return crossing


@pytest.mark.parametrize("by", ["operation", "model"])
def test_calls_spanning_several_short_buckets(seeded: Seeded, by: str) -> None:
    # 2 s buckets: the synthetic calls last up to 12 s, so many cross several edges
    assert _check(seeded, 0.0, 120.0, 2.0, by) > 0


def test_range_starting_and_ending_inside_calls(seeded: Seeded) -> None:
    # starts after calls that began before it and ends mid-bucket while calls still run
    early = [c for c in seeded.calls if c.start_s < 7.5 < c.end_s]
    late = [c for c in seeded.calls if c.start_s < 101.3 < c.end_s]
    assert early, "the synthetic set must hold calls across the range start"
    assert late, "the synthetic set must hold calls across the range end"
    assert _check(seeded, 7.5, 101.3, 3.0, "operation") > 0
