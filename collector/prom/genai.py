"""Prometheus exposition of GenAI client metrics, computed from the store's `llm_calls`.

Takes a `Database`; gives a `prometheus_client` collector (register it on the API's registry)
exposing, by `gen_ai_operation_name`, `gen_ai_provider_name`, `gen_ai_request_model`,
`service_name` and `k8s_namespace_name`:
  * `gen_ai_client_operation_duration_seconds` (histogram, also by `error_type`),
  * `gen_ai_client_token_usage` (histogram, by `gen_ai_token_type` = input | output),
  * `gen_ai_client_operation_time_to_first_chunk_seconds` (histogram, streaming calls),
  * `infersight_gen_ai_requests_total`, `infersight_gen_ai_errors_total` (by `error_type`),
    `infersight_gen_ai_cost_usd_total`;
with the semantic conventions' advisory bucket boundaries.

Incremental state, so a scrape costs the calls that arrived since the last one, not the store:
the first scrape folds every stored call into running totals; each later scrape, in one
snapshot transaction, adds the calls whose `received_time` lies after the previous scrape
minus `overlap_s` and that were not counted yet (the keys of the last `overlap_s` seconds are
kept to skip them). A call committed more than `overlap_s` after its `received_time` is missed;
the writer commits within milliseconds, so the default of 60 s is a wide margin. Totals only
grow, so they are valid Prometheus counters; they restart from the stored calls when the
collector restarts (the first scrape reads everything again), which Prometheus' rate() treats
as a counter reset only if a value went down. Calls with no `received_time` are not counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import duckdb
import pyarrow as pa
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.otel.buckets import DURATION_BUCKETS_S, TOKEN_BUCKETS
from store.database import Database

log = logging.getLogger(__name__)

TTFC_BUCKETS_S: Final = DURATION_BUCKETS_S

LABELS: Final = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "service_name",
    "k8s_namespace_name",
)

DURATION: Final = "gen_ai_client_operation_duration_seconds"
TOKENS: Final = "gen_ai_client_token_usage"
TTFC: Final = "gen_ai_client_operation_time_to_first_chunk_seconds"
REQUESTS: Final = "infersight_gen_ai_requests"
ERRORS: Final = "infersight_gen_ai_errors"
COST: Final = "infersight_gen_ai_cost_usd"


def _hist_sql(column: str, bounds: Sequence[float], prefix: str) -> str:
    parts = [f"count({column}) AS {prefix}_count", f"coalesce(sum({column}), 0) AS {prefix}_sum"]
    parts += [
        f"count(*) FILTER (WHERE {column} <= {b!r}) AS {prefix}_le{i}" for i, b in enumerate(bounds)
    ]
    return ",\n       ".join(parts)


_AGG_SQL: Final = f"""
SELECT coalesce(operation, '') AS op,
       coalesce(provider, '') AS provider,
       coalesce(request_model, model, '') AS model,
       coalesce(service_name, '') AS service,
       coalesce(k8s_namespace, '') AS namespace,
       CASE WHEN status = 'error' THEN coalesce(error_type, '_OTHER') ELSE '' END AS etype,
       count(*) AS calls,
       coalesce(sum(cost_usd), 0) AS cost,
       {_hist_sql("duration_s", DURATION_BUCKETS_S, "d")},
       {_hist_sql("ttft_s", TTFC_BUCKETS_S, "t")},
       {_hist_sql("input_tokens", TOKEN_BUCKETS, "i")},
       {_hist_sql("output_tokens", TOKEN_BUCKETS, "o")}
