"""GPU time and energy per call: the model's arithmetic, and attribution against ground truth."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.gpu.energy import (
    AttributionResult,
    CallSpan,
    EnergySample,
    attribute_energy,
    energy_samples,
)
from agent.gpu.nvml_sampler import GpuSamplerConfig, NvmlSampler
from agent.gpu.types import GpuSample
from tests.gpu.conftest import BASE_UNIX_NS
from tests.gpu.fake_nvml.build import FakeNvml
from tests.gpu.fake_nvml.scenario import FakeDevice, Scenario
from tests.gpu.groundtruth import NS, GroundTruth, Req

S = NS


def spans(
    reqs: list[Req],
    gpus: tuple[str, ...] = ("GPU-g",),
    *,
    with_tokens: bool = True,
    offset_ns: int = 0,
) -> list[CallSpan]:
    return [
        CallSpan(
            r.call_id,
            offset_ns + round(r.start_s * NS),
            offset_ns + round(r.end_s * NS),
            gpus,
            r.tokens if with_tokens else None,
        )
        for r in reqs
    ]


def assert_balanced(result: AttributionResult, samples: dict[str, list[EnergySample]]) -> None:
    """Idle plus every call's share equals each GPU's counter delta over the window."""
    for uuid, series in samples.items():
        first, last = series[0].energy_j, series[-1].energy_j
        assert first is not None
        assert last is not None
        delta = last - first
        given = math.fsum(u.energy_j_by_gpu.get(uuid, 0.0) for u in result.calls.values())
        balance = result.gpus[uuid]
        assert given + balance.idle_j == pytest.approx(delta, rel=1e-9, abs=1e-6)
        assert balance.total_j == pytest.approx(delta, rel=1e-9)
        assert balance.active_j == pytest.approx(given, rel=1e-9, abs=1e-6)


def assert_close_to_truth(
    result: AttributionResult,
    gt: GroundTruth,
    *,
    energy_rel: float,
    seconds_rel: float | None = None,
) -> None:
    truth = gt.truth()
    for call_id, (true_j, true_s) in truth.items():
        got = result.calls[call_id]
        assert got.energy_j == pytest.approx(true_j, rel=energy_rel), call_id
        if seconds_rel is not None:
            assert got.gpu_seconds == pytest.approx(true_s, rel=seconds_rel), call_id


# ---- the model's arithmetic (the worked example of docs/gpu.md) ----


def test_worked_example_from_the_docs() -> None:
    samples = {
        "GPU-g": [
            EnergySample(0 * S, 1000.0, 80.0, 0.0),
            EnergySample(1 * S, 1200.0, 250.0, 60.0),
            EnergySample(2 * S, 1500.0, 300.0, 90.0),
        ]
    }
    calls = [
        CallSpan("A", S // 2, 2 * S, ("GPU-g",), tokens=300),
        CallSpan("B", S, 3 * S // 2, ("GPU-g",), tokens=200),
    ]
    result = attribute_energy(samples, calls, idle_power_w=80.0)
    a, b = result.calls["A"], result.calls["B"]
    assert a.energy_j == pytest.approx(310.0)
    assert b.energy_j == pytest.approx(150.0)
    gpu = result.gpus["GPU-g"]
    assert gpu.idle_j == pytest.approx(40.0)
    assert gpu.total_j == pytest.approx(500.0)
    # no fully idle interval in the window: busy time of the partly idle one is split by time
    assert a.gpu_seconds == pytest.approx(0.3 + 0.45)
    assert b.gpu_seconds == pytest.approx(0.45)
    assert gpu.busy_s == pytest.approx(1.5)
    assert gpu.unattributed_busy_s == pytest.approx(0.3)
    assert_balanced(result, samples)


def test_tokens_weight_the_share_and_unknown_tokens_fall_back_to_time() -> None:
    samples = {"GPU-g": [EnergySample(0, 0.0, None, 100.0), EnergySample(S, 400.0, None, 100.0)]}
    heavy = CallSpan("heavy", 0, S, ("GPU-g",), tokens=300)
    light = CallSpan("light", 0, S, ("GPU-g",), tokens=100)
    by_tokens = attribute_energy(samples, [heavy, light])
    assert by_tokens.calls["heavy"].energy_j == pytest.approx(300.0)
    assert by_tokens.calls["light"].energy_j == pytest.approx(100.0)
    unknown = CallSpan("unknown", 0, S, ("GPU-g",), tokens=None)
    by_time = attribute_energy(samples, [heavy, unknown])
    assert by_time.calls["heavy"].energy_j == pytest.approx(200.0)
    assert by_time.calls["unknown"].energy_j == pytest.approx(200.0)


def test_power_fills_in_where_the_counter_is_missing_or_resets() -> None:
    samples = {
        "GPU-g": [
            EnergySample(0, None, 100.0, 50.0),
            EnergySample(S, None, 300.0, 50.0),
            EnergySample(2 * S, 9000.0, 200.0, 50.0),
            EnergySample(3 * S, 10.0, 200.0, 50.0),
        ]
    }  # driver reloaded: reset
    result = attribute_energy(samples, [CallSpan("c", 0, 3 * S, ("GPU-g",))])
    gpu = result.gpus["GPU-g"]
    assert (gpu.counter_intervals, gpu.power_intervals) == (0, 3)
    assert result.calls["c"].energy_j == pytest.approx(200.0 + 250.0 + 200.0)
    assert gpu.idle_j == 0.0


def test_calls_on_several_gpus_and_outside_the_window() -> None:
    samples = {
        g: [EnergySample(0, 0.0, None, 100.0), EnergySample(S, 100.0 * (i + 1), None, 100.0)]
        for i, g in enumerate(["GPU-0", "GPU-1"])
    }
    tp = CallSpan("tensor-parallel", 0, S, ("GPU-0", "GPU-1"))
    late = CallSpan("after-window", 5 * S, 6 * S, ("GPU-0",))
    elsewhere = CallSpan("other-gpu", 0, S, ("GPU-9",))
    result = attribute_energy(samples, [tp, late, elsewhere])
    assert result.calls["tensor-parallel"].energy_j == pytest.approx(300.0)
    assert result.calls["tensor-parallel"].energy_j_by_gpu == pytest.approx(
        {"GPU-0": 100.0, "GPU-1": 200.0}
    )
    assert result.calls["tensor-parallel"].gpu_seconds == pytest.approx(2.0)
    assert result.calls["after-window"].energy_j == 0.0
    assert result.calls["other-gpu"].energy_j == 0.0
    assert_balanced(result, samples)


def test_energy_samples_from_sampler_records() -> None:
    recs = [
        GpuSample(2 * S, 0, "GPU-a", None, energy_j=7.0, power_w=1.0, gpu_util_pct=3.0),
        GpuSample(1 * S, 0, "GPU-a", None, energy_j=5.0),
        GpuSample(1 * S, 1, "GPU-b", None, energy_j=None, power_w=9.0),
    ]
    series = energy_samples(recs)
    assert [e.unix_ns for e in series["GPU-a"]] == [S, 2 * S]
    assert series["GPU-a"][1] == EnergySample(2 * S, 7.0, 1.0, 3.0)
    assert series["GPU-b"][0].power_w == 9.0


# ---- against ground truth ----


def random_requests(
    seed: int,
    n: int,
    prefix: str,
    t_max_s: float,
    dur: tuple[float, float],
    tokens: tuple[int, int],
) -> list[Req]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        start = rng.uniform(0.5, t_max_s)
        out.append(
            Req(
                f"{prefix}{i}",
                round(start, 3),
                round(start + rng.uniform(*dur), 3),
                rng.randint(*tokens),
            )
        )
    return out


def test_one_request_alone() -> None:
    gt = GroundTruth([Req("only", 5.0, 12.3, 2000)], t_end_s=20.0)
    samples = {"GPU-g": gt.samples(0.1)}
    result = attribute_energy(samples, spans(gt.reqs))
    assert_close_to_truth(result, gt, energy_rel=0.05, seconds_rel=0.05)
    assert result.gpus["GPU-g"].idle_power_w == pytest.approx(gt.idle_w)
    assert_balanced(result, samples)


def test_many_overlapping_requests() -> None:
    reqs = random_requests(7, 30, "r", 24.0, (1.0, 5.0), (100, 3000))
    gt = GroundTruth(reqs, t_end_s=32.0)
    samples = {"GPU-g": gt.samples(0.1)}
    result = attribute_energy(samples, spans(reqs))
    # a low-rate call sharing intervals with fast ones has the largest relative error
    assert_close_to_truth(result, gt, energy_rel=0.05, seconds_rel=0.10)
    total_true_s = sum(s for _, s in gt.truth().values())
    total_s = sum(u.gpu_seconds for u in result.calls.values())
    assert total_s == pytest.approx(total_true_s, rel=0.02)
    assert_balanced(result, samples)


def test_token_weighting_matters() -> None:
    """Splitting by time alone misses the truth by far more than the 5% bound."""
    reqs = [Req("fast", 1.0, 9.0, 16000), Req("slow", 1.0, 9.0, 400)]
    gt = GroundTruth(reqs, t_end_s=12.0)
    samples = {"GPU-g": gt.samples(0.1)}
    by_tokens = attribute_energy(samples, spans(reqs))
    assert_close_to_truth(by_tokens, gt, energy_rel=0.05)
    by_time = attribute_energy(samples, spans(reqs, with_tokens=False))
    slow_true = gt.truth()["slow"][0]
    assert abs(by_time.calls["slow"].energy_j - slow_true) / slow_true > 0.5


def test_requests_from_two_pods_on_one_gpu() -> None:
    pod_a = random_requests(11, 12, "a", 20.0, (0.8, 3.0), (200, 1500))
    pod_b = random_requests(12, 6, "b", 20.0, (3.0, 8.0), (2000, 9000))
    gt = GroundTruth(pod_a + pod_b, t_end_s=32.0)
    samples = {"GPU-g": gt.samples(0.1)}
    result = attribute_energy(samples, spans(gt.reqs))
    assert_close_to_truth(result, gt, energy_rel=0.05)
    truth = gt.truth()
    for pod in (pod_a, pod_b):
        got = sum(result.calls[r.call_id].energy_j for r in pod)
        want = sum(truth[r.call_id][0] for r in pod)
        assert got == pytest.approx(want, rel=0.02)
    assert_balanced(result, samples)


def test_idle_gaps_go_to_idle() -> None:
    reqs = [Req("a", 2.0, 4.0, 500), Req("b", 10.0, 11.0, 300), Req("c", 20.0, 25.0, 4000)]
    gt = GroundTruth(reqs, t_end_s=30.0)
    samples = {"GPU-g": gt.samples(0.1)}
    result = attribute_energy(samples, spans(reqs))
    assert_close_to_truth(result, gt, energy_rel=0.05, seconds_rel=0.05)
    window_s = (samples["GPU-g"][-1].unix_ns - samples["GPU-g"][0].unix_ns) / NS
    busy_s = sum(r.end_s - r.start_s for r in reqs)
    assert result.gpus["GPU-g"].idle_j == pytest.approx(gt.idle_w * (window_s - busy_s), rel=0.01)
    assert result.gpus["GPU-g"].unattributed_busy_s == pytest.approx(0.0, abs=1e-9)
    assert_balanced(result, samples)


def test_long_requests_at_a_one_second_period() -> None:
    reqs = random_requests(3, 10, "L", 40.0, (10.0, 20.0), (1000, 20000))
    gt = GroundTruth(reqs, t_end_s=70.0)
    samples = {"GPU-g": gt.samples(1.0)}
    result = attribute_energy(samples, spans(reqs))
    assert_close_to_truth(result, gt, energy_rel=0.05, seconds_rel=0.05)
    assert_balanced(result, samples)


def test_through_the_sampler_and_the_fake_library(
    use_scenario: Callable[[Scenario], Path],
    make_sampler: Callable[..., NvmlSampler],
    fake_nvml: FakeNvml,
) -> None:
    """The counter the sampler reads through pynvml is the ground truth's power integral."""
    reqs = random_requests(21, 15, "e2e", 15.0, (1.0, 4.0), (200, 4000))
    gt = GroundTruth(reqs, t_end_s=22.0)
    gpu = FakeDevice("GPU-e2e", energy_start_mj=77_000_000)
    for seg in gt.segments():
        gpu.at(seg.start_s, "power_mw", round(seg.power_w * 1000))
        gpu.at(seg.start_s, "gpu_util", round(seg.util * 100))
    use_scenario(Scenario([gpu]))
    sampler = make_sampler(GpuSamplerConfig(period_s=0.1))
    assert sampler.open()
    for t in gt.read_times(0.1, 0.0371):
        fake_nvml.set_time(t)
        sampler.sample_once(processes=False)
    samples = energy_samples(r for r in sampler.drain() if isinstance(r, GpuSample))
    assert len(samples["GPU-e2e"]) == len(gt.read_times(0.1, 0.0371))
    result = attribute_energy(samples, spans(reqs, ("GPU-e2e",), offset_ns=BASE_UNIX_NS))
    # the counter has mJ resolution and power mW resolution: well inside the 5% bound
    assert_close_to_truth(result, gt, energy_rel=0.05)
    first, last = samples["GPU-e2e"][0], samples["GPU-e2e"][-1]
    assert last.energy_j is not None
    assert first.energy_j is not None
    t0, t1 = first.unix_ns - BASE_UNIX_NS, last.unix_ns - BASE_UNIX_NS
    assert last.energy_j - first.energy_j == pytest.approx(gt.energy_j(t0 / NS, t1 / NS), abs=0.01)
    assert_balanced(result, samples)
