"""Incremental maintenance of `call_rows`, the table behind the `llm_calls` view.

Takes a DuckDB cursor on the store (schema version 5 or newer); `CallRows.refresh(cur)` finds
the traces that gained spans or pairs since the previous pass and re-derives their calls with
the `call_rows_derive` macro (migrations 0005 and 0006), replacing their rows in one
transaction. Gives out a `RefreshResult` (traces and rows touched, seconds taken).

How new work is found without a sequence number in `spans`: `received_time` is stamped when an
export is decoded, before its commit, so a span can become visible up to `overlap_s` after a
later one. Each pass reads the keys of the spans received in the last `overlap_s` before the
watermark and onwards, and keeps them (as an Arrow table) to tell the next pass what it has
already seen; pairs likewise by `paired_time`. The watermarks are stored with the rows, so a
restarted collector re-derives only the traces of the last `overlap_s`.

How far back a pass re-derives: every span of a call is assumed received within
`join_window_s` of the others. A pass reads the spans of its traces received since the oldest
new span (or newly paired span) minus `join_window_s`, deletes their rows received since then
and inserts the fresh derivation: re-running a pass over the same traces changes nothing.
One instance serves one thread; it is not thread-safe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

#: keys of the spans received since the lower bound that the previous passes did not see
_SPAN_WINDOW = """
SELECT s.trace_id, s.span_id, s.received_time
FROM (SELECT trace_id, span_id, received_time FROM spans WHERE received_time > {lo}) s
ANTI JOIN _seen_spans p
  ON p.trace_id = s.trace_id AND p.span_id = s.span_id AND p.received_time = s.received_time
"""

#: pairs recorded since the lower bound that the previous passes did not see, with the oldest
#: received time of their two spans
_PAIR_WINDOW = """
SELECT s.sdk_trace_id, s.sdk_span_id, s.capture_trace_id, s.capture_span_id, s.paired_time,
       least(s.sdk_received_time, s.capture_received_time) AS first_received
FROM (SELECT * FROM span_pairs WHERE paired_time > {lo}) s
ANTI JOIN _seen_pairs p
  ON p.sdk_trace_id = s.sdk_trace_id AND p.sdk_span_id = s.sdk_span_id
 AND p.capture_trace_id = s.capture_trace_id AND p.capture_span_id = s.capture_span_id
 AND p.paired_time = s.paired_time
"""

#: the other side's trace of every pair touching a trace being refreshed
_PARTNER_TRACES = """
INSERT INTO call_refresh_traces
SELECT capture_trace_id FROM span_pairs
WHERE paired_time >= {since} AND sdk_trace_id IN (SELECT trace_id FROM call_refresh_traces)
UNION
SELECT sdk_trace_id FROM span_pairs
WHERE paired_time >= {since} AND capture_trace_id IN (SELECT trace_id FROM call_refresh_traces)
EXCEPT
SELECT trace_id FROM call_refresh_traces
"""

#: calls per fingerprint among the rows a pass replaces ({pred}: which rows)
_FINGERPRINT_COUNTS = """
SELECT prompt_fingerprint AS fingerprint, count(*) AS calls
FROM call_rows WHERE {pred} AND prompt_fingerprint IS NOT NULL GROUP BY 1
"""

#: fold the difference between the replaced rows (`_fp_before`) and their replacement into
#: `prompt_fingerprints`; first and last seen only ever widen
_FINGERPRINT_UPSERT = """
INSERT INTO prompt_fingerprints
SELECT coalesce(a.fingerprint, b.fingerprint), a.first_seen, a.last_seen,
       coalesce(a.calls, 0) - coalesce(b.calls, 0)
FROM (SELECT prompt_fingerprint AS fingerprint, min(start_time) AS first_seen,
             max(start_time) AS last_seen, count(*) AS calls
      FROM call_rows WHERE {pred} AND prompt_fingerprint IS NOT NULL GROUP BY 1) a
