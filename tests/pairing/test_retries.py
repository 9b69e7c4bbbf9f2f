"""Retried attempts folded into their call by the pure rules: by trace context, by request
digest (instrumented and not), chains, all attempts failed, and what must not be folded."""

from __future__ import annotations

import dataclasses
import random

from agent.pair.rules import CallRecord, PairingSettings, find_retries, match_calls

S = 1_000_000_000
MS = 1_000_000
PID = 77


def sdk(span: str, start: int, end: int, trace: str = "t1", **kw: object) -> CallRecord:
    fields: dict[str, object] = {"kind": "client", "source": "sdk", "pid": PID}
    fields.update(kw)
    return CallRecord(trace, span, start_unix_ns=start, end_unix_ns=end, **fields)  # type: ignore[arg-type]


def attempt(
    span: str, start: int, end: int, *, ok: bool, trace: str | None = None, **kw: object
) -> CallRecord:
    """A client capture; a failed one (ok=False) is an HTTP error answer."""
    fields: dict[str, object] = {
        "kind": "client",
        "source": "ebpf",
        "pid": PID,
        "request_model": "m1",
        "request_digest": "d1",
        "failed": not ok,
    }
    if ok:
        fields.update(response_id=f"resp-{span}", input_tokens=10, output_tokens=20)
    fields.update(kw)
    return CallRecord(trace or f"cap-{span}", span, start_unix_ns=start, end_unix_ns=end, **fields)  # type: ignore[arg-type]


def folds(result_or_list: object) -> set[tuple[str, str, str]]:
    retries = getattr(result_or_list, "retries", result_or_list)
    return {(r.sdk.span_id, r.capture.span_id, r.method) for r in retries}  # type: ignore[attr-defined]


def unpaired(result: object) -> set[str]:
    return {c.span_id for c in result.unpaired_captures}  # type: ignore[attr-defined]


def test_attempts_under_one_sdk_span_fold_by_trace_context() -> None:
    a1 = attempt("a1", 10 * S, 11 * S, ok=False, trace="t1", parent_span_id="s")
    b = attempt("b", 12 * S, 13 * S, ok=True, trace="t1", parent_span_id="s")
    span = sdk("s", 10 * S - MS, 13 * S + MS, response_id="resp-b", output_tokens=20)
    r = match_calls([span], [b, a1])
    assert {(p.sdk.span_id, p.capture.span_id, p.method) for p in r.pairs} == {
        ("s", "b", "traceparent")
    }
    assert folds(r) == {("s", "a1", "retry_trace")}
    assert not unpaired(r)
    assert all(p.confidence == 1.0 for p in r.retries)


def test_a_successful_second_capture_under_one_span_is_not_a_retry() -> None:
    b1 = attempt("b1", 10 * S, 11 * S, ok=True, trace="t1", parent_span_id="s")
    b2 = attempt("b2", 12 * S, 13 * S, ok=True, trace="t1", parent_span_id="s", response_id="x")
    span = sdk("s", 10 * S - MS, 13 * S + MS, response_id="resp-b1")
    r = match_calls([span], [b1, b2])
    assert not r.retries
    assert unpaired(r) == {"b2"}


def test_attempt_without_trace_context_folds_by_digest_into_the_paired_sdk_span() -> None:
    # the official OpenAI instrumentation injects no traceparent: the final attempt pairs by
    # response id, the failed one by digest
    a1 = attempt("a1", 10 * S, 10 * S + 50 * MS, ok=False)
    b = attempt("b", 10 * S + 600 * MS, 11 * S, ok=True)
    span = sdk("s", 10 * S - MS, 11 * S + MS, response_id="resp-b")
    r = match_calls([span], [a1, b])
    assert {(p.sdk.span_id, p.capture.span_id) for p in r.pairs} == {("s", "b")}
    assert folds(r) == {("s", "a1", "retry_digest")}
    assert not unpaired(r)


def test_uninstrumented_retries_fold_into_the_last_attempt() -> None:
    a1 = attempt("a1", 10 * S, 10 * S + 50 * MS, ok=False)
    a2 = attempt("a2", 11 * S, 11 * S + 50 * MS, ok=False)
    b = attempt("b", 13 * S, 14 * S, ok=True)
    r = match_calls([], [b, a2, a1])
    assert folds(r) == {("b", "a1", "retry_digest"), ("b", "a2", "retry_digest")}
    assert unpaired(r) == {"b"}


