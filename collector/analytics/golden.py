"""Golden signals of LLM calls, with the saturation of the hardware that served them.

Takes a `QueryRunner`, a validated `TimeRange` and a group name (model, provider, service,
namespace, pod, operation); gives, per group and per time bucket: request rate, errors (total,
by `error_type`, ratio), latency, time-to-first-token and time-per-output-token percentiles,
input and output tokens per second and the mean number of calls in flight; a summary per group
over the whole range; and per bucket the saturation signals found in `metric_points` (GPU
utilization, memory and power, engine KV-cache usage and queue depth). All aggregation happens
in DuckDB; Python only reshapes the rows.

Definitions (bucket b covers [start + b*step, start + (b+1)*step), the last one cut at `end`):
  * a call belongs to the bucket in which it started (`llm_calls.start_time`);
  * rates divide by the bucket's width in seconds;
  * percentiles are linear interpolations between closest ranks (DuckDB `quantile_cont`);
  * in flight = the time calls spent running inside the bucket divided by its width, i.e. the
    mean number of concurrent calls (Little's law); calls that started up to `max_call_s`
    before the range are counted for the part they overlap it;
  * saturation: each series (one GPU, one engine) is averaged within the bucket, then the
    series are averaged (fractions) or summed (bytes, watts, queued requests).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from collector.analytics.params import TimeRange, group_column, rfc3339
from collector.analytics.query import fetch, fetch_columns, finite, map_to_dict
from collector.api.sql import QueryRunner

QUANTILES: Final = (0.5, 0.9, 0.95, 0.99)
_QUANTILE_NAMES: Final = ("p50", "p90", "p95", "p99")
_QLIST: Final = "[" + ", ".join(str(q) for q in QUANTILES) + "]"

#: saturation signal -> (aggregation across series, [(metric name, scale to our unit)]);
#: when several names of one signal are present, the first one listed wins, so a GPU reported
#: both by our agent and by dcgm-exporter is not counted twice.
SATURATION_SIGNALS: Final[dict[str, tuple[str, list[tuple[str, float]]]]] = {
    "gpu_utilization": ("avg", [("hw.gpu.utilization", 1.0), ("DCGM_FI_DEV_GPU_UTIL", 0.01)]),
    "gpu_memory_used_bytes": (
        "sum",
        [("hw.gpu.memory.usage", 1.0), ("DCGM_FI_DEV_FB_USED", 1024.0 * 1024.0)],
    ),
    "gpu_memory_utilization": ("avg", [("hw.gpu.memory.utilization", 1.0)]),
    "gpu_power_w": ("sum", [("hw.power", 1.0), ("DCGM_FI_DEV_POWER_USAGE", 1.0)]),
    "kv_cache_usage": (
        "avg",
        [
            ("vllm:kv_cache_usage_perc", 1.0),
            ("vllm:gpu_cache_usage_perc", 1.0),
            ("sglang:token_usage", 1.0),
        ],
    ),
    "queue_depth": (
        "sum",
        [
            ("vllm:num_requests_waiting", 1.0),
            ("tgi_queue_size", 1.0),
            ("sglang:num_queue_reqs", 1.0),
        ],
    ),
    "engine_requests_running": (
        "sum",
        [("vllm:num_requests_running", 1.0), ("sglang:num_running_reqs", 1.0)],
    ),
}


def _quantiles(values: list[float] | None) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(_QUANTILE_NAMES)
    p50, p90, p95, p99 = values
    total = p50 + p90 + p95 + p99
    if total - total == 0.0:  # all four finite (NaN or an infinity would leave NaN): the usual case
        return {"p50": p50, "p90": p90, "p95": p95, "p99": p99}
    return dict(zip(_QUANTILE_NAMES, map(finite, values), strict=True))


def _signals_sql(column: str) -> str:
    """One statement: per (group, bucket) rows on the full grid, then one total row per group
    (`is_total`). The calls of the range are aggregated in one pass (GROUPING SETS); failed
    calls and calls that run over a bucket edge are read apart, since they are few."""
    # $1 start, $2 end, $3 start µs, $4 step µs, $5 buckets, $6 end µs, $7 in-flight lower bound
    return f"""
