"""`GET /api/v1/golden-signals` against figures computed in Python from the same synthetic calls."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import pytest

from tests.analytics import synth
from tests.analytics.conftest import Seeded, window

STEP_S = 60.0
QS = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def _in_window(c: synth.Call) -> bool:
    return 0.0 <= c.start_s < synth.WINDOW_S


def _bucket(start_s: float) -> int:
    return math.floor(round(start_s * 1e6) / (STEP_S * 1e6))


def _quantiles(values: list[float]) -> dict[str, float | None]:
    return {name: synth.percentile(values, q) for name, q in QS.items()}


def _approx_q(got: dict[str, Any], want: dict[str, float | None]) -> None:
    for name, value in want.items():
        if value is None:
            assert got[name] is None, name
        else:
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def _in_flight(calls: list[synth.Call], group: Any, by: str, b: int) -> float:
    lo, hi = b * STEP_S, min((b + 1) * STEP_S, synth.WINDOW_S)
    busy = 0.0
    for c in calls:
        if c.group(by) != group:
            continue
        overlap = min(c.end_s, hi) - max(c.start_s, lo)
        if overlap > 0:
            busy += overlap
    return busy / (hi - lo)


@pytest.mark.parametrize("by", ["model", "provider", "service", "namespace", "pod", "operation"])
def test_every_bucket_matches_python(seeded: Seeded, by: str) -> None:
    resp = seeded.get("/api/v1/golden-signals", **window(step="60s", group_by=by))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["buckets"] == 10
    assert body["group_by"] == by

    calls = [c for c in seeded.calls if _in_window(c)]
    by_key: dict[tuple[Any, int], list[synth.Call]] = defaultdict(list)
    for c in calls:
        by_key[(c.group(by), _bucket(c.start_s))].append(c)
    groups = {c.group(by) for c in seeded.calls if c.start_s < synth.WINDOW_S and c.end_s > 0}
    assert {s["group"] for s in body["series"]} == groups

    for series in body["series"]:
        group = series["group"]
        assert len(series["points"]) == 10
        for b, point in enumerate(series["points"]):
            assert point["time"] == synth.ts(b * STEP_S).isoformat().replace("+00:00", "Z")
            mine = by_key.get((group, b), [])
            assert point["calls"] == len(mine)
            assert point["requests_per_s"] == pytest.approx(len(mine) / STEP_S)
            errors = [c for c in mine if c.errored]
            assert point["errors"] == len(errors)
            assert point["errors_by_type"] == dict(Counter(c.error_type for c in errors))
            assert point["errors_per_s_by_type"] == pytest.approx(
                {k: v / STEP_S for k, v in Counter(c.error_type for c in errors).items()}
            )
            if mine:
                assert point["error_ratio"] == pytest.approx(len(errors) / len(mine))
            else:
                assert point["error_ratio"] is None
            _approx_q(point["latency_s"], _quantiles([c.duration_s for c in mine]))
            _approx_q(point["ttft_s"], _quantiles([c.ttft_s for c in mine if c.ttft_s is not None]))
            _approx_q(point["tpot_s"], _quantiles([c.tpot_s for c in mine if c.tpot_s is not None]))
            assert point["input_tokens_per_s"] == pytest.approx(
                sum(c.input_tokens or 0 for c in mine) / STEP_S
            )
            assert point["output_tokens_per_s"] == pytest.approx(
                sum(c.output_tokens or 0 for c in mine) / STEP_S
            )
            assert point["in_flight"] == pytest.approx(
                _in_flight(seeded.calls, group, by, b), rel=1e-9, abs=1e-9
            )

        mine = [c for c in calls if c.group(by) == group]
        summary = series.get("summary")
        if not mine:
            assert summary is None
            continue
        assert summary["calls"] == len(mine)
        assert summary["requests_per_s"] == pytest.approx(len(mine) / synth.WINDOW_S)
        _approx_q(summary["latency_s"], _quantiles([c.duration_s for c in mine]))


def test_in_flight_counts_calls_started_before_the_range(seeded: Seeded) -> None:
    early = [c for c in seeded.calls if c.start_s < 0 < c.end_s]
    assert early, "the synthetic set must hold calls that straddle the start"
    body = seeded.get("/api/v1/golden-signals", **window(step="60s", group_by="operation")).json()
    first = {s["group"]: s["points"][0]["in_flight"] for s in body["series"]}
    for op in {c.operation for c in early}:
        assert first[op] == pytest.approx(_in_flight(seeded.calls, op, "operation", 0))


def test_uneven_last_bucket_uses_its_own_width(seeded: Seeded) -> None:
    params = {
        "start": synth.BASE.isoformat(),
        "end": synth.ts(150).isoformat(),
        "step": "1m",
        "group_by": "operation",
    }
    body = seeded.get("/api/v1/golden-signals", **params).json()
    assert body["buckets"] == 3
    chat = next(s for s in body["series"] if s["group"] == "chat")
    last = chat["points"][2]
    assert last["width_s"] == 30.0
    mine = [c for c in seeded.calls if c.operation == "chat" and 120 <= c.start_s < 150]
    assert last["requests_per_s"] == pytest.approx(len(mine) / 30.0)


def _expected_saturation(points: list[synth.Point], metric: str, how: str) -> dict[int, float]:
    per_series: dict[tuple[int, str], list[float]] = defaultdict(list)
    for p in points:
        if p.metric != metric or not 0 <= p.offset_s < synth.WINDOW_S:
            continue
        per_series[(math.floor(p.offset_s / STEP_S), repr(sorted(p.series.items())))].append(
            p.value
        )
    by_bucket: dict[int, list[float]] = defaultdict(list)
    for (b, _), values in per_series.items():
        by_bucket[b].append(sum(values) / len(values))
    return {b: (sum(v) if how == "sum" else sum(v) / len(v)) for b, v in by_bucket.items()}


@pytest.mark.parametrize(
    ("signal", "metric", "how"),
    [
        ("gpu_utilization", "hw.gpu.utilization", "avg"),
        ("gpu_memory_used_bytes", "hw.gpu.memory.usage", "sum"),
        ("gpu_power_w", "hw.power", "sum"),
        ("kv_cache_usage", "vllm:gpu_cache_usage_perc", "avg"),
        ("queue_depth", "vllm:num_requests_waiting", "sum"),
    ],
)
def test_saturation_matches_python(seeded: Seeded, signal: str, metric: str, how: str) -> None:
    body = seeded.get("/api/v1/golden-signals", **window(step="60s")).json()
    got = {i: p["value"] for i, p in enumerate(body["saturation"][signal])}
    want = _expected_saturation(seeded.points, metric, how)
    assert set(got) == set(want) == set(range(10))
    for b, value in want.items():
        assert got[b] == pytest.approx(value), (signal, b)


def test_gpu_utilization_prefers_semantic_names_over_dcgm(seeded: Seeded) -> None:
    body = seeded.get("/api/v1/golden-signals", **window(step="5m")).json()
    # the DCGM series says 50% everywhere; the hw.* series do not average to that
    values = [p["value"] for p in body["saturation"]["gpu_utilization"]]
    assert all(p["series"] == 2 for p in body["saturation"]["gpu_utilization"])
    assert values != [pytest.approx(0.5)] * len(values)
    assert body["saturation"]["engine_requests_running"] == []


def test_empty_range_answers_with_no_series(seeded: Seeded) -> None:
    resp = seeded.get(
        "/api/v1/golden-signals",
        start="2001-01-01T00:00:00Z",
        end="2001-01-01T01:00:00Z",
        step="5m",
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["series"] == []
    assert all(v == [] for v in body["saturation"].values())


def test_default_range_is_the_last_hour(seeded: Seeded) -> None:
    body = seeded.get("/api/v1/golden-signals").json()
    assert body["buckets"] == 60
    assert body["step_s"] == 60.0


def test_unix_seconds_are_accepted(seeded: Seeded) -> None:
    t0 = synth.BASE.timestamp()
    a = seeded.get("/api/v1/golden-signals", start=str(t0), end=str(t0 + 600), step="120").json()
    b = seeded.get("/api/v1/golden-signals", **window(step="2m")).json()
    # float sums may differ in the last bits between runs (parallel aggregation)
    assert rounded(a["series"]) == rounded(b["series"])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_by": "colour"}, "unknown group"),
        ({"start": "2025-03-01T13:00:00Z", "end": "2025-03-01T12:00:00Z"}, "must be after start"),
        ({"start": "2025-03-01T12:00:00Z", "end": "2025-03-01T12:00:00Z"}, "must be after start"),
        (
            {"start": "2025-03-01T00:00:00Z", "end": "2025-03-02T00:00:00Z", "step": "1s"},
            "at most 2000",
        ),
        ({"step": "0.5"}, "below the minimum"),
        ({"step": "fast"}, "not a duration"),
        ({"step": "-5s"}, "not a duration"),
        ({"start": "yesterday"}, "not RFC3339"),
        ({"end": "1e400"}, "not a time"),
    ],
)
def test_bad_parameters_are_400(seeded: Seeded, params: dict[str, str], message: str) -> None:
    resp = seeded.get("/api/v1/golden-signals", **params)
    assert resp.status_code == 400, resp.text
    assert message in resp.json()["error"]