FULL JOIN _fp_before b ON a.fingerprint = b.fingerprint
WHERE coalesce(a.calls, 0) <> coalesce(b.calls, 0) OR a.first_seen IS NOT NULL
ON CONFLICT (fingerprint) DO UPDATE SET
    calls = calls + excluded.calls,
    first_seen = least(first_seen, excluded.first_seen),
    last_seen = greatest(last_seen, excluded.last_seen)
"""

#: price the rows of call_rows that {target} selects (see the call_costs macro)
_PRICE = """
UPDATE call_rows SET cost_usd = c.cost_usd, cost_basis = c.cost_basis
FROM call_costs({since}, {all_rows}) c
WHERE {target} AND call_rows.trace_id = c.trace_id AND call_rows.span_id = c.span_id
"""

_SEEN_SPANS_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("received_time", pa.timestamp("us", "UTC")),
    ]
)
_SEEN_PAIRS_SCHEMA = pa.schema(
    [
        ("sdk_trace_id", pa.string()),
        ("sdk_span_id", pa.string()),
        ("capture_trace_id", pa.string()),
        ("capture_span_id", pa.string()),
        ("paired_time", pa.timestamp("us", "UTC")),
    ]
)


@dataclass(frozen=True, slots=True)
class CallRowSettings:
    """How late and how far apart the spans of a call may arrive."""

    #: longest time between a span's `received_time` and the commit that makes it visible
    overlap_s: float = 30.0
    #: longest time between the receipt of the first and the last span of one call (the SDK
    #: span, its capture, its server side)
    join_window_s: float = 300.0
    #: how far back a pair reaches when its spans' received times are unknown (pairs written
    #: before schema version 5); the pairing pass's own lookback
    pair_lookback_s: float = 900.0


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one pass did."""

    traces: int
    rows_deleted: int
    rows_inserted: int
    seconds: float


def _ts_literal(value: datetime | None) -> str:
    """A TIMESTAMPTZ literal, constant-folded so DuckDB can skip row groups by it."""
    if value is None:
        return "'-infinity'::TIMESTAMPTZ"
    return f"'{value.astimezone(UTC).isoformat()}'::TIMESTAMPTZ"


