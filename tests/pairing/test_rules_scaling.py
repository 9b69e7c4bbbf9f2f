"""The heuristic method's index gives exactly the pairs of trying every SDK span against every
capture, and keeps matching near-linear in the number of calls."""

from __future__ import annotations

import random
import time
from collections import defaultdict

import pytest

from agent.pair import rules
from agent.pair.rules import CallRecord, PairingSettings, match_calls
from bench.pairing import score, workload

S = 1_000_000_000
MS = 1_000_000


def brute_force_heuristic(
    sdks: list[CallRecord],
    caps: list[CallRecord],
    s: PairingSettings,
    now_unix_ns: int | None,
) -> set[tuple[rules.Key, rules.Key, float]]:
    """Every SDK span against every capture, then the greedy assignment (the reference)."""
    sdk_list = list({r.key: r for r in sdks}.values())
    cap_list = list({r.key: r for r in caps}.values())
    edges = []
    for sdk in sdk_list:
        if not rules._settled(sdk, s, now_unix_ns):
            continue
        for cap in cap_list:
            if not rules._settled(cap, s, now_unix_ns):
                continue
            value = rules._heuristic_score(sdk, cap, s)
            if value is not None:
                edges.append((-value, rules._distance_ns(sdk, cap), sdk.key, cap.key))
    edges.sort()
    everyone: dict[rules.Key, list[int]] = defaultdict(list)
    for _, dist, sk, ck in edges:
        everyone[sk].append(dist)
        everyone[ck].append(dist)
    used: set[rules.Key] = set()
    out = set()
    for neg, dist, sk, ck in edges:
        if sk in used or ck in used:
            continue
        competitor = rules._second_smallest(everyone[sk] + everyone[ck], dist)
        clarity = (
            1.0 if competitor is None else 0.5 + 0.5 * (competitor - dist) / max(competitor, 1)
        )
        confidence = round(-neg * clarity, 4)
        if confidence < s.min_heuristic_confidence:
            continue
        used.update((sk, ck))
        out.add((sk, ck, confidence))
    return out


def _messy(seed: int, n: int) -> tuple[list[CallRecord], list[CallRecord]]:
    """Calls with every kind of missing or ambiguous evidence the heuristic has to handle."""
    rng = random.Random(seed)
    sdks: list[CallRecord] = []
    caps: list[CallRecord] = []
    for i in range(n):
        start = 100 * S + rng.randrange(0, 20 * S)
        dur = rng.choice([rng.randrange(1, 50) * MS, rng.randrange(100, 3000) * MS, 90 * S, 0])
        model = rng.choice(["m1", "m2", "M1", None])
        alt = rng.choice([None, None, "m1-2025", "m3"])
        tin = rng.choice([None, 10, 11, 512])
        tout = rng.choice([None, 1, 2, 3])
        pid = rng.choice([None, 7, 8, 9])
        pod = rng.choice([None, None, "p1", "p2"])
        kind = rng.choice(["client", "client", "client", "internal", "server"])
        received = 100 * S + rng.randrange(0, 40 * S)
        sdks.append(
            CallRecord(
                f"t{i}",
                f"s{i}",
                kind=kind,
                start_unix_ns=start,
                end_unix_ns=start + dur,
                request_model=model,
                response_model=alt,
                input_tokens=tin,
                output_tokens=tout,
                pid=pid,
                pod=pod,
                received_unix_ns=received,
            )
        )
        if rng.random() < 0.8:
            shift = rng.randrange(-5, 30) * MS
            caps.append(
                CallRecord(
                    f"x{i}",
                    f"c{i}",
                    kind=kind if rng.random() < 0.9 else "client",
                    start_unix_ns=start + shift,
                    end_unix_ns=start + shift + max(dur - rng.randrange(0, 20) * MS, 0),
                    request_model=model if rng.random() < 0.9 else rng.choice(["m1", "m2", None]),
                    response_model=rng.choice([None, alt, "m2"]),
                    input_tokens=tin if rng.random() < 0.9 else rng.choice([None, 10, 11]),
                    output_tokens=tout if rng.random() < 0.9 else rng.choice([None, 1, 2]),
                    pid=pid if rng.random() < 0.9 else rng.choice([None, 7]),
                    pod=pod if rng.random() < 0.9 else rng.choice([None, "p1"]),
                    source="ebpf",
                    received_unix_ns=received + rng.randrange(-2 * S, 2 * S),
                )
            )
    return sdks, caps


@pytest.mark.parametrize("seed", range(8))
def test_index_finds_exactly_what_trying_every_pair_finds(seed: int) -> None:
    sdks, caps = _messy(seed, 400)
    rng = random.Random(seed)
    settings = PairingSettings(
        settle_ns=rng.choice([0, 5 * S]),
        min_heuristic_confidence=rng.choice([0.0, 0.3, 0.6]),
        window_ns=rng.choice([600 * S, 2 * S]),
    )
    now = rng.choice([None, 130 * S, 150 * S])
    result = match_calls(sdks, caps, settings, now_unix_ns=now)
    assert {p.method for p in result.pairs} <= {"heuristic"}
    got = {(p.sdk.key, p.capture.key, p.confidence) for p in result.pairs}
    assert got == brute_force_heuristic(sdks, caps, settings, now)
    assert len(got) > 20  # the workload does pair, so the comparison means something
    paired = {p.sdk.key for p in result.pairs} | {p.capture.key for p in result.pairs}
    assert len(result.unpaired_sdk) + len(result.pairs) == len({r.key for r in sdks})
    assert not paired & {r.key for r in result.unpaired_sdk + result.unpaired_captures}


def test_heuristic_matching_of_5000_concurrent_calls_is_fast_and_right() -> None:
    # 500 calls/s from 4 processes, 20 models, identical prompts: every process has hundreds
    # of calls in flight, which trying every pair made take over 10 s
    sdks, _, without, _ = workload(500, 10, 20, 4, 7)
    t = time.perf_counter()
    result = match_calls(sdks, without)
    elapsed_s = time.perf_counter() - t
    assert score(result, len(sdks)) == (1.0, 1.0)
    assert elapsed_s < 3.0, elapsed_s