FROM llm_calls
WHERE received_time <= $hi {{window}}
GROUP BY ALL
"""

_NEW_WINDOW: Final = (
    "AND received_time > $lo AND trace_id || ':' || span_id NOT IN (SELECT k FROM _prom_seen)"
)


@dataclass(slots=True)
class _Hist:
    count: int = 0
    total: float = 0.0
    cumulative: list[int] = field(default_factory=list)

    def add(self, count: int, total: float, cumulative: list[int]) -> None:
        if not self.cumulative:
            self.cumulative = [0] * len(cumulative)
        self.count += count
        self.total += total
        self.cumulative = [a + b for a, b in zip(self.cumulative, cumulative, strict=True)]


@dataclass(slots=True)
class _Totals:
    calls: int = 0
    cost: float = 0.0
    duration: _Hist = field(default_factory=_Hist)
    ttfc: _Hist = field(default_factory=_Hist)
    input_tokens: _Hist = field(default_factory=_Hist)
    output_tokens: _Hist = field(default_factory=_Hist)


class GenAIStoreCollector(Collector):
    """GenAI client histograms and counters from `llm_calls`, updated at scrape time."""

    def __init__(
        self, db: Database, *, overlap_s: float = 60.0, min_interval_s: float = 1.0
    ) -> None:
        self._db = db
        self.overlap_s = overlap_s
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, ...], _Totals] = {}
        self._watermark: datetime | None = None
        self._seen: list[str] = []
        self._last_update_mono = float("-inf")
        self.updates = 0
        self.failures = 0

    # -- state ---------------------------------------------------------------------------

    def update(self) -> None:
        """Fold the calls that arrived since the last update into the totals."""
        cur = self._db.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                hi_row = cur.execute("SELECT now()").fetchone()
                assert hi_row is not None
                hi: datetime = hi_row[0]
                params: dict[str, object] = {"hi": hi}
                if self._watermark is None:
                    sql = _AGG_SQL.format(window="")
                else:
                    seen = pa.table({"k": pa.array(self._seen, pa.string())})
                    cur.register("_prom_seen", seen)
                    params["lo"] = self._watermark - timedelta(seconds=self.overlap_s)
                    sql = _AGG_SQL.format(window=_NEW_WINDOW)
                cur.execute(sql, params)
                columns = [d[0] for d in cur.description or []]
                rows = [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]
                keys = cur.execute(
                    "SELECT trace_id || ':' || span_id FROM llm_calls "
                    "WHERE received_time > $lo AND received_time <= $hi",
                    {"lo": hi - timedelta(seconds=self.overlap_s), "hi": hi},
                ).fetchall()
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
        finally:
            cur.close()
        for row in rows:
            self._fold(row)
        self._seen = [k[0] for k in keys]
        self._watermark = hi
        self.updates += 1

    def _fold(self, row: dict[str, object]) -> None:
        key = tuple(
            str(row[c]) for c in ("op", "provider", "model", "service", "namespace", "etype")
        )
        totals = self._totals.setdefault(key, _Totals())
        totals.calls += int(row["calls"])  # type: ignore[call-overload]
        totals.cost += float(row["cost"])  # type: ignore[arg-type]
        for hist, prefix, bounds in (
            (totals.duration, "d", DURATION_BUCKETS_S),
            (totals.ttfc, "t", TTFC_BUCKETS_S),
            (totals.input_tokens, "i", TOKEN_BUCKETS),
            (totals.output_tokens, "o", TOKEN_BUCKETS),
        ):
            hist.add(
                int(row[f"{prefix}_count"]),  # type: ignore[call-overload]
                float(row[f"{prefix}_sum"]),  # type: ignore[arg-type]
                [int(row[f"{prefix}_le{i}"]) for i in range(len(bounds))],  # type: ignore[call-overload]
            )

    def _maybe_update(self) -> None:
        now = time.monotonic()
        if now - self._last_update_mono < self.min_interval_s:
            return
        try:
            self.update()
            self._last_update_mono = now
        except duckdb.Error as exc:
            # a failed update keeps the last totals: counters must never go backwards
            self.failures += 1
            log.warning("GenAI metrics from the store not updated: %s", exc)

    # -- exposition ----------------------------------------------------------------------

    @staticmethod
    def _families() -> tuple[
        HistogramMetricFamily,
        HistogramMetricFamily,
        HistogramMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
    ]:
        return (
            HistogramMetricFamily(
                DURATION,
                "Duration of GenAI client operations.",
                labels=[*LABELS, "error_type"],
                unit="seconds",
            ),
            HistogramMetricFamily(
                TOKENS, "Tokens used per GenAI operation.", labels=[*LABELS, "gen_ai_token_type"]
            ),
            HistogramMetricFamily(
                TTFC,
                "Time to the first chunk of streamed GenAI responses.",
                labels=list(LABELS),
                unit="seconds",
            ),
            CounterMetricFamily(REQUESTS, "GenAI calls.", labels=list(LABELS)),
            CounterMetricFamily(ERRORS, "GenAI calls that failed.", labels=[*LABELS, "error_type"]),
            CounterMetricFamily(
                COST, "Cost of GenAI calls in USD (price table in force).", labels=list(LABELS)
            ),
        )

    def describe(self) -> Iterator[Metric]:
        """Metric names for the registry's collision check, without touching the store."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._maybe_update()
            duration, tokens, ttfc, requests, errors, cost = self._families()
            per_labels: dict[tuple[str, ...], _Totals] = {}
            for key, t in sorted(self._totals.items()):
                labels, etype = list(key[:5]), key[5]
                duration.add_metric(
                    [*labels, etype], _buckets(DURATION_BUCKETS_S, t.duration), t.duration.total
                )
                if etype:
                    errors.add_metric([*labels, etype], t.calls)
                merged = per_labels.setdefault(key[:5], _Totals())
                merged.calls += t.calls
                merged.cost += t.cost
                for mine, theirs in (
                    (merged.ttfc, t.ttfc),
                    (merged.input_tokens, t.input_tokens),
                    (merged.output_tokens, t.output_tokens),
                ):
                    if theirs.cumulative:
                        mine.add(theirs.count, theirs.total, theirs.cumulative)
            for key5, t in per_labels.items():
                labels = list(key5)
                requests.add_metric(labels, t.calls)
                cost.add_metric(labels, t.cost)
                if t.ttfc.count:
                    ttfc.add_metric(labels, _buckets(TTFC_BUCKETS_S, t.ttfc), t.ttfc.total)
                if t.input_tokens.count:
                    tokens.add_metric(
                        [*labels, "input"],
                        _buckets(TOKEN_BUCKETS, t.input_tokens),
                        t.input_tokens.total,
                    )
                if t.output_tokens.count:
                    tokens.add_metric(
                        [*labels, "output"],
                        _buckets(TOKEN_BUCKETS, t.output_tokens),
                        t.output_tokens.total,
                    )
        yield duration
        yield tokens
        yield ttfc
        yield requests
        yield errors
        yield cost


def _buckets(bounds: Sequence[float], hist: _Hist) -> list[tuple[str, float]]:
    cumulative = hist.cumulative or [0] * len(bounds)
    out = [(_le(b), float(c)) for b, c in zip(bounds, cumulative, strict=True)]
    out.append(("+Inf", float(hist.count)))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))
