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

Retries: a client that retries a failed request makes one logical call out of several wire
exchanges. A failed capture left unpaired is folded into the call that retried it
(`PairingResult.retries`, each a `Pair` of the call's record and the attempt):
  * `retry_trace`: it sits under the same SDK span as the paired capture (same traceparent);
  * `retry_digest`: the next exchange of the same process with the same request digest (a
    keyed hash of the request body the agent computed) starts within `retry_gap_ns` after it
    ended, and does not declare itself a first attempt (`http.request.resend_count` 0);
    failed attempts chain, and the call is what the last exchange of the chain belongs to (its
    SDK span when paired, else the capture itself; a failed last capture only once no
    further attempt can follow it). A failed attempt with no successor that lies inside the
    SDK span its predecessor belongs to folds into that span as well. A call that would
    gather `retry_max_attempts` exchanges is a request repeated into failures: not folded.
`find_retries` applies the second rule to attempts against captures the caller paired earlier.
Pure: no I/O, no clocks, standard library only (the agent and the collector both import it).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

METHODS: Final = ("traceparent", "traceparent_child", "response_id", "request_id", "heuristic")
RETRY_METHODS: Final = ("retry_trace", "retry_digest")

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
    #: the exchange failed: an HTTP error status, an error type, or no response at all
    failed: bool = False
    #: keyed hash of the request body (captures): equal for a re-sent identical request
    request_digest: str | None = None
    #: `http.request.resend_count` the client declared (0: a first attempt), None: unknown
    resend_count: int | None = None

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
    """Pairs, retries folded into calls, and what stayed unpaired on each side (a capture
    folded as a retry is not among the unpaired ones)."""

    pairs: list[Pair] = field(default_factory=list)
    unpaired_sdk: list[CallRecord] = field(default_factory=list)
    unpaired_captures: list[CallRecord] = field(default_factory=list)
    retries: list[Pair] = field(default_factory=list)


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
    #: Longest pause between a failed attempt's end and its retry's start (clients back off
    #: for seconds; a `Retry-After` of up to a minute is honoured by the common SDKs).
    retry_gap_ns: int = 60 * 1_000_000_000
    #: Most exchanges of one call (SDKs retry 2 to 5 times): a longer run of one request failing
    #: over and over is a process repeating it, each a call of its own.
    retry_max_attempts: int = 10


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
    retries: list[Pair],
) -> list[Pair]:
    """Methods 1 and 2. Several captures under one SDK span are attempts of the call: the one
    whose outcome the SDK reported (same response id, same tokens, else the last) wins, and
    the failed others are its retries (appended to `retries`)."""
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
            for other in by_sdk[sdk_key]:
                if other is not best and other.failed:
                    taken_caps.add(other.key)
                    retries.append(Pair(sdk, other, "retry_trace", 1.0))
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


Group = tuple[str, int | str]


@dataclass(slots=True)
class _Run:
    """SDK records of one bucket, by start time, and the longest of them."""

    records: list[CallRecord] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    longest_ns: int = 0

    def seal(self) -> None:
        self.records.sort(key=lambda r: (r.start_unix_ns, r.key))
        self.starts = [r.start_unix_ns for r in self.records]
        self.longest_ns = max(r.end_unix_ns - r.start_unix_ns for r in self.records)

    def near(self, cap: CallRecord, slack_ns: int) -> list[CallRecord]:
        """Records that can overlap `cap`: nothing starting later than its end, nor ending
        before its start (the longest record bounds how early an overlapping one starts)."""
        lo = bisect_left(self.starts, cap.start_unix_ns - self.longest_ns - slack_ns)
        hi = bisect_right(self.starts, cap.end_unix_ns + slack_ns)
        return self.records[lo:hi]


