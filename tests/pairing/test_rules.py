"""The pure pairing rules: every method, ties, one-to-one, order and re-sent batches."""

from __future__ import annotations

import random

from agent.pair.rules import CallRecord, PairingSettings, match_calls

S = 1_000_000_000
MS = 1_000_000


def sdk(
    span: str, trace: str = "t1", start: int = 10 * S, dur: int = S, **kw: object
) -> CallRecord:
    fields: dict[str, object] = {"kind": "client", "source": "sdk", "request_model": "m1"}
    fields.update(kw)
    return CallRecord(trace, span, start_unix_ns=start, end_unix_ns=start + dur, **fields)  # type: ignore[arg-type]


def cap(
    span: str, trace: str = "t1", start: int = 10 * S + 5 * MS, dur: int = S - 10 * MS, **kw: object
) -> CallRecord:
    fields: dict[str, object] = {"kind": "client", "source": "ebpf", "request_model": "m1"}
    fields.update(kw)
    return CallRecord(trace, span, start_unix_ns=start, end_unix_ns=start + dur, **fields)  # type: ignore[arg-type]


def pairs_of(result: object) -> set[tuple[str, str, str]]:
    return {(p.sdk.span_id, p.capture.span_id, p.method) for p in result.pairs}  # type: ignore[attr-defined]


def test_traceparent_direct_parent() -> None:
    r = match_calls(
        [sdk("a"), sdk("b")], [cap("c1", parent_span_id="b"), cap("c2", parent_span_id="a")]
    )
    assert pairs_of(r) == {("a", "c2", "traceparent"), ("b", "c1", "traceparent")}
    assert all(p.confidence == 1.0 for p in r.pairs)
    assert not r.unpaired_sdk
    assert not r.unpaired_captures


def test_traceparent_through_http_client_child() -> None:
    # capture's parent is the httpx span "h", whose parent is the SDK span "a"
    r = match_calls([sdk("a")], [cap("c", parent_span_id="h")], parent_of={("t1", "h"): "a"})
    assert pairs_of(r) == {("a", "c", "traceparent_child")}
    # without the parent map the capture's parent is unknown: the heuristic has no pid to use
    r2 = match_calls([sdk("a")], [cap("c", parent_span_id="h")])
    assert not r2.pairs


def test_traceparent_needs_same_trace() -> None:
    r = match_calls([sdk("a", trace="t1")], [cap("c", trace="t2", parent_span_id="a")])
    assert not r.pairs


def test_retries_under_one_sdk_span_pick_the_reported_outcome() -> None:
    first = (
        cap("c1", parent_span_id="a", response_id=None, http_status=None)
        if False
        else cap("c1", parent_span_id="a", output_tokens=None)
    )
    second = cap("c2", parent_span_id="a", response_id="chatcmpl-x", output_tokens=7)
    r = match_calls([sdk("a", response_id="chatcmpl-x", output_tokens=7)], [second, first])
    assert pairs_of(r) == {("a", "c2", "traceparent")}
    assert [c.span_id for c in r.unpaired_captures] == ["c1"]


def test_response_id_without_trace_context() -> None:
    r = match_calls(
        [sdk("a", trace="t1", response_id="msg_1"), sdk("b", trace="t2", response_id="msg_2")],
        [cap("c2", trace="t9", response_id="msg_2"), cap("c1", trace="t8", response_id="msg_1")],
    )
    assert pairs_of(r) == {("a", "c1", "response_id"), ("b", "c2", "response_id")}
    assert {p.confidence for p in r.pairs} == {1.0}


def test_repeated_response_ids_pair_by_time_with_lower_confidence() -> None:
    # a test server that numbers every response the same
    s1, s2 = (
        sdk("a", start=10 * S, response_id="chatcmpl-0"),
        sdk("b", start=20 * S, response_id="chatcmpl-0"),
    )
    c1 = cap("c1", trace="x", start=10 * S + MS, response_id="chatcmpl-0")
    c2 = cap("c2", trace="y", start=20 * S + MS, response_id="chatcmpl-0")
    r = match_calls([s1, s2], [c2, c1])
    assert pairs_of(r) == {("a", "c1", "response_id"), ("b", "c2", "response_id")}
    assert {p.confidence for p in r.pairs} == {0.8}


