"""Analytics benchmark: dashboard queries over millions of stored calls, via HTTP and in DuckDB.

Takes `--calls N` (default 10 million; `--quick`: 1 million and fewer repeats), `--repeats`,
`--threads` (DuckDB threads, default 2: the target machine), `--no-pgwire`, `--explain`,
`--percentiles`.
Gives, printed and saved as JSON under bench/results/:
  * per golden-signal grouping and per prompt-analytics endpoint, over the last hour, the last
    day and the whole stored range: median and p95 latency through the HTTP API (uvicorn
    serving `build_api_app` on 127.0.0.1, requests with httpx) beside the very same statements
    run directly on a DuckDB cursor in this process, and their ratio;
  * PASS/FAIL of the target: every dashboard query under 300 ms p95 over one day of data;
  * rows per second of a one-million-row result to psycopg over the PostgreSQL wire endpoint
    (text and binary) beside DuckDB's own `fetchall()` and Arrow fetch;
  * where the view `llm_calls` spends its time: the same aggregate over the view and over
    `spans`, and (with `--explain`) EXPLAIN ANALYZE of the slowest one-day query;
  * with `--percentiles`: the percentile part of the golden signals over one day (per group
    and 5-minute bucket, and per group) computed exactly and by approximate alternatives,
    with each one's time and largest relative error against the exact figures.
The store is seeded once per size by `bench/_analytics/seed.py` and cached in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from bench._analytics.seed import seed_store  # noqa: E402
from bench._analytics.serve import ApiServer, PgServer  # noqa: E402
from collector.analytics.cost import cost_breakdown, load_prices  # noqa: E402
from collector.analytics.golden import golden_signals  # noqa: E402
from collector.analytics.params import TimeRange, group_column  # noqa: E402
from collector.analytics.prompts import (  # noqa: E402
    TOP_PROMPTS,
    input_size_distribution,
    prompt_stats,
    top_calls,
)
from collector.api.sql import QueryResult, QueryRunner  # noqa: E402
from collector.pgwire import install_shims  # noqa: E402
from store.database import Database, DatabaseTuning  # noqa: E402

RESULTS = BENCH_DIR / "results"
TARGET_P95_S = 0.300
GROUPS = ("model", "provider", "service", "namespace", "pod", "operation")
#: window name -> (length in seconds or None for everything stored, golden-signal step)
WINDOWS: dict[str, tuple[float | None, float]] = {
    "1h": (3600.0, 60.0),
    "1d": (86400.0, 300.0),
    "all": (None, 3600.0),
}
#: the cases of `--quick`: one golden-signal grouping and three prompt queries
QUICK_CASES = "group_by=model,prompts/top by=slowest,prompts/input-size,calls/top"
PG_ROWS = 1_000_000
PG_SQL = (
    "SELECT trace_id, span_id, start_time, gen_ai_request_model, duration_s, "
    "gen_ai_usage_input_tokens, gen_ai_usage_output_tokens FROM spans "
    f"WHERE kind = 'client' LIMIT {PG_ROWS}"
)


class RecordingRunner(QueryRunner):
    """A `QueryRunner` that remembers every statement it ran, to replay them on a cursor."""

    def __init__(self, db: Database, row_limit: int, timeout_s: float) -> None:
        super().__init__(db, row_limit, timeout_s)
        self.recorded: list[tuple[str, list[Any]]] | None = None

    def run(self, sql: str, params: list[Any] | None = None, **kw: Any) -> QueryResult:
        if self.recorded is not None:
            self.recorded.append((sql, list(params or [])))
        return super().run(sql, params, **kw)


@dataclass
class Case:
    """One dashboard query: an HTTP request and the analytics call that makes its SQL."""

    kind: str
    name: str
    window: str
    path: str
    params: dict[str, str]
    call: Callable[[QueryRunner], Any]
    http_s: list[float] = field(default_factory=list)
    direct_s: list[float] = field(default_factory=list)
    statements: list[tuple[str, list[Any]]] = field(default_factory=list)


def rfc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def make_cases(first: datetime, last: datetime, fingerprint: str) -> list[Case]:
    cases: list[Case] = []
    end = last + timedelta(microseconds=1)
    for window, (length_s, step_s) in WINDOWS.items():
        start = first if length_s is None else end - timedelta(seconds=length_s)
        span = {"start": rfc(start), "end": rfc(end)}
        # the step of the whole range grows so that it stays within the bucket cap
        tr = TimeRange(start, end, step_s)

        for g in GROUPS:
            cases.append(
                Case(
                    "golden",
                    f"golden-signals group_by={g}",
                    window,
                    "/api/v1/golden-signals",
                    {**span, "step": f"{step_s:g}", "group_by": g},
                    lambda r, tr=tr, g=g: golden_signals(r, tr, g),  # type: ignore[misc]
                )
            )
        s, e = start, end
        cases.append(
            Case(
                "prompts",
                "prompts sort=calls",
                window,
                "/api/v1/prompts",
                {**span, "sort": "calls"},
                lambda r, s=s, e=e: prompt_stats(r, s, e, order="calls", limit=50),  # type: ignore[misc]
            )
        )
        for by, order in TOP_PROMPTS.items():
            cases.append(
                Case(
                    "prompts",
                    f"prompts/top by={by}",
                    window,
                    "/api/v1/prompts/top",
                    {**span, "by": by},
                    lambda r, s=s, e=e, o=order: prompt_stats(r, s, e, order=o, limit=10),  # type: ignore[misc]
                )
            )
        cases.append(
            Case(
                "prompts",
                "prompts/{fingerprint}",
                window,
                f"/api/v1/prompts/{fingerprint}",
                dict(span),
                lambda r, s=s, e=e: prompt_stats(r, s, e, fingerprint=fingerprint, limit=1),  # type: ignore[misc]
            )
        )
        cases.append(
            Case(
                "prompts",
                "prompts/input-size",
                window,
                "/api/v1/prompts/input-size",
                dict(span),
                lambda r, s=s, e=e: input_size_distribution(r, s, e),  # type: ignore[misc]
            )
        )
        cases.append(
            Case(
                "prompts",
                "calls/top by=slowest",
                window,
                "/api/v1/calls/top",
                {**span, "by": "slowest"},
                lambda r, s=s, e=e: top_calls(r, s, e, "slowest", 10),  # type: ignore[misc]
            )
        )
        cases.append(
            Case(
                "prompts",
                "cost by=model",
                window,
                "/api/v1/cost",
                {**span, "by": "model"},
                lambda r, s=s, e=e: cost_breakdown(r, s, e, "model", limit=1000),  # type: ignore[misc]
            )
        )
    return cases


def pct(values: list[float], q: float) -> float:
    data = sorted(values)
    pos = (len(data) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def run_direct(db: Database, statements: list[tuple[str, list[Any]]]) -> float:
    """Seconds to run and fetch (as Arrow, as the runner does) every statement of one request."""
    cur = db.cursor()
    try:
        started = time.perf_counter()
        for sql, params in statements:
            cur.execute(sql, params).to_arrow_table()
        return time.perf_counter() - started
    finally:
        cur.close()


def measure_cases(
    db: Database, runner: RecordingRunner, api: ApiServer, cases: list[Case], repeats: int
) -> None:
    with httpx.Client(base_url=api.url, timeout=600) as client:
        for case in cases:
            runner.recorded = []
            case.call(runner)  # also the warm-up of this query
            case.statements, runner.recorded = runner.recorded, None
            for _ in range(repeats):
                started = time.perf_counter()
                resp = client.get(case.path, params=case.params)
                case.http_s.append(time.perf_counter() - started)
                if resp.status_code != 200:
                    raise RuntimeError(f"{case.path} {case.params}: {resp.status_code} {resp.text}")
                case.direct_s.append(run_direct(db, case.statements))
            ratio = statistics.median(case.http_s) / statistics.median(case.direct_s)
            print(
                f"  {case.window:>3} {case.name:34s} http p50 {pct(case.http_s, 0.5) * 1e3:8.1f} "
                f"p95 {pct(case.http_s, 0.95) * 1e3:8.1f} ms | duckdb p50 "
                f"{pct(case.direct_s, 0.5) * 1e3:8.1f} ms | x{ratio:.2f}"
                f" | {len(case.statements)} stmt",
                flush=True,
            )


def measure_pgwire(db: Database, repeats: int) -> dict[str, float]:
    """Rows per second of `PG_SQL`: in-process DuckDB fetches and psycopg over the endpoint."""
    timings: dict[str, list[float]] = {}
    rows_seen: dict[str, int] = {}

    def timed(name: str, fn: Callable[[], int]) -> None:
        started = time.perf_counter()
        n = fn()
        timings.setdefault(name, []).append(time.perf_counter() - started)
        rows_seen[name] = n

    def duck(how: str) -> int:
        cur = db.cursor()
        try:
            cur.execute(PG_SQL)
            if how == "arrow":
                return int(cur.to_arrow_table().num_rows)
            return len(cur.fetchall())
        finally:
            cur.close()

    with PgServer(db) as pg, psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for _ in range(repeats):
            timed("duckdb fetchall (in process)", lambda: duck("fetchall"))
            timed("duckdb Arrow (in process)", lambda: duck("arrow"))
            for binary in (False, True):
                cur = conn.cursor(binary=binary)
                timed(
                    f"psycopg {'binary' if binary else 'text'} fetchall",
                    lambda cur=cur: len(cur.execute(PG_SQL).fetchall()),  # type: ignore[misc]
                )
            timed(
                "libpq only (text, no Python rows)",
                lambda: conn.pgconn.exec_(PG_SQL.encode()).ntuples,
            )
    out: dict[str, float] = {}
    for name, secs in timings.items():
        med = statistics.median(secs)
        out[name] = rows_seen[name] / med
        n = rows_seen[name]
        print(f"  {name:36s} {out[name]:>12,.0f} rows/s  (median {med:.2f} s, {n:,} rows)")
    return out


def view_cost(db: Database, start: datetime, end: datetime) -> dict[str, float]:
    """The same one-day aggregate over the view and over the table it reads, and the view's
    parts on their own (dedup window, pairing joins, pricing), to see what dominates."""
    probes = {
        "llm_calls (the view)": "SELECT model, count(*), quantile_cont(duration_s, 0.95), "
        "sum(cost_usd) FROM llm_calls WHERE start_time >= $1 AND start_time < $2 GROUP BY 1",
        "spans (table, same filter)": "SELECT coalesce(gen_ai_response_model, "
        "gen_ai_request_model), count(*), quantile_cont(duration_s, 0.95) FROM spans "
        "WHERE start_time >= $1 AND start_time < $2 AND kind IS DISTINCT FROM 'server' "
        "AND gen_ai_operation_name IN ('chat','text_completion','generate_content','embeddings') "
        "GROUP BY 1",
        "dedup window alone (whole table)": "SELECT count(*) FROM (SELECT * FROM spans "
        "WHERE gen_ai_operation_name IS NOT NULL QUALIFY row_number() OVER "
        "(PARTITION BY trace_id, span_id ORDER BY received_time) = 1) "
        "WHERE start_time >= $1 AND start_time < $2",
        "spans count in window": "SELECT count(*) FROM spans WHERE start_time >= $1 "
        "AND start_time < $2",
    }
    out: dict[str, float] = {}
    cur = db.cursor()
    try:
        for name, sql in probes.items():
            runs = []
            for _ in range(3):
                started = time.perf_counter()
                cur.execute(sql, [start, end]).fetchall()
                runs.append(time.perf_counter() - started)
            out[name] = statistics.median(runs)
            print(f"  {name:36s} {out[name] * 1e3:9.1f} ms")
    finally:
        cur.close()
    return out


#: the percentile alternatives `--percentiles` compares, as the aggregate of one column
PERCENTILE_QS = "[0.5, 0.9, 0.95, 0.99]"
PERCENTILE_VARIANTS: dict[str, str] = {
    "exact quantile_cont": f"quantile_cont({{x}}, {PERCENTILE_QS})",
    "approx_quantile (t-digest)": f"approx_quantile({{x}}, {PERCENTILE_QS})",
    "reservoir_quantile (8192)": f"reservoir_quantile({{x}}, {PERCENTILE_QS})",
    "no percentile (count only)": "count({x})",
}
#: relative accuracy of the log-bucket histogram variant
HIST_ALPHA = 0.01


def _percentile_sql(column: str, agg: str) -> str:
    aggs = ", ".join(f"{agg.format(x=x)} AS {x}" for x in ("duration_s", "ttft_s", "tpot_s"))
    return (
        f"SELECT {column} AS grp, CAST(floor((epoch_us(start_time) - $3) / $4) AS BIGINT) AS b, "
        f"{aggs} FROM llm_calls WHERE start_time >= $1 AND start_time < $2 "
        f"GROUP BY GROUPING SETS ((grp, b), (grp))"
    )


def _histogram_sql(column: str) -> str:
    """Percentiles from log-bucket counts: value x > 0 falls in bucket round(ln x / ln g) with
    g = (1 + a) / (1 - a); a bucket's representative is within a relative `a` of every value
    in it, and the two ranks that `quantile_cont` interpolates between are looked up in the
    cumulative counts (ASOF join), so the result is within `a` of the exact one."""
    gamma = (1 + HIST_ALPHA) / (1 - HIST_ALPHA)
    ln_g = math.log(gamma)
    mid = math.sqrt(gamma) + 1 / math.sqrt(gamma)
    return f"""
