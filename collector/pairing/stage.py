"""The collector's pairing pass: SDK GenAI spans and eBPF captures already in the store.

Takes the open `Database`; every `interval_s` a background thread reads, on its own cursor,
the GenAI spans received in the last `lookback_s` that no pair claims yet, applies the pure
rules of `agent.pair.rules`, and inserts the new pairs into `span_pairs` in one small
transaction, with the failed attempts a client retried (methods `retry_*`: the attempt is the
capture, the call that retried it the other side; an earlier stored exchange of the same
process with the same request digest is looked up for them). `llm_calls` reads `span_pairs`
to show one row per call.
Gives out: the pairs in the store, and `PairingStats` for the `/metrics` collector.
Ingest never waits for pairing: spans are stored (and acknowledged) first, as they arrive, and
a late or re-sent span is simply seen by a later pass. Spans the node agent paired already
(`source = 'both'`) are left alone. Must not write to `spans`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from agent.pair.rules import (
    METHODS,
    RETRY_METHODS,
    CallRecord,
    Pair,
    PairingResult,
    PairingSettings,
    find_retries,
    match_calls,
)
from store.database import Database

log = logging.getLogger("infersight.pairing")

_OPERATIONS = "('chat', 'text_completion', 'generate_content', 'embeddings')"
_RETRY_METHODS = "('retry_trace', 'retry_digest')"
#: how long after a retry's start its capture may still arrive (the retried call's duration)
_RETRY_ARRIVAL_NS = 300 * 1_000_000_000

# What retries are recognised by: the exchange failed, its request digest, the attempt number
# the client declared.
_RETRY_FIELDS = """
       coalesce(TRY_CAST((attributes ->> '$."http.response.status_code"') AS INTEGER) >= 400
                OR error_type IS NOT NULL
                OR (attributes ->> '$."infersight.response_missing"') = 'true', false) AS failed,
       attributes ->> '$."infersight.wire.request_digest"' AS request_digest,
       TRY_CAST(attributes ->> '$."http.request.resend_count"' AS INTEGER) AS resend_count
"""

# Unpaired GenAI spans of the lookback window; pid comes from the span (captures: one agent
# serves every process of the node) or the resource (SDK spans), pod likewise.
# Unpaired GenAI spans received since ? (one side: ? = 'sdk' or 'ebpf'), as pairing records.
# A span with source 'both' was paired on its node already (the agent merged the capture into
# the SDK span and never exported the capture): neither side selects it, so it is never
# paired a second time.
_UNPAIRED = f"""
SELECT trace_id, span_id, parent_span_id, kind, start_unix_ns, end_unix_ns,
       gen_ai_request_model, gen_ai_response_model, gen_ai_response_id,
       coalesce(attributes ->> '$."infersight.request_id"',
                attributes ->> '$."openai.request.id"',
                attributes ->> '$."gen_ai.openai.request.id"') AS request_id,
       gen_ai_usage_input_tokens, gen_ai_usage_output_tokens,
       TRY_CAST(coalesce(attributes ->> '$."process.pid"', resource ->> '$."process.pid"')
                AS BIGINT) AS pid,
       coalesce(attributes ->> '$."k8s.pod.name"', k8s_pod) AS pod,
       service_name,
       coalesce(source, 'sdk') AS source,
       epoch_ns(received_time) AS received_unix_ns,
       {_RETRY_FIELDS}
FROM spans s
WHERE received_time >= to_timestamp(? / 1e9)
  AND gen_ai_operation_name IN {_OPERATIONS}
  AND coalesce(source, 'sdk') = ?
  AND start_unix_ns IS NOT NULL AND end_unix_ns IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM span_pairs p
                  WHERE p.sdk_trace_id = s.trace_id AND p.sdk_span_id = s.span_id
                    AND p.method NOT IN {_RETRY_METHODS})
  AND NOT EXISTS (SELECT 1 FROM span_pairs p
                  WHERE p.capture_trace_id = s.trace_id AND p.capture_span_id = s.span_id)