class _HeuristicIndex:
    """SDK records by what the heuristic needs to be equal: side and pid (or pod), then
    model, then output tokens (None: unknown, compatible with anything), each bucket sorted by
    start time. A capture reads only the buckets it is compatible with, so the work per
    capture follows the number of plausible partners, not the number of concurrent calls of
    its process."""

    def __init__(self, sdk_records: Iterable[CallRecord]) -> None:
        # group -> model (None: the span names none) -> output tokens (None: unknown) -> run
        self._by: dict[Group, dict[str | None, dict[int | None, _Run]]] = {}
        # group -> model -> every run of that model merged (for captures without token counts)
        self._any_tokens: dict[Group, dict[str | None, _Run]] = {}
        for r in sdk_records:
            for group in _groups(r):
                models = self._by.setdefault(group, {})
                merged = self._any_tokens.setdefault(group, {})
                for model in r.models or (None,):
                    models.setdefault(model, {}).setdefault(r.output_tokens, _Run()).records.append(
                        r
                    )
                    merged.setdefault(model, _Run()).records.append(r)
        for models in self._by.values():
            for by_tokens in models.values():
                for run in by_tokens.values():
                    run.seal()
        for merged in self._any_tokens.values():
            for run in merged.values():
                run.seal()

    def candidates(self, cap: CallRecord, slack_ns: int) -> list[CallRecord]:
        """Each SDK record once that shares a group with `cap`, names no other model, reports
        no other output token count and may overlap it in time."""
        out: list[CallRecord] = []
        seen: set[Key] = set()
        for group in _groups(cap):
            models = self._by.get(group)
            if models is None:
                continue
            wanted = [*cap.models, None] if cap.models else list(models)
            for model in wanted:
                by_tokens = models.get(model)
                if by_tokens is None:
                    continue
                if cap.output_tokens is None:
                    runs = [self._any_tokens[group][model]]
                else:
                    runs = [
                        run
                        for t in (cap.output_tokens, None)
                        if (run := by_tokens.get(t)) is not None
                    ]
                for run in runs:
                    for sdk in run.near(cap, slack_ns):
                        if sdk.key not in seen:
                            seen.add(sdk.key)
                            out.append(sdk)
        return out


def _groups(r: CallRecord) -> list[Group]:
    """Where the heuristic looks for partners: the same side and process, or the same pod."""
    return [(r.side, v) for v in (r.pid, r.pod) if v is not None]


def _heuristic_pairs(
    sdk_left: dict[Key, CallRecord],
    caps: list[CallRecord],
    s: PairingSettings,
    now_unix_ns: int | None,
) -> list[Pair]:
    """Method 4: greedy one-to-one assignment, best evidence then closest times first. The
    confidence is the evidence scaled by how clearly the pair beat its nearest competitor."""
    index = _HeuristicIndex(r for r in sdk_left.values() if _settled(r, s, now_unix_ns))
    edges: list[tuple[float, int, Key, Key]] = []
    for cap in caps:
        if not _settled(cap, s, now_unix_ns):
            continue
        for sdk in index.candidates(cap, s.slack_ns):
            score = _heuristic_score(sdk, cap, s)
            if score is not None:
                edges.append((-score, _distance_ns(sdk, cap), sdk.key, cap.key))
    edges.sort()
    # the three nearest distances of each record are enough to name its nearest competitor
    nearest: dict[Key, list[int]] = defaultdict(list)
    for _, dist, sdk_key, cap_key in edges:
        for key in (sdk_key, cap_key):
            _keep_smallest(nearest[key], dist)
    cap_by_key = {c.key: c for c in caps}
    pairs: list[Pair] = []
    used: set[Key] = set()
    for neg_score, dist, sdk_key, cap_key in edges:
        if sdk_key in used or cap_key in used:
            continue
        competitor = _second_smallest(nearest[sdk_key] + nearest[cap_key], dist)
        clarity = (
            1.0 if competitor is None else 0.5 + 0.5 * (competitor - dist) / max(competitor, 1)
        )
        confidence = round(-neg_score * clarity, 4)
        if confidence < s.min_heuristic_confidence:
            continue
        used.update((sdk_key, cap_key))
        pairs.append(Pair(sdk_left.pop(sdk_key), cap_by_key[cap_key], "heuristic", confidence))
    return pairs