WITH vals AS (
    SELECT {column} AS grp, CAST(floor((epoch_us(start_time) - $3) / $4) AS BIGINT) AS b,
           unnest([0, 1, 2]) AS m, unnest([duration_s, ttft_s, tpot_s]) AS x
    FROM llm_calls WHERE start_time >= $1 AND start_time < $2
),
cell_h AS (
    SELECT grp, b, m, CAST(round(ln(x) / {ln_g!r}) AS INTEGER) AS k, count(*) AS n
    FROM vals WHERE x > 0 GROUP BY ALL
),
h AS (
    SELECT * FROM cell_h
    UNION ALL
    SELECT grp, NULL, m, k, sum(n) FROM cell_h GROUP BY grp, m, k
),
cum AS (
    SELECT grp, b, m, k,
           sum(n) OVER (PARTITION BY grp, b, m ORDER BY k ROWS UNBOUNDED PRECEDING) - n AS c0,
           sum(n) OVER (PARTITION BY grp, b, m) AS total
    FROM h
),
targets AS (
    SELECT t.grp, t.b, t.m, qs.qi, qs.q * (t.total - 1) AS pos, s.side,
           least(CAST(floor(qs.q * (t.total - 1)) AS BIGINT) + s.side, t.total - 1) AS r
    FROM (SELECT DISTINCT grp, b, m, total FROM cum) t,
         (SELECT unnest([1, 2, 3, 4]) AS qi, unnest({PERCENTILE_QS}) AS q) qs,
         (SELECT unnest([0, 1]) AS side) s
),
picked AS (
    SELECT t.grp, t.b, t.m, t.qi, t.pos, t.side, 2 * exp(c.k * {ln_g!r}) / {mid!r} AS v
    FROM targets t ASOF JOIN cum c
      ON c.grp IS NOT DISTINCT FROM t.grp AND c.b IS NOT DISTINCT FROM t.b AND c.m = t.m
     AND c.c0 <= t.r
)
SELECT grp, b, m, list(v0 + (pos - floor(pos)) * (v1 - v0) ORDER BY qi) AS qv
FROM (SELECT grp, b, m, qi, any_value(pos) AS pos,
             max(v) FILTER (WHERE side = 0) AS v0, max(v) FILTER (WHERE side = 1) AS v1
      FROM picked GROUP BY grp, b, m, qi)