class CallRows:
    """The incremental refresher of `call_rows` (one per collector)."""

    def __init__(self, settings: CallRowSettings | None = None) -> None:
        self.settings = settings or CallRowSettings()
        self._seen_spans: pa.Table = _SEEN_SPANS_SCHEMA.empty_table()
        self._seen_pairs: pa.Table = _SEEN_PAIRS_SCHEMA.empty_table()

    def refresh(self, cur: Any) -> RefreshResult:
        """One pass on `cur` (a cursor no other thread uses)."""
        started = time.perf_counter()
        spans_mark, pairs_mark = self._watermarks(cur)
        overlap = _seconds(self.settings.overlap_s)
        spans_lo = None if spans_mark is None else spans_mark - overlap
        pairs_lo = None if pairs_mark is None else pairs_mark - overlap

        # only what is new crosses into Python; what was seen stays an Arrow table DuckDB scans
        new_spans = _window(cur, _SPAN_WINDOW, spans_lo, "_seen_spans", self._seen_spans)
        new_pairs = _window(cur, _PAIR_WINDOW, pairs_lo, "_seen_pairs", self._seen_pairs)
        dirty, oldest = self._dirty_traces(new_spans, new_pairs)
        new_spans_mark = _max_time(new_spans, "received_time", spans_mark)
        new_pairs_mark = _max_time(new_pairs, "paired_time", pairs_mark)
        next_seen_spans = _seen_after(
            self._seen_spans, new_spans, "received_time", new_spans_mark, overlap
        )
        next_seen_pairs = _seen_after(
            self._seen_pairs, new_pairs, "paired_time", new_pairs_mark, overlap
        )

        deleted = inserted = 0
        if dirty:
            since = None if oldest is None else oldest - _seconds(self.settings.join_window_s)
            deleted, inserted = self._rederive(cur, dirty, since)
        if new_spans_mark != spans_mark or new_pairs_mark != pairs_mark:
            cur.execute(
                "UPDATE call_rows_state SET spans_watermark = ?, pairs_watermark = ? WHERE id = 1",
                [new_spans_mark, new_pairs_mark],
            )
        # only once the pass has committed: a failed pass sees the same work again
        self._seen_spans = next_seen_spans
        self._seen_pairs = next_seen_pairs
        return RefreshResult(len(dirty), deleted, inserted, time.perf_counter() - started)

    def _watermarks(self, cur: Any) -> tuple[datetime | None, datetime | None]:
        row = cur.execute(
            "SELECT spans_watermark, pairs_watermark FROM call_rows_state WHERE id = 1"
        ).fetchone()
        if row is None:
            cur.execute("INSERT INTO call_rows_state VALUES (1, NULL, NULL, NULL)")
            return None, None
        return row[0], row[1]

    def _dirty_traces(
        self, new_spans: pa.Table, new_pairs: pa.Table
    ) -> tuple[list[str], datetime | None]:
        """The traces to re-derive and the oldest receipt among what made them so."""
        traces: set[str] = set(new_spans.column("trace_id").to_pylist())
        oldest = _min_time(new_spans, "received_time")
        if new_pairs.num_rows:
            traces.update(new_pairs.column("sdk_trace_id").to_pylist())
            traces.update(new_pairs.column("capture_trace_id").to_pylist())
            lookback = _seconds(self.settings.pair_lookback_s)
            for first, paired in zip(
                new_pairs.column("first_received").to_pylist(),
                new_pairs.column("paired_time").to_pylist(),
                strict=True,
            ):
                reach = first if first is not None else paired - lookback
                oldest = reach if oldest is None else min(oldest, reach)
        return sorted(traces), oldest

    def _rederive(self, cur: Any, traces: list[str], since: datetime | None) -> tuple[int, int]:
        lit = _ts_literal(since)
        table = pa.table({"trace_id": pa.array(traces, pa.string())})
        cur.register("_call_rows_dirty", table)
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute("DELETE FROM call_refresh_traces")
                cur.execute("INSERT INTO call_refresh_traces SELECT trace_id FROM _call_rows_dirty")
                cur.execute(_PARTNER_TRACES.format(since=lit))
                pred = (
                    f"received_time >= {lit}"
                    " AND trace_id IN (SELECT trace_id FROM call_refresh_traces)"
                )
                before = _read_all(cur.execute(_FINGERPRINT_COUNTS.format(pred=pred)).arrow())
                deleted_row = cur.execute(f"DELETE FROM call_rows WHERE {pred}").fetchone()
                inserted_row = cur.execute(
                    f"INSERT INTO call_rows BY NAME SELECT * FROM call_rows_derive({lit})"
                ).fetchone()
                target = (
                    f"call_rows.received_time >= {lit} AND call_rows.trace_id IN"
                    " (SELECT trace_id FROM call_refresh_traces)"
                )
                cur.execute(_PRICE.format(since=lit, all_rows="false", target=target))
                cur.register("_fp_before", before)
                try:
                    cur.execute(_FINGERPRINT_UPSERT.format(pred=pred))
                finally:
                    cur.unregister("_fp_before")
                cur.execute("DELETE FROM call_refresh_traces")
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
        finally:
            cur.unregister("_call_rows_dirty")
        return (
            int(deleted_row[0]) if deleted_row else 0,
            int(inserted_row[0]) if inserted_row else 0,
        )

    def reprice(self, cur: Any, prices_digest: str) -> int:
        """Price every stored call again (after the price tables changed); returns the calls.

        `prices_digest` names the prices, so that the same prices are not applied twice
        (`prices_digest(cur)` gives the current one)."""
        cur.execute("BEGIN TRANSACTION")
        try:
            self._watermarks(cur)  # makes sure the state row exists
            row = cur.execute(
                _PRICE.format(since=_ts_literal(None), all_rows="true", target="true")
            ).fetchone()
            cur.execute(
                "UPDATE call_rows_state SET prices_digest = ? WHERE id = 1", [prices_digest]
            )
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        return int(row[0]) if row else 0

    def rebuild(self, cur: Any) -> int:
        """Re-derive every call in the store (after a bulk load); returns the rows written."""
        cur.execute("BEGIN TRANSACTION")
        try:
            cur.execute("DELETE FROM call_rows")
            cur.execute("DELETE FROM call_refresh_traces")
            cur.execute("INSERT INTO call_refresh_traces SELECT DISTINCT trace_id FROM spans")
            row = cur.execute(
                "INSERT INTO call_rows BY NAME SELECT *"
                " FROM call_rows_derive('-infinity'::TIMESTAMPTZ)"
                " ORDER BY start_time"  # so that time filters skip most row groups
            ).fetchone()
            cur.execute(_PRICE.format(since=_ts_literal(None), all_rows="true", target="true"))
            cur.execute("DELETE FROM call_refresh_traces")
            cur.execute("DELETE FROM prompt_fingerprints")
            cur.execute(
                "INSERT INTO prompt_fingerprints SELECT prompt_fingerprint, min(start_time),"
                " max(start_time), count(*) FROM call_rows"
                " WHERE prompt_fingerprint IS NOT NULL GROUP BY 1"
            )
            cur.execute(
                "UPDATE call_rows_state SET"
                " spans_watermark = (SELECT max(received_time) FROM spans),"
                " pairs_watermark = (SELECT max(paired_time) FROM span_pairs) WHERE id = 1"
            )
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        self._seen_spans = _SEEN_SPANS_SCHEMA.empty_table()
        self._seen_pairs = _SEEN_PAIRS_SCHEMA.empty_table()
        return int(row[0]) if row else 0