"""

# Unpaired SDK client spans of the lookback window, for /metrics: the calls of `llm_calls` that
# are SDK-only (one row per span however often it was re-sent). Counting them in `spans` would
# deduplicate and anti-join every span of the window on every pass: about a third of a second
# per million spans, which at a few thousand spans/s is a core's worth of work.
_COUNT_UNPAIRED = """
SELECT count(*) FROM call_rows
WHERE source = 'sdk' AND received_time >= to_timestamp(? / 1e9)
"""

# The unpaired SDK spans that could pair with one of the unpaired captures (registered as
# `_captures`): same trace (traceparent rules), same response or request id, or an overlapping
# time interval (the heuristic). Everything else is never read, so an SDK span without any
# capture costs nothing per pass, however many accumulate.
_SDK_NEAR_CAPTURES = f"""
WITH sdk AS ({_UNPAIRED}),
near AS (
    SELECT s.trace_id, s.span_id FROM sdk s JOIN _captures c ON s.trace_id = c.trace_id
    UNION
    SELECT s.trace_id, s.span_id FROM sdk s JOIN _captures c
        ON s.gen_ai_response_id = c.response_id
    UNION
    SELECT s.trace_id, s.span_id FROM sdk s JOIN _captures c ON s.request_id = c.request_id
    UNION
    SELECT s.trace_id, s.span_id FROM sdk s JOIN _captures c
        ON s.start_unix_ns <= c.end_unix_ns + ? AND s.end_unix_ns >= c.start_unix_ns - ?
)
SELECT * FROM sdk SEMI JOIN near USING (trace_id, span_id)
"""

# Parents of the spans the captures name as their parent (the HTTP client span below an SDK
# span), for the `traceparent_child` rule.
_PARENTS = """
SELECT DISTINCT p.trace_id, p.span_id, p.parent_span_id
FROM spans p
JOIN (SELECT unnest(?::VARCHAR[]) AS trace_id, unnest(?::VARCHAR[]) AS span_id) c
  ON p.trace_id = c.trace_id AND p.span_id = c.span_id
"""

# Client exchanges of the processes and request digests of the failed attempts registered as
# `_attempts`, starting within the retry gap around them, each with the call it belongs to:
# the SDK span it is paired with (or, for an attempt folded already, the call it was folded
# into), else itself. A span the node agent merged (`source='both'`) is an exchange too, at
# its wire times.
_RETRY_NEIGHBOURS = f"""
WITH wire AS (
    SELECT trace_id, span_id, kind, start_unix_ns, end_unix_ns,
           coalesce(source, 'sdk') AS source, epoch_ns(received_time) AS received_unix_ns,
           TRY_CAST(coalesce(attributes ->> '$."process.pid"', resource ->> '$."process.pid"')
                    AS BIGINT) AS pid,
           coalesce(attributes ->> '$."k8s.pod.name"', k8s_pod) AS pod,
           TRY_CAST(attributes ->> '$."infersight.wire.start_unix_ns"' AS BIGINT) AS w_start,
           TRY_CAST(attributes ->> '$."infersight.wire.duration_s"' AS DOUBLE) AS w_duration_s,
           {_RETRY_FIELDS}
    FROM spans
    WHERE received_time >= to_timestamp(? / 1e9)
      AND gen_ai_operation_name IN {_OPERATIONS}
      AND coalesce(source, 'sdk') IN ('ebpf', 'both')
      AND kind = 'client'
      AND start_unix_ns IS NOT NULL AND end_unix_ns IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY trace_id, span_id ORDER BY received_time) = 1
)
SELECT DISTINCT w.trace_id, w.span_id, w.source, w.received_unix_ns, w.pid, w.pod,
       w.failed, w.request_digest, w.resend_count,
       CASE WHEN w.source = 'both' THEN coalesce(w.w_start, w.start_unix_ns)
            ELSE w.start_unix_ns END AS wire_start,
       CASE WHEN w.source = 'both' AND w.w_start IS NOT NULL AND w.w_duration_s IS NOT NULL
            THEN w.w_start + CAST(w.w_duration_s * 1e9 AS BIGINT)
            ELSE w.end_unix_ns END AS wire_end,
       w.start_unix_ns, w.end_unix_ns,
       p.sdk_trace_id, p.sdk_span_id, epoch_ns(p.sdk_received_time),
       k.start_unix_ns, k.end_unix_ns, coalesce(k.source, 'sdk')
