"""Matching rules that pair SDK GenAI spans with eBPF captures of the same LLM call.

Takes in: SDK spans and capture spans as `CallRecord`s (ids, kind, wire-clock times, model,
response and request ids, token counts, pid or pod), an optional map of span parents for
spans between them (the HTTP client span an instrumentation puts under the GenAI span), and
`PairingSettings`.
Gives out: a `PairingResult`: one-to-one `Pair`s, each with the method that matched and a
confidence in [0, 1], plus the records of each side left unpaired.

Methods, tried in this order, each only on what the previous ones left:
  1. `traceparent`: the capture's parent span is the SDK span (the SDK injected its own id);
  2. `traceparent_child`: the capture's parent is a direct child of the SDK span (an HTTP
     client instrumentation injected its span one level below);
  3. `response_id`, then `request_id`: the provider's response id or request-id header;
  4. `heuristic`: same pid (or pod), overlapping time, compatible model, equal token counts;
     only between records received at least `settle_ns` ago, so that a late record that could
     match exactly is not taken by a guess first. For the same reason a capture whose parent
     span has not been seen yet waits `settle_ns` before methods 3 and 4 may take it.
Every method stays within `window_ns` between the two start times. The result depends only
on the set of records: inputs are deduplicated by (trace id, span id) and visited in a fixed
order, so a re-sent or reordered batch gives the same pairs.
Pure: no I/O, no clocks, standard library only (the agent and the collector both import it).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

METHODS: Final = ("traceparent", "traceparent_child", "response_id", "request_id", "heuristic")

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """The fields of one span that pairing looks at."""

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    kind: str = "client"  # internal | server | client | producer | consumer
    start_unix_ns: int = 0
    end_unix_ns: int = 0
    request_model: str | None = None
    response_model: str | None = None
    response_id: str | None = None
    request_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    pid: int | None = None
    pod: str | None = None
    service: str | None = None
    source: str = "sdk"  # sdk | ebpf
    received_unix_ns: int | None = None

    @property
    def key(self) -> Key:
        """(trace id, span id): what identifies the span."""
        return (self.trace_id, self.span_id)

    @property
    def side(self) -> str:
        """`server` for the receiving side of a call, `client` for everything else."""
        return "server" if self.kind == "server" else "client"

    @property
    def models(self) -> frozenset[str]:
        """Request and response model names, lower case."""
        return frozenset(m.lower() for m in (self.request_model, self.response_model) if m)


@dataclass(frozen=True, slots=True)
class Pair:
    """An SDK span and the capture of the same call."""

    sdk: CallRecord
    capture: CallRecord
    method: str
    confidence: float


@dataclass(slots=True)
class PairingResult:
    """Pairs, and what stayed unpaired on each side."""

    pairs: list[Pair] = field(default_factory=list)
    unpaired_sdk: list[CallRecord] = field(default_factory=list)
    unpaired_captures: list[CallRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PairingSettings:
    """Bounds of the rules."""

    #: Largest distance between the two start times of a pair, whatever the method.
    window_ns: int = 600 * 1_000_000_000
    #: Clock slack allowed when comparing intervals (agent and SDK read the same node clock).
    slack_ns: int = 20_000_000
    #: The heuristic only looks at records received at least this long before `now_unix_ns`.
    settle_ns: int = 0
    #: Heuristic pairs below this confidence are not made.
    min_heuristic_confidence: float = 0.3


def _dedup(records: Iterable[CallRecord]) -> list[CallRecord]:
    seen: dict[Key, CallRecord] = {}
    for r in records:
        seen.setdefault(r.key, r)
    return [seen[k] for k in sorted(seen)]


def _distance_ns(a: CallRecord, b: CallRecord) -> int:
    return abs(a.start_unix_ns - b.start_unix_ns) + abs(a.end_unix_ns - b.end_unix_ns)


def _in_window(sdk: CallRecord, cap: CallRecord, s: PairingSettings) -> bool:
    return sdk.side == cap.side and abs(sdk.start_unix_ns - cap.start_unix_ns) <= s.window_ns


def _same_outcome(sdk: CallRecord, cap: CallRecord) -> int:
    """How many of response id and token counts agree (used to pick among retries)."""
    score = 0
    if sdk.response_id and sdk.response_id == cap.response_id:
        score += 2
    if sdk.output_tokens is not None and sdk.output_tokens == cap.output_tokens:
        score += 1
    return score


def _retry_rank(sdk: CallRecord) -> Callable[[CallRecord], tuple[int, int, Key]]:
    def rank(cap: CallRecord) -> tuple[int, int, Key]:
        return (_same_outcome(sdk, cap), cap.end_unix_ns, cap.key)

    return rank


def _trace_pairs(
    sdk_by_key: dict[Key, CallRecord],
    caps: list[CallRecord],
    parent_of: Mapping[Key, str | None],
    s: PairingSettings,
) -> list[Pair]:
    """Methods 1 and 2. Several captures under one SDK span are retries of the call: the one
    whose outcome the SDK reported (same response id, same tokens, else the last) wins."""
    pairs: list[Pair] = []
    taken_caps: set[Key] = set()
    for method in ("traceparent", "traceparent_child"):
        by_sdk: dict[Key, list[CallRecord]] = defaultdict(list)
        for cap in caps:
            if cap.key in taken_caps or not cap.parent_span_id:
                continue
            target = cap.parent_span_id
            if method == "traceparent_child":
                grandparent = parent_of.get((cap.trace_id, cap.parent_span_id))
                if not grandparent:
                    continue
                target = grandparent
            sdk = sdk_by_key.get((cap.trace_id, target))
            if sdk is not None and _in_window(sdk, cap, s):
                by_sdk[sdk.key].append(cap)
        for sdk_key in sorted(by_sdk):
            sdk = sdk_by_key.pop(sdk_key)
            best = max(by_sdk[sdk_key], key=_retry_rank(sdk))
            taken_caps.add(best.key)
            pairs.append(Pair(sdk, best, method, 1.0))
    return pairs


def _id_pairs(
    sdk_left: dict[Key, CallRecord],
    caps: list[CallRecord],
    field_name: str,
    s: PairingSettings,
) -> list[Pair]:
    """Methods 3: equal provider ids. Ids are not always unique (test servers, some local
    engines number their responses), so among equal ids the closest in time wins, and a pair
    that had competitors gets a lower confidence."""
    index: dict[str, list[CallRecord]] = defaultdict(list)
    for sdk in sdk_left.values():
        value = getattr(sdk, field_name)
        if value:
            index[value].append(sdk)
    edges: list[tuple[int, Key, Key]] = []
    cap_by_key = {c.key: c for c in caps}
    n_cap: dict[Key, int] = defaultdict(int)
    n_sdk: dict[Key, int] = defaultdict(int)
    for cap in caps:
        value = getattr(cap, field_name)
        if not value:
            continue
        for sdk in index.get(value, ()):
            if _in_window(sdk, cap, s) and not _models_conflict(sdk, cap):
                edges.append((_distance_ns(sdk, cap), sdk.key, cap.key))
                n_cap[cap.key] += 1
                n_sdk[sdk.key] += 1
    edges.sort()
    pairs: list[Pair] = []
    used: set[Key] = set()
    for _, sdk_key, cap_key in edges:
        if sdk_key in used or cap_key in used:
            continue
        used.update((sdk_key, cap_key))
        unique = n_cap[cap_key] == 1 and n_sdk[sdk_key] == 1
        pairs.append(
            Pair(sdk_left.pop(sdk_key), cap_by_key[cap_key], field_name, 1.0 if unique else 0.8)
        )
    return pairs


def _models_conflict(sdk: CallRecord, cap: CallRecord) -> bool:
    a, b = sdk.models, cap.models
    return bool(a and b and not (a & b))


def _overlap_ratio(sdk: CallRecord, cap: CallRecord, slack_ns: int) -> float:
    """Overlap of the two intervals over the shorter one, with clock slack."""
    lo = max(sdk.start_unix_ns, cap.start_unix_ns)
    hi = min(sdk.end_unix_ns, cap.end_unix_ns)
    shorter = min(sdk.end_unix_ns - sdk.start_unix_ns, cap.end_unix_ns - cap.start_unix_ns)
    return min(1.0, max(0, hi - lo + slack_ns) / max(shorter, 1))


def _heuristic_score(sdk: CallRecord, cap: CallRecord, s: PairingSettings) -> float | None:
    """Evidence that two records are the same call, or None when something rules it out."""
    if not _in_window(sdk, cap, s):
        return None
    same_pid = sdk.pid is not None and sdk.pid == cap.pid
    same_pod = sdk.pod is not None and sdk.pod == cap.pod
    if not (same_pid or same_pod):
        return None
    if _overlap_ratio(sdk, cap, s.slack_ns) < 0.5:
        return None
    if _models_conflict(sdk, cap):
        return None
    tokens_known = 0
    for a, b in ((sdk.input_tokens, cap.input_tokens), (sdk.output_tokens, cap.output_tokens)):
        if a is not None and b is not None:
            if a != b:
                return None
            tokens_known += 1
    score = 0.4 + 0.125 * tokens_known
    if sdk.models and cap.models:
        score += 0.15
    if same_pid:
        score += 0.1
    # a client SDK span encloses the wire exchange it made
    if sdk.side == "client" and (
        cap.start_unix_ns >= sdk.start_unix_ns - s.slack_ns
        and cap.end_unix_ns <= sdk.end_unix_ns + s.slack_ns
    ):
        score += 0.1
    return min(score, 1.0)


def _settled(r: CallRecord, s: PairingSettings, now_unix_ns: int | None) -> bool:
    if now_unix_ns is None or r.received_unix_ns is None:
        return True
    return r.received_unix_ns <= now_unix_ns - s.settle_ns


def _heuristic_pairs(
    sdk_left: dict[Key, CallRecord],
    caps: list[CallRecord],
    s: PairingSettings,
    now_unix_ns: int | None,
) -> list[Pair]:
    """Method 4: greedy one-to-one assignment, best evidence then closest times first. The
    confidence is the evidence scaled by how clearly the pair beat its nearest competitor."""

    def settled(r: CallRecord) -> bool:
        return _settled(r, s, now_unix_ns)

    by_group: dict[tuple[str, int | str | None], list[CallRecord]] = defaultdict(list)
    for sdk in sdk_left.values():
        if settled(sdk):
            by_group[(sdk.side, sdk.pid)].append(sdk)
            if sdk.pod is not None:
                by_group[(sdk.side, sdk.pod)].append(sdk)
    # per group, SDK spans by start time: only those that can overlap a capture are scored
    starts: dict[tuple[str, int | str | None], list[int]] = {}
    longest: dict[tuple[str, int | str | None], int] = {}
    for g, members in by_group.items():
        members.sort(key=lambda r: (r.start_unix_ns, r.key))
        starts[g] = [r.start_unix_ns for r in members]
        longest[g] = max(r.end_unix_ns - r.start_unix_ns for r in members)
    edges: list[tuple[float, int, Key, Key]] = []
    seen: set[tuple[Key, Key]] = set()
    for cap in caps:
        if not settled(cap):
            continue
        groups = [(cap.side, v) for v in (cap.pid, cap.pod) if v is not None]
        for g in groups:
            candidates = by_group.get(g)
            if not candidates:
                continue
            lo = bisect_left(starts[g], cap.start_unix_ns - longest[g] - s.slack_ns)
            hi = bisect_right(starts[g], cap.end_unix_ns + s.slack_ns)
            for sdk in candidates[lo:hi]:
                if (sdk.key, cap.key) in seen:
                    continue
                seen.add((sdk.key, cap.key))
                score = _heuristic_score(sdk, cap, s)
                if score is not None:
                    edges.append((-score, _distance_ns(sdk, cap), sdk.key, cap.key))
    edges.sort()
    # nearest competing distance of each record, for the confidence
    best_other: dict[Key, list[int]] = defaultdict(list)
    for _, dist, sdk_key, cap_key in edges:
        best_other[sdk_key].append(dist)
        best_other[cap_key].append(dist)
    cap_by_key = {c.key: c for c in caps}
    pairs: list[Pair] = []
    used: set[Key] = set()
    for neg_score, dist, sdk_key, cap_key in edges:
        if sdk_key in used or cap_key in used:
            continue
        competitor = _second_smallest(best_other[sdk_key] + best_other[cap_key], dist)
        clarity = (
            1.0 if competitor is None else 0.5 + 0.5 * (competitor - dist) / max(competitor, 1)
        )
        confidence = round(-neg_score * clarity, 4)
        if confidence < s.min_heuristic_confidence:
            continue
        used.update((sdk_key, cap_key))
        pairs.append(Pair(sdk_left.pop(sdk_key), cap_by_key[cap_key], "heuristic", confidence))
    return pairs


def _second_smallest(distances: list[int], own: int) -> int | None:
    """The smallest distance among competitors (the own edge appears twice in the list)."""
    rest = sorted(distances)
    removed = 0
    out: list[int] = []
    for d in rest:
        if d == own and removed < 2:
            removed += 1
            continue
        out.append(d)
    return out[0] if out else None


def match_calls(
    sdk_spans: Iterable[CallRecord],
    captures: Iterable[CallRecord],
    settings: PairingSettings | None = None,
    parent_of: Mapping[Key, str | None] | None = None,
    now_unix_ns: int | None = None,
) -> PairingResult:
    """Pair SDK spans with captures (see the module docstring).

    `parent_of` maps (trace id, span id) of spans that may sit between the two (HTTP client
    spans) to their parent span id (None for a root span: known, without a parent);
    `now_unix_ns` with `settings.settle_ns` holds back the heuristic for records received too
    recently.
    """
    s = settings or PairingSettings()
    sdk_list = _dedup(sdk_spans)
    cap_list = _dedup(captures)
    sdk_left = {r.key: r for r in sdk_list}
    pairs = _trace_pairs(sdk_left, cap_list, parent_of or {}, s)
    # A capture that names a parent span nobody has seen yet may still pair exactly when that
    # span (or the SDK span above it) arrives: the other methods wait for it to settle.
    known = {r.key for r in sdk_list}
    parents = parent_of or {}
    waiting = {
        c.key
        for c in cap_list
        if c.parent_span_id
        and (c.trace_id, c.parent_span_id) not in known
        and (c.trace_id, c.parent_span_id) not in parents
        and not _settled(c, s, now_unix_ns)
    }
    for field_name in ("response_id", "request_id"):
        taken = {p.capture.key for p in pairs} | waiting
        pairs += _id_pairs(sdk_left, [c for c in cap_list if c.key not in taken], field_name, s)
    taken = {p.capture.key for p in pairs} | waiting
    pairs += _heuristic_pairs(sdk_left, [c for c in cap_list if c.key not in taken], s, now_unix_ns)
    taken = {p.capture.key for p in pairs}
    return PairingResult(
        pairs=pairs,
        unpaired_sdk=[r for r in sdk_list if r.key in sdk_left],
        unpaired_captures=[c for c in cap_list if c.key not in taken],
    )