def test_every_attempt_failed_folds_into_the_last_one() -> None:
    caps = [
        attempt(f"a{i}", (10 + 2 * i) * S, (10 + 2 * i) * S + 10 * MS, ok=False) for i in range(3)
    ]
    r = match_calls([], caps)
    assert folds(r) == {("a2", "a0", "retry_digest"), ("a2", "a1", "retry_digest")}
    assert unpaired(r) == {"a2"}
    # while another attempt may still come (within the retry gap of the last), nothing folds
    assert not match_calls([], caps, now_unix_ns=15 * S).retries
    assert len(match_calls([], caps, now_unix_ns=80 * S).retries) == 2


def test_a_failed_last_attempt_inside_the_sdk_span_folds_into_it() -> None:
    # the SDK span was paired (by an earlier pass) with the middle attempt
    a0 = attempt("a0", 10 * S, 10 * S + 10 * MS, ok=False)
    a1 = attempt("a1", 11 * S, 11 * S + 10 * MS, ok=False)
    a2 = attempt("a2", 12 * S, 12 * S + 10 * MS, ok=False)
    span = sdk("s", 10 * S - MS, 12 * S + 20 * MS)
    got = find_retries([a0, a2], [(a1, span)])
    assert folds(got) == {("s", "a0", "retry_digest"), ("s", "a2", "retry_digest")}
    # outside the SDK span it is a call of its own
    late = attempt("a3", 40 * S, 40 * S + 10 * MS, ok=False)
    assert not find_retries([late], [(a1, span)])


def test_an_attempt_folds_into_a_call_paired_by_an_earlier_pass() -> None:
    b = attempt("b", 11 * S, 12 * S, ok=True)
    span = sdk("s", 10 * S - MS, 12 * S + MS)
    a1 = attempt("a1", 10 * S, 10 * S + 10 * MS, ok=False)
    assert folds(find_retries([a1], [(b, span)])) == {("s", "a1", "retry_digest")}


def test_what_is_not_a_retry() -> None:
    base = attempt("a", 10 * S, 10 * S + 500 * MS, ok=False)
    cases = {
        "other digest": attempt("b", 11 * S, 12 * S, ok=True, request_digest="d2"),
        "other process": attempt("b", 11 * S, 12 * S, ok=True, pid=PID + 1),
        "past the gap": attempt("b", 80 * S, 81 * S, ok=True),
        "started before it ended": attempt("b", 10 * S + 200 * MS, 12 * S, ok=True),
        "says it is a first attempt": attempt("b", 11 * S, 12 * S, ok=True, resend_count=0),
    }
    for why, nxt in cases.items():
        r = match_calls([], [base, nxt])
        assert not r.retries, why
        assert unpaired(r) == {"a", "b"}, why
    # a successful exchange followed by the same request is two calls
    ok_first = attempt("a", 10 * S, 10 * S + 10 * MS, ok=True)
    r = match_calls([], [ok_first, attempt("b", 11 * S, 12 * S, ok=True, response_id="r2")])
    assert not r.retries
    # a declared re-send folds even when the request digests of the process are many
    resend = attempt("b", 11 * S, 12 * S, ok=True, resend_count=1)
    assert folds(match_calls([], [base, resend])) == {("b", "a", "retry_digest")}
    # without a digest nothing is known
    r = match_calls([], [attempt("a", 10 * S, 11 * S, ok=False, request_digest=None), resend])
    assert not r.retries