FROM wire w
JOIN _attempts a ON w.request_digest = a.request_digest
     AND (w.pid = a.pid OR (a.pid IS NULL AND w.pod = a.pod))
     AND w.start_unix_ns BETWEEN a.start_unix_ns - ? AND a.end_unix_ns + ?
LEFT JOIN span_pairs p ON p.capture_trace_id = w.trace_id AND p.capture_span_id = w.span_id
LEFT JOIN spans k ON k.trace_id = p.sdk_trace_id AND k.span_id = p.sdk_span_id
"""

_PAIRS_SCHEMA = pa.schema(
    [
        ("sdk_trace_id", pa.string()),
        ("sdk_span_id", pa.string()),
        ("capture_trace_id", pa.string()),
        ("capture_span_id", pa.string()),
        ("method", pa.string()),
        ("confidence", pa.float64()),
        ("sdk_received_time", pa.timestamp("ns", "UTC")),
        ("capture_received_time", pa.timestamp("ns", "UTC")),
    ]
)


@dataclass(frozen=True, slots=True)
class StageSettings:
    """How often and over what the pass runs."""

    interval_s: float = 2.0
    lookback_s: float = 900.0
    rules: PairingSettings = field(
        default_factory=lambda: PairingSettings(settle_ns=10 * 1_000_000_000)
    )
    enabled: bool = True


@dataclass(slots=True)
class PairingStats:
    """What the passes did, for `/metrics`."""

    pairs_by_method: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METHODS, 0))
    retries_by_method: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(RETRY_METHODS, 0)
    )
    unpaired_sdk: int = 0
    unpaired_captures: int = 0
    passes: int = 0
    errors: int = 0
    last_pass_s: float = 0.0


def _record(row: tuple[Any, ...]) -> CallRecord:
    return CallRecord(
        trace_id=row[0],
        span_id=row[1],
        parent_span_id=row[2],
        kind=row[3] or "internal",
        start_unix_ns=int(row[4]),
        end_unix_ns=int(row[5]),
        request_model=row[6],
        response_model=row[7],
        response_id=row[8],
        request_id=row[9],
        input_tokens=row[10],
        output_tokens=row[11],
        pid=row[12],
        pod=row[13],
        service=row[14],
        source=row[15],
        received_unix_ns=int(row[16]) if row[16] is not None else None,
        failed=bool(row[17]),
        request_digest=row[18],
        resend_count=row[19],
    )


def _fetch_beside(
    cur: Any, name: str, table: pa.Table, sql: str, params: list[Any]
) -> list[tuple[Any, ...]]:
    """Rows of `sql`, run with `table` registered as `name` for its duration."""
    cur.register(name, table)
    try:
        return list(cur.execute(sql, params).fetchall())
    finally:
        cur.unregister(name)


def _neighbour(row: tuple[Any, ...]) -> tuple[CallRecord, CallRecord]:
    """(the exchange, the call it belongs to) from a `_RETRY_NEIGHBOURS` row."""
    (tid, sid, source, received, pid, pod, failed, digest, resend) = row[:9]
    wire_start, wire_end, start, end = (int(v) for v in row[9:13])
    exchange = CallRecord(
        trace_id=tid,
        span_id=sid,
        kind="client",
        start_unix_ns=wire_start,
        end_unix_ns=wire_end,
        pid=pid,
        pod=pod,
        source=source,
        received_unix_ns=int(received) if received is not None else None,
        failed=bool(failed),
        request_digest=digest,
        resend_count=resend,
    )
    sdk_tid, sdk_sid, sdk_received, sdk_start, sdk_end, sdk_source = row[13:19]
    if sdk_tid is not None and sdk_start is not None and sdk_end is not None:
        call = CallRecord(
            trace_id=sdk_tid,
            span_id=sdk_sid,
            kind="client",
            start_unix_ns=int(sdk_start),
            end_unix_ns=int(sdk_end),
            source=sdk_source,
            received_unix_ns=int(sdk_received) if sdk_received is not None else None,
        )
    elif source == "both":
        call = CallRecord(
            trace_id=tid,
            span_id=sid,
            kind="client",
            start_unix_ns=start,
            end_unix_ns=end,
            source="both",
            received_unix_ns=exchange.received_unix_ns,
        )
    else:
        call = exchange
    return exchange, call


class PairingStage:
    """The periodic pairing pass over the store."""

    def __init__(self, db: Database, settings: StageSettings | None = None) -> None:
        self.db = db
        self.settings = settings or StageSettings()
        self.stats = PairingStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run passes on a daemon thread until `stop()`."""
        if self._thread is not None or not self.settings.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="infersight-pairing", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread after its current pass; safe to call twice."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        cursor = self.db.cursor()
        try:
            while not self._stop.wait(self.settings.interval_s):
                try:
                    self.run_once(cursor=cursor)
                except Exception:  # a failed pass is retried by the next one
                    with self._lock:
                        self.stats.errors += 1
                    log.exception("pairing pass failed")
        finally:
            cursor.close()

    def run_once(self, now_unix_ns: int | None = None, cursor: Any = None) -> int:
        """One pass; returns the number of pairs written."""
        started = time.perf_counter()
        now = time.time_ns() if now_unix_ns is None else now_unix_ns
        own = cursor is None
        cur = self.db.cursor() if own else cursor
        try:
            since = now - int(self.settings.lookback_s * 1e9)
            caps = [_record(r) for r in cur.execute(_UNPAIRED, [since, "ebpf"]).fetchall()]
            sdk = self._sdk_candidates(cur, caps, since) if caps else []
            parent_keys = sorted({(c.trace_id, c.parent_span_id) for c in caps if c.parent_span_id})
            parent_of: dict[tuple[str, str], str | None] = {}
            if parent_keys:
                trace_ids = [k[0] for k in parent_keys]
                span_ids = [k[1] for k in parent_keys]
                for tid, sid, parent in cur.execute(_PARENTS, [trace_ids, span_ids]).fetchall():
                    parent_of[(tid, sid)] = parent
            result = match_calls(sdk, caps, self.settings.rules, parent_of, now)
            stored_retries = self._stored_retries(cur, result, since, now)
            retries = result.retries + stored_retries
            links = result.pairs + retries
            if links:
                table = pa.Table.from_pylist(
                    [
                        {
                            "sdk_trace_id": p.sdk.trace_id,
                            "sdk_span_id": p.sdk.span_id,
                            "capture_trace_id": p.capture.trace_id,
                            "capture_span_id": p.capture.span_id,
                            "method": p.method,
                            "confidence": p.confidence,
                            "sdk_received_time": p.sdk.received_unix_ns,
                            "capture_received_time": p.capture.received_unix_ns,
                        }
                        for p in links
                    ],
                    schema=_PAIRS_SCHEMA,
                )
                cur.register("_new_pairs", table)
                try:
                    cur.execute("BEGIN TRANSACTION")
                    cur.execute(
                        "INSERT INTO span_pairs (sdk_trace_id, sdk_span_id, capture_trace_id,"
                        " capture_span_id, method, confidence, sdk_received_time,"
                        " capture_received_time, paired_time)"
                        " SELECT *, now() FROM _new_pairs"
                    )
                    cur.execute("COMMIT")
                except Exception:
                    cur.execute("ROLLBACK")
                    raise
                finally:
                    cur.unregister("_new_pairs")
            # for /metrics only: counted in SQL, the spans are not read
            count_row = cur.execute(_COUNT_UNPAIRED, [since]).fetchone()
            with self._lock:
                for p in result.pairs:
                    self.stats.pairs_by_method[p.method] = (
                        self.stats.pairs_by_method.get(p.method, 0) + 1
                    )
                for p in retries:
                    self.stats.retries_by_method[p.method] = (
                        self.stats.retries_by_method.get(p.method, 0) + 1
                    )
                # spans no capture was near, plus those the rules left unpaired
                self.stats.unpaired_sdk = int(count_row[0]) if count_row else 0
                self.stats.unpaired_captures = (
                    len(result.unpaired_captures) - len(retries) + len(result.retries)
                )
                self.stats.passes += 1
                self.stats.last_pass_s = time.perf_counter() - started
            return len(links)
        finally:
            if own:
                cur.close()

    def _stored_retries(self, cur: Any, result: PairingResult, since: int, now: int) -> list[Pair]:
        """Failed captures this pass left unpaired that retry an exchange stored earlier (whose
        call may have been paired by an earlier pass): `find_retries` against the exchanges
        of the same process and request digest around them."""
        folded = {r.capture.key for r in result.retries}
        gap_ns = self.settings.rules.retry_gap_ns
        # an attempt older than this has no retry left to arrive (a retry starts within the
        # gap; its capture arrives when it ends): it is not looked at again, so a burst of
        # failures nobody retried costs nothing after a few minutes
        recent = now - gap_ns - _RETRY_ARRIVAL_NS
        attempts = [
            c
            for c in result.unpaired_captures
            if c.failed and c.request_digest and c.key not in folded and c.end_unix_ns >= recent
        ]
        if not attempts:
            return []
        table = pa.table(
            {
                "pid": pa.array([c.pid for c in attempts], pa.int64()),
                "pod": [c.pod for c in attempts],
                "request_digest": [c.request_digest for c in attempts],
                "start_unix_ns": pa.array([c.start_unix_ns for c in attempts], pa.int64()),
                "end_unix_ns": pa.array([c.end_unix_ns for c in attempts], pa.int64()),
            }
        )
        # nothing of a retry chain was received before its first attempt started
        first_ns = max(since, min(c.start_unix_ns for c in attempts) - gap_ns)
        params = [first_ns, gap_ns, gap_ns]
        rows = _fetch_beside(cur, "_attempts", table, _RETRY_NEIGHBOURS, params)
        # this pass's pairs first: they are not in the store yet
        calls = [(p.capture, p.sdk) for p in result.pairs] + [_neighbour(r) for r in rows]
        return find_retries(attempts, calls, self.settings.rules, now)

    def _sdk_candidates(self, cur: Any, caps: list[CallRecord], since: int) -> list[CallRecord]:
        """The unpaired SDK spans some capture could pair with (see `_SDK_NEAR_CAPTURES`)."""
        table = pa.table(
            {
                "trace_id": [c.trace_id for c in caps],
                "response_id": [c.response_id for c in caps],
                "request_id": [c.request_id for c in caps],
                "start_unix_ns": pa.array([c.start_unix_ns for c in caps], pa.int64()),
                "end_unix_ns": pa.array([c.end_unix_ns for c in caps], pa.int64()),
            }
        )
        slack_ns = self.settings.rules.slack_ns
        params = [since, "sdk", slack_ns, slack_ns]
        return [
            _record(r) for r in _fetch_beside(cur, "_captures", table, _SDK_NEAR_CAPTURES, params)
        ]

    def snapshot(self) -> PairingStats:
        """A copy of the counters, safe to read from another thread."""
        with self._lock:
            s = self.stats
            return PairingStats(
                dict(s.pairs_by_method),
                dict(s.retries_by_method),
                s.unpaired_sdk,
                s.unpaired_captures,
                s.passes,
                s.errors,
                s.last_pass_s,
            )
