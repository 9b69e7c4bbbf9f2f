"""Prompt analytics endpoints against Python arithmetic over the synthetic calls."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.analytics import synth
from tests.analytics.conftest import Seeded, window

PRICES = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "collector" / "analytics" / "prices.yaml").read_text()
)
#: the price-table entry each synthetic model must find (written out, not derived)
PRICE_ENTRY = {
    "gpt-4o-2024-08-06": "gpt-4o",
    "claude-3-5-sonnet-20241022": "claude-3-5-sonnet",
    "text-embedding-3-small": "text-embedding-3-small",
}


def expected_cost(c: synth.Call) -> float | None:
    entry = PRICE_ENTRY.get(c.model)
    if entry is not None:
        return synth.hosted_cost(c, PRICES["models"][entry])
    if c.gpu_seconds is not None:
        hourly = float(PRICES["self_hosted"]["gpu_usd_per_hour"][c.gpu_name])
        return c.gpu_seconds / 3600.0 * hourly
    return None


def in_window(seeded: Seeded) -> list[synth.Call]:
    return [c for c in seeded.calls if 0 <= c.start_s < synth.WINDOW_S]


def by_fingerprint(calls: list[synth.Call]) -> dict[str, list[synth.Call]]:
    out: dict[str, list[synth.Call]] = defaultdict(list)
    for c in calls:
        if c.fingerprint is not None:
            out[c.fingerprint].append(c)
    return out


def _sum_cost(calls: list[synth.Call]) -> float | None:
    costs = [x for x in (expected_cost(c) for c in calls) if x is not None]
    return sum(costs) if costs else None


def test_templates_become_one_fingerprint_each(seeded: Seeded) -> None:
    per_template: dict[str, set[str]] = defaultdict(set)
    for c in seeded.calls:
        if c.template is not None:
            assert c.fingerprint is not None
            per_template[c.template].add(c.fingerprint)
    assert set(per_template) == set(synth.TEMPLATES)
    assert all(len(fps) == 1 for fps in per_template.values()), per_template
    assert len({next(iter(f)) for f in per_template.values()}) == len(synth.TEMPLATES)


def test_per_fingerprint_figures(seeded: Seeded) -> None:
    resp = seeded.get("/api/v1/prompts", **window(limit=50))
    assert resp.status_code == 200, resp.text
    rows = {r["fingerprint"]: r for r in resp.json()["prompts"]}
    want = by_fingerprint(in_window(seeded))
    assert set(rows) == set(want)
    everything = by_fingerprint(seeded.calls)
    for fp, calls in want.items():
        row = rows[fp]
        assert row["calls"] == len(calls)
        errors = [c for c in calls if c.errored]
        assert row["errors"] == len(errors)
        assert row["error_ratio"] == pytest.approx(len(errors) / len(calls))
        assert row["input_tokens"] == sum(c.input_tokens or 0 for c in calls)
        assert row["output_tokens"] == sum(c.output_tokens or 0 for c in calls)
        assert row["cost_usd"] == pytest.approx(_sum_cost(calls), rel=1e-9)
        durations = [c.duration_s for c in calls]
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert row["latency_s"][name] == pytest.approx(synth.percentile(durations, q))
        ttfts = [c.ttft_s for c in calls if c.ttft_s is not None]
        assert row["ttft_s"]["p50"] == pytest.approx(synth.percentile(ttfts, 0.5))
        # first and last seen cover every stored call, inside the window or not
        assert row["first_seen"] == synth.ts(
            min(c.start_s for c in everything[fp])
        ).isoformat().replace("+00:00", "Z")
        assert row["last_seen"] == synth.ts(
            max(c.start_s for c in everything[fp])
        ).isoformat().replace("+00:00", "Z")
        assert row["calls_all_time"] == len(everything[fp])
        latest = max(calls, key=lambda c: c.start_s)
        assert row["example"]["trace_id"] == latest.trace_id
        assert row["example"]["span_id"] == latest.span_id
        assert row["example"]["content"]["system_instructions"] == latest.system_instructions()
        assert latest.system_text is not None
        assert row["example"]["preview"].startswith(latest.system_text.split(".")[0][:20])
        assert sorted(row["models"]) == sorted({c.model for c in calls})


def test_one_fingerprint_and_unknown_ones(seeded: Seeded) -> None:
    fp, calls = next(iter(by_fingerprint(in_window(seeded)).items()))
    resp = seeded.get(f"/api/v1/prompts/{fp}", **window())
    assert resp.status_code == 200
    assert resp.json()["calls"] == len(calls)
    assert seeded.get("/api/v1/prompts/0123456789abcdef", **window()).status_code == 404
    bad = seeded.get("/api/v1/prompts/not-a-fingerprint", **window())
    assert bad.status_code == 400
    assert "not a prompt fingerprint" in bad.json()["error"]


@pytest.mark.parametrize("by", ["slowest", "costliest", "erroring"])
def test_top_prompts(seeded: Seeded, by: str) -> None:
    groups = by_fingerprint(in_window(seeded))

    def key(calls: list[synth.Call]) -> tuple[float, ...]:
        if by == "slowest":
            p95 = synth.percentile([c.duration_s for c in calls], 0.95)
            assert p95 is not None
            return (p95,)
        if by == "costliest":
            return (_sum_cost(calls) or 0.0,)
        errors = sum(c.errored for c in calls)
        return (errors, errors / len(calls))

    want = sorted(groups, key=lambda fp: key(groups[fp]), reverse=True)[:2]
    resp = seeded.get("/api/v1/prompts/top", **window(by=by, limit=2))
    assert resp.status_code == 200, resp.text
    assert [r["fingerprint"] for r in resp.json()["prompts"]] == want


@pytest.mark.parametrize(
    ("by", "value"),
    [
        ("slowest", lambda c: c.duration_s),
        ("costliest", lambda c: expected_cost(c) if expected_cost(c) is not None else -1.0),
        ("slowest_first_token", lambda c: c.ttft_s if c.ttft_s is not None else -1.0),
    ],
)
def test_top_calls(seeded: Seeded, by: str, value: Any) -> None:
    want = sorted(in_window(seeded), key=value, reverse=True)[:5]
    resp = seeded.get("/api/v1/calls/top", **window(by=by, limit=5))
    assert resp.status_code == 200, resp.text
    got = resp.json()["calls"]
    assert [(r["trace_id"], r["span_id"]) for r in got] == [(c.trace_id, c.span_id) for c in want]


def test_input_size_distribution(seeded: Seeded) -> None:
    resp = seeded.get("/api/v1/prompts/input-size", **window())
    assert resp.status_code == 200
    body = resp.json()
    calls = in_window(seeded)
    edges = [0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
    assert [b["input_tokens_min"] for b in body["buckets"]] == edges
    for i, bucket in enumerate(body["buckets"]):
        hi = edges[i + 1] if i + 1 < len(edges) else None
        mine = [
            c
            for c in calls
            if c.input_tokens is not None
            and c.input_tokens >= edges[i]
            and (hi is None or c.input_tokens < hi)
        ]
        assert bucket["calls"] == len(mine), bucket
        assert bucket["input_tokens_max"] == (None if hi is None else hi - 1)
        want_p95 = synth.percentile([c.duration_s for c in mine], 0.95)
        assert bucket["latency_s"]["p95"] == (None if want_p95 is None else pytest.approx(want_p95))
    assert body["calls_without_input_tokens"] == sum(c.input_tokens is None for c in calls)
    assert sum(b["calls"] for b in body["buckets"]) > 0


def test_filters_narrow_the_answer(seeded: Seeded) -> None:
    body = seeded.get("/api/v1/prompts/input-size", **window(model="gpt-4o-2024-08-06")).json()
    want = [
        c
        for c in in_window(seeded)
        if c.model == "gpt-4o-2024-08-06" and c.input_tokens is not None
    ]
    assert sum(b["calls"] for b in body["buckets"]) == len(want)


def test_call_drill_down_with_server_side(seeded: Seeded) -> None:
    call = next(c for c in seeded.calls if c.server_span_id and c.template is not None)
    resp = seeded.get(f"/api/v1/calls/{call.trace_id}/{call.span_id}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["call"]["model"] == call.model
    assert body["tokens"]["input"] == call.input_tokens
    assert body["tokens"]["output"] == call.output_tokens
    assert body["gpu"] == {
        "seconds": pytest.approx(call.gpu_seconds),
        "energy_j": pytest.approx(call.gpu_energy_j),
    }
    assert body["cost"]["basis"] == "gpu_time"
    assert body["cost"]["usd"] == pytest.approx(expected_cost(call))
    t = body["timings"]
    assert call.server_duration_s is not None
    assert t["client_s"] == pytest.approx(call.duration_s)
    assert t["server_s"] == pytest.approx(call.server_duration_s)
    assert t["network_s"] == pytest.approx(call.duration_s - call.server_duration_s)
    assert t["request_leg_s"] == pytest.approx(0.002, abs=1e-6)
    assert t["response_leg_s"] == pytest.approx(
        call.end_s - (call.start_s + 0.002 + call.server_duration_s), abs=2e-6
    )
    assert t["queue_s"] == pytest.approx(call.queue_s)
    assert t["server_span_id"] == call.server_span_id
    assert body["content"]["input_messages"] == call.input_messages()
    assert body["content"]["output_messages"] == call.output_messages()
    spans = body["trace"]
    assert {s["span_id"] for s in spans} == {call.root_span_id, call.span_id, call.server_span_id}
    assert [s["kind"] for s in spans] == ["server", "client", "server"]


def test_call_drill_down_without_server_or_content(seeded: Seeded) -> None:
    call = next(c for c in seeded.calls if not c.server_span_id and c.template is None)
    body = seeded.get(f"/api/v1/calls/{call.trace_id}/{call.span_id}").json()
    assert body["content"] is None
    assert body["timings"]["server_s"] is None
    assert body["timings"]["network_s"] is None
    assert body["cost"]["usd"] == (
        None if expected_cost(call) is None else pytest.approx(expected_cost(call))
    )


def test_call_errors(seeded: Seeded) -> None:
    call = seeded.calls[0]
    missing = seeded.get(f"/api/v1/calls/{call.trace_id}/{'0' * 16}")
    assert missing.status_code == 404
    assert "no LLM call" in missing.json()["error"]
    # the root span exists but is not an LLM call
    assert seeded.get(f"/api/v1/calls/{call.trace_id}/{call.root_span_id}").status_code == 404
    assert seeded.get("/api/v1/calls/xyz/0000000000000000").status_code == 400
    assert seeded.get("/api/v1/calls/top", **window(by="loudest")).status_code == 400
    assert seeded.get("/api/v1/prompts", **window(sort="vibes")).status_code == 400
    assert seeded.get("/api/v1/prompts", **window(limit=0)).status_code == 400
    assert seeded.get("/api/v1/prompts/top", **window(by="x")).status_code == 400


def test_empty_range(seeded: Seeded) -> None:
    params = {"start": "2001-01-01T00:00:00Z", "end": "2001-01-02T00:00:00Z"}
    assert seeded.get("/api/v1/prompts", **params).json()["prompts"] == []
    body = seeded.get("/api/v1/prompts/input-size", **params).json()
    assert all(b["calls"] == 0 for b in body["buckets"])
    assert seeded.get("/api/v1/calls/top", by="slowest", **params).json()["calls"] == []