def test_an_attempt_waits_to_settle() -> None:
    settings = PairingSettings(settle_ns=S)
    a1 = attempt("a1", 10 * S, 10 * S + 10 * MS, ok=False, received_unix_ns=20 * S)
    b = attempt("b", 11 * S, 12 * S, ok=True, received_unix_ns=20 * S)
    assert not match_calls([], [a1, b], settings, now_unix_ns=20 * S + S // 2).retries
    assert folds(match_calls([], [a1, b], settings, now_unix_ns=21 * S)) == {
        ("b", "a1", "retry_digest")
    }
    # inside the SDK span its retry was paired with, it cannot be a call of its own
    span = sdk("s", 10 * S - MS, 12 * S + MS, response_id="resp-b", received_unix_ns=20 * S)
    r = match_calls([span], [a1, b], settings, now_unix_ns=20 * S + S // 2)
    assert folds(r) == {("s", "a1", "retry_digest")}


def test_concurrent_calls_of_one_process_fold_into_their_own_calls() -> None:
    """Eight concurrent calls of one process, each with its own request; some retried once or
    twice. Input order does not matter."""
    rng = random.Random(5)
    caps: list[CallRecord] = []
    spans: list[CallRecord] = []
    want: set[tuple[str, str, str]] = set()
    for i in range(8):
        t = 10 * S + i * 37 * MS
        tries = rng.choice([0, 1, 2])
        first = t
        for k in range(tries):
            caps.append(attempt(f"c{i}-{k}", t, t + 20 * MS, ok=False, request_digest=f"d{i}"))
            want.add((f"s{i}", f"c{i}-{k}", "retry_digest"))
            t += 300 * MS
        caps.append(attempt(f"c{i}-ok", t, t + S, ok=True, request_digest=f"d{i}"))
        spans.append(sdk(f"s{i}", first - MS, t + S + MS, response_id=f"resp-c{i}-ok"))
    for _ in range(5):
        rng.shuffle(caps)
        rng.shuffle(spans)
        r = match_calls(spans, caps)
        assert len(r.pairs) == 8
        assert folds(r) == want
        assert not unpaired(r)


def test_a_request_repeated_into_failures_is_not_one_call() -> None:
    """A process sending the same request again and again while the server refuses it (a load
    generator during an outage) makes many calls, not one call with many attempts; a chain of
    up to `retry_max_attempts` exchanges is still one call."""
    flood = [attempt(f"f{i}", (10 + i) * S, (10 + i) * S + 10 * MS, ok=False) for i in range(30)]
    r = match_calls([], flood)
    assert not r.retries
    assert len(r.unpaired_captures) == 30
    settings = PairingSettings(retry_max_attempts=4)
    chain = [attempt(f"a{i}", (10 + i) * S, (10 + i) * S + 10 * MS, ok=False) for i in range(3)]
    chain.append(attempt("b", 13 * S, 14 * S, ok=True))
    assert len(match_calls([], chain, settings).retries) == 3
    longer = [attempt("a-1", 9 * S, 9 * S + 10 * MS, ok=False), *chain]
    assert not match_calls([], longer, settings).retries


def test_long_runs_of_one_request_stay_cheap() -> None:
    """5,000 exchanges of one request from one process, every other one failed: each chain
    is found once (memoized), not walked again from every attempt."""
    caps = [
        attempt(f"x{i:05d}", (10 + i) * S, (10 + i) * S + 10 * MS, ok=bool(i % 2))
        for i in range(5000)
    ]
    r = match_calls([], caps)
    # each failed exchange is retried by the next, successful one: 2,500 calls of 2 attempts
    assert len(r.retries) == 2500
    assert {p.sdk.span_id for p in r.retries} == {f"x{i:05d}" for i in range(1, 5000, 2)}


def test_identical_prompts_of_one_process_fold_into_the_call_that_retried() -> None:
    """Call X gets a 429 and retries after a backoff; meanwhile call Y, with the very same
    request, starts. The attempt belongs to X: by the attempt number the client declares, or,
    without one, because X's SDK span encloses it."""
    a = attempt("a", 10 * S, 10 * S + 20 * MS, ok=False)
    y_cap = attempt("y", 10 * S + 100 * MS, 11 * S, ok=True)
    r = attempt("r", 10 * S + 600 * MS, 11 * S + 500 * MS, ok=True)
    x = sdk("x", 10 * S - MS, 11 * S + 501 * MS, response_id="resp-r", output_tokens=20)
    y = sdk("y-span", 10 * S + 99 * MS, 11 * S + MS, response_id="resp-y", output_tokens=20)
    # with the SDKs' attempt numbers (a fresh call says 0)
    numbered = [
        dataclasses.replace(a, resend_count=0),
        dataclasses.replace(y_cap, resend_count=0),
        dataclasses.replace(r, resend_count=1),
    ]
    for caps in (numbered, [a, y_cap, r]):
        got = match_calls([x, y], caps)
        assert {(p.sdk.span_id, p.capture.span_id) for p in got.pairs} == {
            ("x", "r"),
            ("y-span", "y"),
        }
        assert folds(got) == {("x", "a", "retry_digest")}
    # without SDK spans nothing tells X's retry from Y: the attempt still folds into one call
    got = match_calls([], [a, y_cap, r])
    assert len(got.retries) == 1
    assert len(got.unpaired_captures) == 2