def test_response_id_with_conflicting_model_is_rejected() -> None:
    r = match_calls(
        [sdk("a", response_id="r1", request_model="m1")],
        [cap("c", trace="x", response_id="r1", request_model="m2")],
    )
    assert not r.pairs


def test_request_id_header() -> None:
    r = match_calls([sdk("a", request_id="req_1")], [cap("c", trace="x", request_id="req_1")])
    assert pairs_of(r) == {("a", "c", "request_id")}


def test_heuristic_pid_time_model_tokens() -> None:
    a = sdk("a", trace="t1", pid=7, input_tokens=10, output_tokens=5)
    b = sdk("b", trace="t2", start=10 * S + 300 * MS, pid=7, input_tokens=11, output_tokens=5)
    ca = cap("ca", trace="x1", pid=7, input_tokens=10, output_tokens=5)
    cb = cap("cb", trace="x2", start=10 * S + 305 * MS, pid=7, input_tokens=11, output_tokens=5)
    r = match_calls([a, b], [cb, ca])
    assert pairs_of(r) == {("a", "ca", "heuristic"), ("b", "cb", "heuristic")}
    assert all(0.3 <= p.confidence <= 1.0 for p in r.pairs)


def test_heuristic_rules_out_other_pid_tokens_model_or_time() -> None:
    base = sdk("a", pid=7, input_tokens=10, output_tokens=5)
    for c in (
        cap("c", trace="x", pid=8, input_tokens=10, output_tokens=5),
        cap("c", trace="x", pid=7, input_tokens=10, output_tokens=6),
        cap("c", trace="x", pid=7, input_tokens=10, output_tokens=5, request_model="m2"),
        cap("c", trace="x", start=30 * S, pid=7, input_tokens=10, output_tokens=5),
    ):
        assert not match_calls([base], [c]).pairs, c


def test_heuristic_pod_instead_of_pid() -> None:
    r = match_calls(
        [sdk("a", pod="p1", input_tokens=3, output_tokens=4)],
        [cap("c", trace="x", pod="p1", input_tokens=3, output_tokens=4)],
    )
    assert pairs_of(r) == {("a", "c", "heuristic")}


def test_heuristic_tie_is_one_to_one_and_less_confident() -> None:
    # two identical concurrent calls of one process: each capture pairs once, and the
    # confidence says the evidence could not tell them apart well
    a = sdk("a", trace="t1", pid=7, input_tokens=10, output_tokens=5)
    b = sdk("b", trace="t2", start=10 * S + MS, pid=7, input_tokens=10, output_tokens=5)
    c1 = cap("c1", trace="x1", pid=7, input_tokens=10, output_tokens=5)
    c2 = cap("c2", trace="x2", start=10 * S + 6 * MS, pid=7, input_tokens=10, output_tokens=5)
    r = match_calls([a, b], [c1, c2], PairingSettings(min_heuristic_confidence=0.0))
    assert len(r.pairs) == 2
    assert len({p.sdk.key for p in r.pairs}) == 2
    assert len({p.capture.key for p in r.pairs}) == 2
    lone = match_calls([a], [c1])
    assert max(p.confidence for p in r.pairs) < lone.pairs[0].confidence


def test_exact_methods_win_over_heuristic() -> None:
    a = sdk("a", pid=7, input_tokens=10, output_tokens=5)
    b = sdk("b", trace="t2", pid=7, input_tokens=10, output_tokens=5)
    c_for_b = cap("cb", trace="t2", parent_span_id="b", pid=7, input_tokens=10, output_tokens=5)
    c_for_a = cap("ca", trace="x", pid=7, input_tokens=10, output_tokens=5)
    r = match_calls([a, b], [c_for_a, c_for_b])
    assert pairs_of(r) == {("b", "cb", "traceparent"), ("a", "ca", "heuristic")}