WITH calls AS (
    SELECT {column} AS grp,
           CAST(floor((epoch_us(start_time) - $3) / $4) AS BIGINT) AS b,
           duration_s, ttft_s, tpot_s, status, input_tokens, output_tokens, cost_usd
    FROM llm_calls
    WHERE start_time >= $1 AND start_time < $2
),
agg AS (
    SELECT grp, b,
           GROUPING(b) = 1 AS is_total,
           count(*) AS calls,
           count(*) FILTER (WHERE status = 'error') AS errors,
           quantile_cont(duration_s, {_QLIST}) AS latency,
           quantile_cont(ttft_s, {_QLIST}) AS ttft,
           quantile_cont(tpot_s, {_QLIST}) AS tpot,
           coalesce(sum(input_tokens), 0) AS input_tokens,
           coalesce(sum(output_tokens), 0) AS output_tokens,
           sum(cost_usd) AS cost_usd,
           -- running time of the calls started in the bucket; what runs past its end is
           -- moved to the following buckets below
           sum(duration_s) FILTER (WHERE duration_s > 0) AS run_s
    FROM calls
    GROUP BY GROUPING SETS ((grp, b), (grp))
),
errors_by_type AS (
    SELECT grp, b, GROUPING(b) = 1 AS is_total, histogram(etype) AS by_type
    FROM (SELECT {column} AS grp,
                 CAST(floor((epoch_us(start_time) - $3) / $4) AS BIGINT) AS b,
                 coalesce(error_type, '_OTHER') AS etype
          FROM llm_calls
          WHERE start_time >= $1 AND start_time < $2 AND status = 'error')
    GROUP BY GROUPING SETS ((grp, b), (grp))
),
starts AS (
    -- times relative to the range start (o_us) and to the call start (d_us) stay small, so
    -- that doubles keep sub-microsecond precision
    SELECT {column} AS grp,
           start_time >= $1 AS own,
           epoch_us(start_time) - $3 AS o_us,
           duration_s * 1e6 AS d_us,
           CAST(floor((epoch_us(start_time) - $3) / $4) AS BIGINT) AS b0
    FROM llm_calls
    WHERE start_time >= $7 AND start_time < $2 AND duration_s > 0
),
crossing AS (
    -- calls running past the end of their own bucket (or of the range), and calls that
    -- started before the range and run into it; edge_us: from the call start to that edge
    SELECT grp, own, o_us, d_us, b0, edge_us
    FROM (SELECT *, least(greatest(b0 + 1, 0) * $4, $6 - $3) - o_us AS edge_us FROM starts)
    WHERE d_us > edge_us
),
overrun AS (
    SELECT grp, b0 AS b, sum(d_us - edge_us) AS over_us
    FROM crossing
    WHERE own
    GROUP BY grp, b0
),
spill AS (
    SELECT grp, b,
           sum(least(e_us, (b + 1) * $4) - greatest(o_us, b * $4)) AS busy_us
    FROM (SELECT grp, o_us, e_us,
                 unnest(range(greatest(b0 + 1, 0), CAST(floor(e_us / $4) AS BIGINT) + 1)) AS b
          FROM (SELECT *, least(o_us + d_us, $6 - $3) AS e_us FROM crossing))
    WHERE b < $5
    GROUP BY grp, b
),
groups AS (
    SELECT grp FROM agg UNION SELECT grp FROM spill
),
grid AS (
    SELECT g.grp, r.range AS b FROM groups g CROSS JOIN range($5) r
)
SELECT grid.grp, grid.b, false AS is_total,
       coalesce(a.calls, 0) AS calls,
       coalesce(a.errors, 0) AS errors,
       e.by_type AS errors_by_type,
       a.latency, a.ttft, a.tpot,
       coalesce(a.input_tokens, 0) AS input_tokens,
       coalesce(a.output_tokens, 0) AS output_tokens,
       a.cost_usd,
       coalesce(a.run_s, 0.0) + (coalesce(s.busy_us, 0.0) - coalesce(o.over_us, 0.0)) / 1e6
           AS busy_s
FROM grid
LEFT JOIN agg a ON a.grp IS NOT DISTINCT FROM grid.grp AND a.b = grid.b AND NOT a.is_total
LEFT JOIN errors_by_type e
  ON e.grp IS NOT DISTINCT FROM grid.grp AND e.b = grid.b AND NOT e.is_total
LEFT JOIN overrun o ON o.grp IS NOT DISTINCT FROM grid.grp AND o.b = grid.b
LEFT JOIN spill s ON s.grp IS NOT DISTINCT FROM grid.grp AND s.b = grid.b
UNION ALL
SELECT a.grp, NULL, true, a.calls, a.errors, e.by_type, a.latency, a.ttft, a.tpot,
       a.input_tokens, a.output_tokens, a.cost_usd, NULL
FROM agg a
LEFT JOIN errors_by_type e ON e.grp IS NOT DISTINCT FROM a.grp AND e.is_total
WHERE a.is_total
ORDER BY 3, 1 NULLS FIRST, 2
"""


def _saturation_sql() -> tuple[str, list[Any]]:
    rows: list[str] = []
    params: list[Any] = []
    for signal, (how, names) in SATURATION_SIGNALS.items():
        for pref, (name, scale) in enumerate(names):
            rows.append("(?, ?, ?, ?, ?)")
            params.extend([signal, name, pref, scale, how])
    values = ", ".join(rows)
    sql = f"""