def _keep_smallest(smallest: list[int], dist: int) -> None:
    """Insert `dist` into a sorted list that keeps only the three smallest values."""
    insort(smallest, dist)
    del smallest[3:]


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
    retries: list[Pair] = []
    pairs = _trace_pairs(sdk_left, cap_list, parent_of or {}, s, retries)
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
    folded = {r.capture.key for r in retries}
    for field_name in ("response_id", "request_id"):
        taken = {p.capture.key for p in pairs} | waiting | folded
        pairs += _id_pairs(sdk_left, [c for c in cap_list if c.key not in taken], field_name, s)
    taken = {p.capture.key for p in pairs} | waiting | folded
    pairs += _heuristic_pairs(sdk_left, [c for c in cap_list if c.key not in taken], s, now_unix_ns)
    taken = {p.capture.key for p in pairs} | folded
    left = [c for c in cap_list if c.key not in taken]
    # every capture of this call, with the record of the call it belongs to
    calls = [(p.capture, p.sdk) for p in pairs] + [(c, c) for c in left]
    retries += find_retries([c for c in left if c.key not in waiting], calls, s, now_unix_ns)
    folded = {r.capture.key for r in retries}
    return PairingResult(
        pairs=pairs,
        unpaired_sdk=[r for r in sdk_list if r.key in sdk_left],
        unpaired_captures=[c for c in left if c.key not in folded],
        retries=retries,
    )


RetryGroup = tuple[str, int | str, str]


def _retry_group(r: CallRecord) -> RetryGroup | None:
    """Attempts of one call come from one process and send the same bytes."""
    if r.request_digest is None or r.side != "client":
        return None
    owner = r.pid if r.pid is not None else r.pod
    return None if owner is None else (r.side, owner, r.request_digest)


def find_retries(
    attempts: Iterable[CallRecord],
    calls: Iterable[tuple[CallRecord, CallRecord]],
    settings: PairingSettings | None = None,
    now_unix_ns: int | None = None,
) -> list[Pair]:
    """Fold failed attempts into the call that retried them (`retry_digest`, see the module
    docstring).

    `attempts`: unpaired captures that may be folded (failed ones; settled ones, or ones the
    SDK span of the call encloses).
    `calls`: (capture, record of its call) for every capture known: the SDK span it is paired
    with, else the capture itself; may include `attempts` themselves.
    Returns one `Pair(call record, attempt)` per folded attempt. A call that would fold
    `settings.retry_max_attempts` or more attempts is no retried call (a process sending one
    request over and over into failures): none of them is folded.
    """
    s = settings or PairingSettings()
    call_of: dict[Key, CallRecord] = {}
    members: dict[RetryGroup, list[CallRecord]] = defaultdict(list)
    candidates = _dedup(attempts)
    for cap, owner in [*calls, *((a, a) for a in candidates)]:
        if cap.key in call_of:
            continue
        call_of[cap.key] = owner
        group = _retry_group(cap)
        if group is not None:
            members[group].append(cap)
    groups = {g: _RetryRun(m) for g, m in members.items()}
    foldable = {a.key for a in candidates if a.failed and call_of[a.key].key == a.key}
    chains = _Chains(foldable, call_of, s)
    out: list[Pair] = []
    for attempt in candidates:
        group = _retry_group(attempt)
        if attempt.key not in foldable or group is None:
            continue
        end = chains.end(attempt, groups[group])
        if end is None:
            call, confidence = _enclosing_call(attempt, groups[group], call_of, s), 0.9
        else:
            call, confidence = end, 0.95
        if call is None or call.key == attempt.key:
            continue
        if call.source == "ebpf" and call.failed and not _chain_closed(call, s, now_unix_ns):
            continue  # every attempt failed so far, and another may still come
        # An attempt received just now might still find an SDK span of its own; inside the
        # SDK span of its retry it cannot be another call of that span's process.
        if _settled(attempt, s, now_unix_ns) or _encloses(call, attempt, s):
            out.append(Pair(call, attempt, "retry_digest", confidence))
    # more attempts than any client makes: a process repeating one request, not retrying it
    per_call = Counter(p.sdk.key for p in out)
    return [p for p in out if per_call[p.sdk.key] < s.retry_max_attempts]


#: exchanges of one process and request looked at after a failed one for its retry
_MAX_RETRY_CANDIDATES: Final = 64