def prices_digest(cur: Any) -> str:
    """A digest of the price tables' contents (model_prices, gpu_prices, cost_settings)."""
    row = cur.execute(
        "SELECT md5(coalesce((SELECT string_agg(m::VARCHAR, '|' ORDER BY m::VARCHAR)"
        " FROM model_prices m), '') || '#' || coalesce((SELECT string_agg(g::VARCHAR, '|'"
        " ORDER BY g::VARCHAR) FROM gpu_prices g), '') || '#' || coalesce((SELECT"
        " string_agg(c::VARCHAR, '|' ORDER BY c::VARCHAR) FROM cost_settings c), ''))"
    ).fetchone()
    return str(row[0])


def stored_prices_digest(cur: Any) -> str | None:
    """The digest of the prices `call_rows.cost_usd` was last computed with, if any."""
    row = cur.execute("SELECT prices_digest FROM call_rows_state WHERE id = 1").fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _window(cur: Any, sql: str, lo: datetime | None, seen_name: str, seen: pa.Table) -> pa.Table:
    """Run a window query against the keys the previous pass saw, fully read."""
    cur.register(seen_name, seen)
    try:
        # DuckDB hands back a lazy reader: drain it while `seen` is still registered
        return _read_all(cur.execute(sql.format(lo=_ts_literal(lo))).arrow())
    finally:
        cur.unregister(seen_name)


def _read_all(result: pa.Table | pa.RecordBatchReader) -> pa.Table:
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result


def _seen_after(
    seen: pa.Table, new: pa.Table, column: str, mark: datetime | None, overlap: timedelta
) -> pa.Table:
    """The keys the next pass must know as seen: the new ones, and the older ones still inside
    its window (received or paired after `mark - overlap`)."""
    kept = pa.concat_tables([seen, new.select(seen.schema.names).cast(seen.schema)])
    if mark is None:
        return kept
    bound = pa.scalar(mark - overlap, type=seen.schema.field(column).type)
    return kept.filter(pc.greater(kept.column(column), bound))


def _seconds(value_s: float) -> timedelta:
    return timedelta(seconds=value_s)


def _max_time(table: pa.Table, column: str, current: datetime | None) -> datetime | None:
    if table.num_rows == 0:
        return current
    value = pc.max(table.column(column)).as_py()
    if current is None or (value is not None and value > current):
        return value  # type: ignore[no-any-return]
    return current


def _min_time(table: pa.Table, column: str) -> datetime | None:
    if table.num_rows == 0:
        return None
    return pc.min(table.column(column)).as_py()  # type: ignore[no-any-return]