WITH wanted(signal, metric_name, pref, scale, how) AS (VALUES {values}),
pts AS (
    SELECT w.signal, w.pref, w.how,
           CAST(floor((epoch_us(m.time) - ?) / ?) AS BIGINT) AS b,
           coalesce(m.k8s_node, '') || '|' || coalesce(m.service_name, '') || '|'
               || coalesce(CAST(m.attributes AS VARCHAR), '') AS series,
           m.value * w.scale AS v
    FROM metric_points m
    JOIN wanted w ON m.metric_name = w.metric_name
    WHERE m.time >= ? AND m.time < ? AND m.value IS NOT NULL
      AND (NOT starts_with(m.metric_name, 'hw.')
           OR coalesce(m.attributes ->> '$."hw.type"', 'gpu') = 'gpu')
),
best AS (
    SELECT signal, min(pref) AS pref FROM pts GROUP BY signal
),
per_series AS (
    SELECT p.signal, p.how, p.b, p.series, avg(p.v) AS v
    FROM pts p JOIN best ON p.signal = best.signal AND p.pref = best.pref
    GROUP BY p.signal, p.how, p.b, p.series
)
SELECT signal, b,
       CASE WHEN any_value(how) = 'sum' THEN sum(v) ELSE avg(v) END AS value,
       count(*) AS series
FROM per_series
GROUP BY signal, b
ORDER BY signal, b
"""
    return sql, params


def _point(row: dict[str, Any], width_s: float) -> dict[str, Any]:
    calls = int(row["calls"])
    errors = int(row["errors"])
    raw = row["errors_by_type"]
    # Arrow gives a MAP as a list of (key, value) pairs
    by_type: dict[str, int] = dict(raw) if isinstance(raw, list) else map_to_dict(raw)
    input_tokens = int(row["input_tokens"])
    output_tokens = int(row["output_tokens"])
    return {
        "calls": calls,
        "requests_per_s": calls / width_s,
        "errors": errors,
        "errors_per_s": errors / width_s,
        "error_ratio": errors / calls if calls else None,
        "errors_by_type": by_type,
        "errors_per_s_by_type": {k: v / width_s for k, v in by_type.items()},
        "latency_s": _quantiles(row["latency"]),
        "ttft_s": _quantiles(row["ttft"]),
        "tpot_s": _quantiles(row["tpot"]),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_tokens_per_s": input_tokens / width_s,
        "output_tokens_per_s": output_tokens / width_s,
    }


def golden_signals(
    runner: QueryRunner, tr: TimeRange, group_by: str, *, max_call_s: float = 3600.0
) -> dict[str, Any]:
    """The golden-signals answer for one range, step and grouping (see the module docstring)."""
    column = group_column(group_by)
    t0_us = int(tr.start.timestamp() * 1_000_000)
    t1_us = int(tr.end.timestamp() * 1_000_000)
    step_us = tr.step_s * 1_000_000
    n = tr.buckets
    running_from = tr.start - timedelta(seconds=max_call_s)
    # columns, not rows of dicts: a day of 5-minute buckets over 60 pods is 17,000 rows
    cols = fetch_columns(
        runner,
        _signals_sql(column),
        [tr.start, tr.end, t0_us, step_us, n, t1_us, running_from],
    )
    names = list(cols)
    times = [rfc3339(tr.bucket_start(b)) for b in range(n)]
    widths = [tr.bucket_width_s(b) for b in range(n)]
    series: dict[Any, dict[str, Any]] = {}
    for values in zip(*cols.values(), strict=True):
        row = dict(zip(names, values, strict=True))
        entry = series.setdefault(row["grp"], {"group": row["grp"], "points": []})
        if row["is_total"]:
            summary = _point(row, tr.seconds)
            summary["cost_usd"] = finite(row["cost_usd"])
            entry["summary"] = summary
            continue
        b = int(row["b"])
        width = widths[b]
        point: dict[str, Any] = {"time": times[b], "width_s": width}
        point.update(_point(row, width))
        point["in_flight"] = float(row["busy_s"]) / width
        entry["points"].append(point)

    sat_sql, sat_params = _saturation_sql()
    sat_rows = fetch(runner, sat_sql, [*sat_params, t0_us, step_us, tr.start, tr.end])
    saturation: dict[str, list[dict[str, Any]]] = {name: [] for name in SATURATION_SIGNALS}
    for row in sat_rows:
        b = int(row["b"])
        saturation[row["signal"]].append(
            {
                "time": rfc3339(tr.bucket_start(b)),
                "value": row["value"],
                "series": int(row["series"]),
            }
        )
    return {
        "start": rfc3339(tr.start),
        "end": rfc3339(tr.end),
        "step_s": tr.step_s,
        "buckets": n,
        "group_by": group_by,
        "series": list(series.values()),
        "saturation": saturation,
        "saturation_sources": {
            name: [metric for metric, _ in names] for name, (_, names) in SATURATION_SIGNALS.items()
        },
    }