class _RetryRun:
    """The exchanges of one process and request digest, by start time."""

    def __init__(self, records: list[CallRecord]) -> None:
        self.records = sorted(records, key=lambda r: (r.start_unix_ns, r.key))
        self.starts = [r.start_unix_ns for r in self.records]

    def next_after(
        self, cur: CallRecord, s: PairingSettings, call_of: Mapping[Key, CallRecord]
    ) -> CallRecord | None:
        """The exchange that re-sent `cur`: among those starting after `cur` ended, within the
        retry gap, that may be a re-send (not a declared first attempt; the next attempt
        number when both declare one), the first whose call's SDK span encloses `cur`, else
        the first. Looks at `_MAX_RETRY_CANDIDATES` at most (identical prompts sent at a high
        rate by one process)."""
        i = bisect_left(self.starts, cur.end_unix_ns - s.slack_ns)
        first: CallRecord | None = None
        for other in self.records[i : i + _MAX_RETRY_CANDIDATES]:
            if other.key == cur.key or other.resend_count == 0:
                continue  # 0: a new request, says the client
            if other.start_unix_ns > cur.end_unix_ns + s.retry_gap_ns:
                break
            if (
                cur.resend_count is not None
                and other.resend_count is not None
                and other.resend_count != cur.resend_count + 1
            ):
                continue
            if _encloses(call_of[other.key], cur, s):
                return other
            if first is None:
                first = other
        return first


class _Chains:
    """Where each retry chain ends (memoized, so a long run of one request is walked once)."""

    def __init__(
        self, foldable: set[Key], call_of: Mapping[Key, CallRecord], s: PairingSettings
    ) -> None:
        self._foldable = foldable
        self._call_of = call_of
        self._s = s
        self._memo: dict[Key, CallRecord | None] = {}

    def end(self, attempt: CallRecord, run: _RetryRun) -> CallRecord | None:
        """The call of the last exchange of the chain that starts at `attempt`, or None when
        nothing followed `attempt`."""
        # walk forward while the next exchange is a failed attempt too
        path: list[CallRecord] = []
        on_path: set[Key] = set()
        cur = attempt
        after: CallRecord | None  # the chain's call as seen from the path's last exchange
        while True:
            if cur.key in self._memo and cur is not attempt:
                known = self._memo[cur.key]
                after = self._call_of[cur.key] if known is None else known
                break
            path.append(cur)
            on_path.add(cur.key)
            nxt = run.next_after(cur, self._s, self._call_of)
            if nxt is None or nxt.key in on_path:
                after = None
                break
            if nxt.key not in self._foldable:
                after = self._call_of[nxt.key]
                break
            cur = nxt
        # then back: every exchange of the path ends where its successor's chain ends (the
        # last exchange, failed and followed by nothing, is the call itself)
        value = after
        for rec in reversed(path):
            self._memo[rec.key] = value
            if value is None:
                value = self._call_of[rec.key]
        return self._memo[attempt.key]


def _chain_closed(last: CallRecord, s: PairingSettings, now_unix_ns: int | None) -> bool:
    """No further attempt can follow `last` any more: the retry gap after it has passed."""
    return now_unix_ns is None or last.end_unix_ns + s.retry_gap_ns < now_unix_ns


def _encloses(call: CallRecord, attempt: CallRecord, s: PairingSettings) -> bool:
    """An SDK span (not a capture) whose interval holds the attempt's."""
    return (
        call.source != "ebpf"
        and call.start_unix_ns - s.slack_ns <= attempt.start_unix_ns
        and attempt.end_unix_ns <= call.end_unix_ns + s.slack_ns
    )


def _enclosing_call(
    attempt: CallRecord,
    run: _RetryRun,
    call_of: Mapping[Key, CallRecord],
    s: PairingSettings,
) -> CallRecord | None:
    """The SDK span of the exchange just before `attempt` when it encloses `attempt` (the
    call's last attempt failed too, and the SDK span was paired with an earlier one)."""
    j = bisect_right(run.starts, attempt.start_unix_ns + s.slack_ns)
    before = [
        m
        for m in run.records[max(0, j - _MAX_RETRY_CANDIDATES) : j]
        if m.key != attempt.key
        and m.end_unix_ns <= attempt.start_unix_ns + s.slack_ns
        and attempt.start_unix_ns - m.end_unix_ns <= s.retry_gap_ns
    ]
    if not before:
        return None
    call = call_of[max(before, key=lambda m: (m.end_unix_ns, m.key)).key]
    return call if call.side == "client" and _encloses(call, attempt, s) else None