def test_sides_do_not_mix() -> None:
    r = match_calls([sdk("a")], [cap("c", parent_span_id="a", kind="server")])
    assert not r.pairs


def test_window_bounds_every_method() -> None:
    s = PairingSettings(window_ns=60 * S)
    far = cap("c", parent_span_id="a", start=200 * S, response_id="r")
    assert not match_calls([sdk("a", response_id="r")], [far], s).pairs


def test_settle_holds_back_the_heuristic_only() -> None:
    s = PairingSettings(settle_ns=5 * S)
    a = sdk("a", pid=7, input_tokens=1, output_tokens=1, received_unix_ns=100 * S)
    c = cap("c", trace="x", pid=7, input_tokens=1, output_tokens=1, received_unix_ns=103 * S)
    assert not match_calls([a], [c], s, now_unix_ns=104 * S).pairs
    assert pairs_of(match_calls([a], [c], s, now_unix_ns=109 * S)) == {("a", "c", "heuristic")}
    exact = cap("c", parent_span_id="a", received_unix_ns=103 * S)
    assert pairs_of(match_calls([a], [exact], s, now_unix_ns=104 * S)) == {
        ("a", "c", "traceparent")
    }


def _workload() -> tuple[list[CallRecord], list[CallRecord]]:
    rng = random.Random(5)
    sdks, caps = [], []
    for i in range(200):
        start = 10 * S + i * 3 * MS
        trace = f"t{i}"
        kw = {"pid": 7, "input_tokens": 10, "output_tokens": rng.randint(1, 3)}
        sdks.append(
            sdk(
                f"s{i}", trace=trace, start=start, response_id=f"r{i}" if i % 3 == 0 else None, **kw
            )
        )
        parent = f"s{i}" if i % 3 == 1 else None
        caps.append(
            cap(
                f"c{i}",
                trace=trace if parent else f"x{i}",
                start=start + MS,
                parent_span_id=parent,
                response_id=f"r{i}" if i % 3 == 0 else None,
                **kw,
            )
        )
    return sdks, caps


def test_order_and_duplicates_do_not_change_the_result() -> None:
    sdks, caps = _workload()
    ref = match_calls(sdks, caps)
    rng = random.Random(1)
    for _ in range(5):
        s2 = sdks + rng.sample(sdks, 50)
        c2 = caps + rng.sample(caps, 70)
        rng.shuffle(s2)
        rng.shuffle(c2)
        again = match_calls(s2, c2)
        assert {(p.sdk.key, p.capture.key, p.method, p.confidence) for p in again.pairs} == {
            (p.sdk.key, p.capture.key, p.method, p.confidence) for p in ref.pairs
        }
    exact = [p for p in ref.pairs if p.method != "heuristic"]
    assert len(exact) >= 133
    assert all(p.sdk.span_id[1:] == p.capture.span_id[1:] for p in exact)


def test_late_arrival_pairs_on_a_later_pass() -> None:
    # pass 1 sees only the capture; pass 2 sees both (the collector passes unpaired records)
    c = cap("c", parent_span_id="a")
    first = match_calls([], [c])
    assert not first.pairs
    assert first.unpaired_captures == [c]
    second = match_calls([sdk("a")], first.unpaired_captures)
    assert pairs_of(second) == {("a", "c", "traceparent")}


def test_capture_with_unseen_parent_waits_before_weaker_methods() -> None:
    # the capture names the httpx span "h", which has not arrived; the SDK span has
    s = PairingSettings(settle_ns=5 * S)
    a = sdk("a", response_id="r1", received_unix_ns=100 * S)
    c = cap("c", parent_span_id="h", response_id="r1", received_unix_ns=100 * S)
    assert not match_calls([a], [c], s, now_unix_ns=101 * S).pairs
    later = match_calls([a], [c], s, parent_of={("t1", "h"): "a"}, now_unix_ns=102 * S)
    assert pairs_of(later) == {("a", "c", "traceparent_child")}
    # it never arrives: after settling the response id decides
    assert pairs_of(match_calls([a], [c], s, now_unix_ns=106 * S)) == {("a", "c", "response_id")}
