"""The call-table stage's pacing: slow passes stretch the wait so that the refresh thread is
busy at most `max_busy_share` of the time, within `interval_s` and `max_interval_s`."""

from __future__ import annotations

import pytest

from collector.call_table import CallTableSettings


def test_fast_passes_keep_the_interval() -> None:
    s = CallTableSettings(interval_s=1.0, max_busy_share=0.25, max_interval_s=10.0)
    assert s.wait_after(0.01) == 1.0
    assert s.wait_after(0.25) == 1.0  # busy 0.25 of 1.25 s


def test_slow_passes_stretch_the_wait_up_to_the_cap() -> None:
    s = CallTableSettings(interval_s=1.0, max_busy_share=0.25, max_interval_s=10.0)
    assert s.wait_after(0.5) == pytest.approx(1.5)  # busy 0.5 of 2 s
    assert s.wait_after(2.0) == pytest.approx(6.0)
    assert s.wait_after(30.0) == 10.0
    # a cap below the interval never shortens the interval
    assert CallTableSettings(interval_s=5.0, max_interval_s=1.0).wait_after(0.0) == 5.0
