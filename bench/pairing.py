"""Pairing precision and recall on a concurrent synthetic workload.

Takes command-line sizes; builds calls at a fixed rate from a few processes over many models with
identical prompts (same input tokens, output tokens from a narrow range), an SDK span and a wire
capture per call (capture inside the SDK span, a few ms of client overhead each side), then runs
`agent.pair.rules.match_calls` twice: with trace context propagated (half the captures under the
SDK span, half under an HTTP client span one level below) and with no trace context and no
response ids (heuristic only), the latter also without token counts on either side (streams
without a usage chunk). Prints precision and recall of each, and the matching time.
Usage: python -m bench.pairing [--rate 500] [--seconds 10] [--models 20] [--pids 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

from agent.pair.rules import CallRecord, PairingResult, PairingSettings, match_calls

MS = 1_000_000


def workload(
    rate: float, seconds: float, models: int, pids: int, seed: int
) -> tuple[list[CallRecord], list[CallRecord], list[CallRecord], dict[tuple[str, str], str]]:
    """SDK spans, captures with context, captures without, the parent map of HTTP spans."""
    rng = random.Random(seed)
    sdk: list[CallRecord] = []
    with_ctx: list[CallRecord] = []
    without: list[CallRecord] = []
    parent_of: dict[tuple[str, str], str] = {}
    n = int(rate * seconds)
    for i in range(n):
        start = int(1_700_000_000 * 1e9) + int(i / rate * 1e9) + rng.randint(0, 2 * MS)
        wire = rng.randint(200, 3000) * MS
        pre, post = rng.randint(1, 4) * MS, rng.randint(1, 4) * MS
        model = f"model-{rng.randrange(models)}"
        pid = 1000 + rng.randrange(pids)
        tout = rng.randint(20, 40)
        trace = f"{i:032x}"
        common = {"request_model": model, "input_tokens": 512, "output_tokens": tout, "pid": pid}
        s = CallRecord(
            trace,
            f"s{i:015x}",
            None,
            "client",
            start,
            start + pre + wire + post,
            source="sdk",
            response_id=f"chatcmpl-{i}",
            **common,  # type: ignore[arg-type]
        )
        sdk.append(s)
        parent = s.span_id
        if i % 2:
            parent = f"h{i:015x}"
            parent_of[(trace, parent)] = s.span_id
        cstart, cend = start + pre, start + pre + wire
        with_ctx.append(
            CallRecord(
                trace,
                f"c{i:015x}",
                parent,
                "client",
                cstart,
                cend,
                source="ebpf",
                response_id=f"chatcmpl-{i}",
                **common,  # type: ignore[arg-type]
            )
        )
        without.append(
            CallRecord(
                f"{i:031x}f",
                f"c{i:015x}",
                None,
                "client",
                cstart,
                cend,
                source="ebpf",
                **common,  # type: ignore[arg-type]
            )
        )
    return sdk, with_ctx, without, parent_of


def score(result: PairingResult, n: int) -> tuple[float, float]:
    """Precision and recall: a pair is right when both records come from the same call."""
    right = sum(p.sdk.span_id[1:] == p.capture.span_id[1:] for p in result.pairs)
    precision = right / len(result.pairs) if result.pairs else 1.0
    return precision, right / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=500.0, help="calls per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--pids", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    sdk, with_ctx, without, parent_of = workload(
        args.rate, args.seconds, args.models, args.pids, args.seed
    )
    n = len(sdk)
    print(
        f"{n} calls, {args.rate:g}/s over {args.seconds:g} s, {args.models} models, "
        f"{args.pids} processes, identical prompts"
    )
    no_tokens = {"input_tokens": None, "output_tokens": None}
    sdk_no_tokens = [dataclasses.replace(r, **no_tokens) for r in sdk]  # type: ignore[arg-type]
    without_no_tokens = [dataclasses.replace(r, **no_tokens) for r in without]  # type: ignore[arg-type]
    for label, spans, caps, settings in (
        ("exact (trace context)", sdk, with_ctx, PairingSettings()),
        ("heuristic only", sdk, without, PairingSettings()),
        ("heuristic, no threshold", sdk, without, PairingSettings(min_heuristic_confidence=0.0)),
        ("heuristic, no token counts", sdk_no_tokens, without_no_tokens, PairingSettings()),
    ):
        t = time.perf_counter()
        result = match_calls(spans, caps, settings, parent_of)
        elapsed = time.perf_counter() - t
        precision, recall = score(result, n)
        methods: dict[str, int] = {}
        for p in result.pairs:
            methods[p.method] = methods.get(p.method, 0) + 1
        print(
            f"{label:27s} precision {precision:8.4%}  recall {recall:8.4%}  "
            f"pairs {len(result.pairs):6d}  {elapsed * 1e3:8.1f} ms  {methods}"
        )


if __name__ == "__main__":
    main()