GROUP BY grp, b, m
"""


def percentile_variants(
    db: Database, start: datetime, end: datetime, repeats: int
) -> list[dict[str, Any]]:
    """Median and p95 seconds of each percentile variant, and its largest relative error
    against `quantile_cont` over every (group, bucket) and group figure of one day."""
    params = [start, end, int(start.timestamp() * 1e6), 300 * 1_000_000]
    out: list[dict[str, Any]] = []
    cur = db.cursor()

    def timed(sql: str) -> tuple[list[float], list[Any]]:
        rows = cur.execute(sql, params).fetchall()  # warm-up, and the figures
        secs = []
        for _ in range(repeats):
            started = time.perf_counter()
            cur.execute(sql, params).fetchall()
            secs.append(time.perf_counter() - started)
        return secs, rows

    def worst(exact: dict[tuple[Any, Any, int], list[float]], got: Any) -> dict[str, float]:
        err = {"cells": 0.0, "groups": 0.0}
        for key, want in exact.items():
            have = got.get(key)
            if not want or not have:
                continue
            level = "groups" if key[1] is None else "cells"
            for w, h in zip(want, have, strict=True):
                if w:
                    err[level] = max(err[level], abs(h - w) / abs(w))
        return err

    try:
        for group in ("model", "pod", "operation"):
            column = group_column(group)
            exact: dict[tuple[Any, Any, int], list[float]] = {}
            for name, agg in PERCENTILE_VARIANTS.items():
                secs, rows = timed(_percentile_sql(column, agg))
                figures = {(r[0], r[1], m): r[2 + m] for r in rows for m in range(3)}
                if not exact:
                    exact = figures
                err = worst(exact, figures) if "count" not in agg else None
                out.append({"group_by": group, "variant": name, "s": secs, "max_rel_err": err})
            secs, rows = timed(_histogram_sql(column))
            figures = {(r[0], r[1], r[2]): r[3] for r in rows}
            out.append(
                {
                    "group_by": group,
                    "variant": f"log-bucket histogram ({HIST_ALPHA:.0%})",
                    "s": secs,
                    "max_rel_err": worst(exact, figures),
                }
            )
            for row in out[-len(PERCENTILE_VARIANTS) - 1 :]:
                err = row["max_rel_err"]
                errs = (
                    f"max rel. error: per bucket {err['cells']:.2%}, per group {err['groups']:.2%}"
                    if err
                    else ""
                )
                print(
                    f"  {group:9s} {row['variant']:28s} p50 {pct(row['s'], 0.5) * 1e3:7.1f} "
                    f"p95 {pct(row['s'], 0.95) * 1e3:7.1f} ms  {errs}",
                    flush=True,
                )
    finally:
        cur.close()
    return out


def explain(db: Database, case: Case) -> str:
    """EXPLAIN ANALYZE of the heaviest statement of `case`."""
    cur = db.cursor()
    try:
        worst: tuple[str, float, list[Any]] = ("", 0.0, [])
        for sql, params in case.statements:
            started = time.perf_counter()
            cur.execute(sql, params).fetchall()
            took = time.perf_counter() - started
            if took > worst[1]:
                worst = (sql, took, params)
        rows = cur.execute("EXPLAIN ANALYZE " + worst[0], worst[2]).fetchall()
        return "\n".join(str(r[-1]) for r in rows)
    finally:
        cur.close()


def machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="1M calls, 1 day, four queries, 2 repeats")
    ap.add_argument("--calls", type=int, default=None, help="stored calls (default 10M)")
    ap.add_argument("--repeats", type=int, default=None, help="requests per query (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")
    ap.add_argument(
        "--windows", default=None, help="comma-separated: 1h, 1d, all (default all; --quick: 1d)"
    )
    ap.add_argument(
        "--cases",
        default=None,
        help="comma-separated parts of case names to run (default: all; --quick: four)",
    )
    ap.add_argument("--no-pgwire", action="store_true", help="skip the PostgreSQL wire part")
    ap.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the slowest 1d query")
    ap.add_argument(
        "--percentiles",
        action="store_true",
        help="compare exact and approximate percentile aggregates over one day",
    )
    args = ap.parse_args(argv)
    calls = args.calls or (1_000_000 if args.quick else 10_000_000)
    repeats = args.repeats or (2 if args.quick else 5)
    windows_arg = args.windows or ("1d" if args.quick else "1h,1d,all")
    windows = [w.strip() for w in windows_arg.split(",") if w.strip()]
    cases_arg = args.cases or (QUICK_CASES if args.quick else "")
    wanted = [w.strip() for w in cases_arg.split(",") if w.strip()]
    info = machine()
    print(
        f"analytics benchmark: {calls:,} calls, {repeats} repeats, DuckDB threads "
        f"{args.threads}; machine: {info['nproc']} CPUs, {info['cpu']}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path, made = seed_store(RESULTS, calls, threads=args.threads)
    if not made:
        print(f"  reusing {path}")
    db = Database(path, DatabaseTuning(threads=args.threads))
    load_prices(db)
    install_shims(db)
    db.lock_down()
    row = db.connection.execute(
        "SELECT min(start_time), max(start_time), count(*) FROM spans"
    ).fetchone()
    assert row is not None
    first, last, span_rows = row
    fp_row = db.connection.execute(
        "SELECT prompt_fingerprint FROM spans WHERE prompt_fingerprint IS NOT NULL "
        "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    fingerprint = str(fp_row[0]) if fp_row else "0" * 16
    print(f"  spans rows {span_rows:,}, {first} .. {last}")
    runner = RecordingRunner(db, 1_000_000, 600.0)
    cases = [
        c
        for c in make_cases(first, last, fingerprint)
        if c.window in windows and (not wanted or any(w in c.name for w in wanted))
    ]
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "calls": calls,
        "span_rows": span_rows,
        "repeats": repeats,
        "threads": args.threads,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print("\n== dashboard queries: HTTP API vs the same SQL in DuckDB ==")
    with ApiServer(db, runner) as api:
        measure_cases(db, runner, api, cases, repeats)
    failures = []
    day = [c for c in cases if c.window == "1d"]
    for c in day:
        if pct(c.http_s, 0.95) >= TARGET_P95_S:
            failures.append(c)
    if day:
        verdict = "PASS" if not failures else "FAIL"
        print(
            f"\ntarget: every dashboard query < {TARGET_P95_S * 1e3:.0f} ms p95 over 1 day on "
            f"{args.threads} threads: {verdict} ({len(day) - len(failures)}/{len(day)} under)"
        )
        for c in failures:
            print(f"  over: {c.name} p95 {pct(c.http_s, 0.95) * 1e3:.0f} ms")
    report["cases"] = [
        {
            "kind": c.kind,
            "name": c.name,
            "window": c.window,
            "path": c.path,
            "params": c.params,
            "statements": len(c.statements),
            "http_s": c.http_s,
            "direct_s": c.direct_s,
            "http_p50_s": pct(c.http_s, 0.5),
            "http_p95_s": pct(c.http_s, 0.95),
            "direct_p50_s": pct(c.direct_s, 0.5),
            "direct_p95_s": pct(c.direct_s, 0.95),
        }
        for c in cases
    ]
    end = last + timedelta(microseconds=1)
    print("\n== where one day of llm_calls goes (median of 3) ==")
    report["view_cost_s"] = view_cost(db, end - timedelta(days=1), end)
    if args.explain and day:
        slowest = max(day, key=lambda c: pct(c.direct_s, 0.5))
        plan = explain(db, slowest)
        out = RESULTS / f"analytics-explain-{calls}.txt"
        out.write_text(f"-- {slowest.name} over {slowest.window}\n{plan}\n", encoding="utf-8")
        print(f"\nEXPLAIN ANALYZE of {slowest.name} ({slowest.window}) written to {out}")
    if args.percentiles:
        print(f"\n== percentiles over one day, 5-minute buckets (median of {repeats}) ==")
        report["percentile_variants"] = percentile_variants(
            db, end - timedelta(days=1), end, repeats
        )
    if not args.no_pgwire:
        print(f"\n== PostgreSQL wire: a {PG_ROWS:,}-row result (median of {min(repeats, 3)}) ==")
        report["pgwire_rows_per_s"] = measure_pgwire(db, min(repeats, 3))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"analytics-{stamp}.json", "analytics-latest.json"):
        (RESULTS / name).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
