"""Grafana dashboards as code: this module writes the JSON files beside it.

Takes nothing; `python -m dashboards.build` (re)writes `dashboards/grafana/*.json` — golden
signals, prompts and cost, GPU — from the panel definitions below; `dashboards()` returns them
as dicts (the tests compare the files with it). Panels query the collector through Grafana's
built-in PostgreSQL data source (uid `infersight-sql`, the collector's PostgreSQL-wire endpoint,
DuckDB SQL with Grafana's macros) and Prometheus (uid `infersight-prom`, which scrapes the
collector's /metrics); trace ids link to the Jaeger data source (uid `infersight-jaeger`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "grafana"

SQL_DS = {"type": "grafana-postgresql-datasource", "uid": "infersight-sql"}
PROM_DS = {"type": "prometheus", "uid": "infersight-prom"}
JAEGER_UID = "infersight-jaeger"

#: multi-value filters: `'__all'` is the value of "All", so the SQL stays short and keeps NULLs
SERVICE_FILTER = "('__all' IN (${service}) OR service_name IN (${service}))"
MODEL_FILTER = "('__all' IN (${model}) OR model IN (${model}))"
CALL_FILTERS = f"$__timeFilter(start_time) AND {SERVICE_FILTER} AND {MODEL_FILTER}"

GROUP_OPTIONS = ["model", "provider", "service_name", "k8s_namespace", "k8s_pod", "operation"]


class _Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def new_row(self) -> dict[str, int]:
        if self.x:
            self.y += self.row_h
        self.x = 0
        self.row_h = 0
        pos = {"x": 0, "y": self.y, "w": 24, "h": 1}
        self.y += 1
        return pos

    def panel_id(self) -> int:
        pid = self.next_id
        self.next_id += 1
        return pid


def _sql_target(sql: str, fmt: str, ref: str = "A") -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": SQL_DS,
        "editorMode": "code",
        "rawQuery": True,
        "format": fmt,
        "rawSql": sql.strip(),
    }


def _prom_target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": PROM_DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
    }


def _trace_link() -> list[dict[str, Any]]:
    return [
        {
            "title": "Open trace",
            "url": "",
            "internal": {
                "datasourceUid": JAEGER_UID,
                "datasourceName": "infersight traces",
                "query": {"query": "${__value.raw}"},
            },
        }
    ]


class _Dashboard:
    def __init__(self, uid: str, title: str, description: str, tags: list[str]) -> None:
        self.layout = _Layout()
        self.doc: dict[str, Any] = {
            "uid": uid,
            "title": title,
            "description": description,
            "tags": ["infersight", *tags],
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": 41,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "timezone": "utc",
            "annotations": {"list": []},
            "templating": {"list": []},
            "panels": [],
        }

    def variable(self, var: dict[str, Any]) -> None:
        self.doc["templating"]["list"].append(var)

    def row(self, title: str) -> None:
        self.doc["panels"].append(
            {
                "id": self.layout.panel_id(),
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": self.layout.new_row(),
                "panels": [],
            }
        )

    def panel(
        self,
        kind: str,
        title: str,
        targets: list[dict[str, Any]],
        *,
        w: int,
        h: int,
        unit: str | None = None,
        description: str = "",
        overrides: list[dict[str, Any]] | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        defaults: dict[str, Any] = {}
        if unit:
            defaults["unit"] = unit
        panel: dict[str, Any] = {
            "id": self.layout.panel_id(),
            "type": kind,
            "title": title,
            "description": description,
            "datasource": targets[0]["datasource"],
            "gridPos": self.layout.place(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or {},
            "targets": targets,
        }
        self.doc["panels"].append(panel)


def _query_variable(name: str, label: str, sql: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": SQL_DS,
        "query": sql,
        "definition": sql,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": "'__all'",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def _filters(d: _Dashboard) -> None:
    d.variable(
        _query_variable(
            "service",
            "Service",
            "SELECT DISTINCT service_name FROM llm_calls WHERE $__timeFilter(start_time) "
            "AND service_name IS NOT NULL ORDER BY 1",
        )
    )
    d.variable(
        _query_variable(
            "model",
            "Model",
            "SELECT DISTINCT model FROM llm_calls WHERE $__timeFilter(start_time) "
            "AND model IS NOT NULL ORDER BY 1",
        )
    )


def _grouped_series(d: _Dashboard, title: str, value: str, where: str, unit: str) -> None:
    """A time series of `value` per `${group}` value (the group chosen in the dashboard)."""
    cond = f" AND {where}" if where else ""
    sql = f"""
SELECT $__timeGroupAlias(start_time,$__interval),
       coalesce(CAST(${{group}} AS VARCHAR), '(none)') AS metric,
       {value} AS value
FROM llm_calls
WHERE {CALL_FILTERS}{cond}
GROUP BY 1, 2
ORDER BY 1"""
    d.panel("timeseries", title, [_sql_target(sql, "time_series")], w=12, h=8, unit=unit)


def golden_signals() -> dict[str, Any]:
    d = _Dashboard(
        "infersight-golden",
        "infersight / LLM golden signals",
        "How fast, how much, how often it fails, how saturated: from the trace store "
        "(SQL) and from the collector's Prometheus metrics.",
        ["golden-signals"],
    )
    _filters(d)
    d.variable(
        {
            "name": "group",
            "label": "Group by",
            "type": "custom",
            "query": ",".join(GROUP_OPTIONS),
            "multi": False,
            "includeAll": False,
            "current": {"text": "model", "value": "model"},
            "options": [{"text": g, "value": g, "selected": g == "model"} for g in GROUP_OPTIONS],
        }
    )
    d.row("Calls (SQL over the trace store)")
    d.panel(
        "stat",
        "Calls",
        [_sql_target(f"SELECT count(*) AS calls FROM llm_calls WHERE {CALL_FILTERS}", "table")],
        w=6,
        h=4,
        unit="short",
    )
    d.panel(
        "stat",
        "Error ratio",
        [
            _sql_target(
                "SELECT count(*) FILTER (WHERE status = 'error')::DOUBLE / nullif(count(*), 0) "
                f"AS error_ratio FROM llm_calls WHERE {CALL_FILTERS}",
                "table",
            )
        ],
        w=6,
        h=4,
        unit="percentunit",
    )
    d.panel(
        "stat",
        "Latency p95",
        [
            _sql_target(
                "SELECT quantile_cont(duration_s, 0.95) AS p95 "
                f"FROM llm_calls WHERE {CALL_FILTERS}",
                "table",
            )
        ],
        w=6,
        h=4,
        unit="s",
    )
    d.panel(
        "stat",
        "Spend",
        [
            _sql_target(
                f"SELECT coalesce(sum(cost_usd), 0) AS usd FROM llm_calls WHERE {CALL_FILTERS}",
                "table",
            )
        ],
        w=6,
        h=4,
        unit="currencyUSD",
    )
    _grouped_series(
        d, "Requests per second by ${group}", "count(*) * 1000.0 / $__interval_ms", "", "reqps"
    )
    d.panel(
        "timeseries",
        "Errors per second by error type",
        [
            _sql_target(
                f"""
SELECT $__timeGroupAlias(start_time,$__interval),
       coalesce(error_type, '_OTHER') AS metric,
       count(*) * 1000.0 / $__interval_ms AS value
FROM llm_calls
WHERE {CALL_FILTERS} AND status = 'error'
GROUP BY 1, 2
ORDER BY 1""",
                "time_series",
            )
        ],
        w=12,
        h=8,
        unit="reqps",
    )
    d.panel(
        "timeseries",
        "Latency percentiles",
        [
            _sql_target(
                f"""
SELECT $__timeGroupAlias(start_time,$__interval),
       quantile_cont(duration_s, 0.5) AS p50,
       quantile_cont(duration_s, 0.9) AS p90,
       quantile_cont(duration_s, 0.95) AS p95,
       quantile_cont(duration_s, 0.99) AS p99
FROM llm_calls
WHERE {CALL_FILTERS}
GROUP BY 1
ORDER BY 1""",
                "time_series",
            )
        ],
        w=12,
        h=8,
        unit="s",
    )
    _grouped_series(
        d,
        "Time to first token p95 by ${group}",
        "quantile_cont(ttft_s, 0.95)",
        "ttft_s IS NOT NULL",
        "s",
    )
    _grouped_series(
        d,
        "Time per output token p50 by ${group}",
        "quantile_cont(tpot_s, 0.5)",
        "tpot_s IS NOT NULL",
        "s",
    )
    d.panel(
        "timeseries",
        "Tokens per second",
        [
            _sql_target(
                f"""
SELECT $__timeGroupAlias(start_time,$__interval),
       coalesce(sum(input_tokens), 0) * 1000.0 / $__interval_ms AS input,
       coalesce(sum(output_tokens), 0) * 1000.0 / $__interval_ms AS output
FROM llm_calls
WHERE {CALL_FILTERS}
GROUP BY 1
ORDER BY 1""",
                "time_series",
            )
        ],
        w=12,
        h=8,
        unit="short",
    )
    d.row("Saturation (GPU and engine metrics)")
    d.panel(
        "timeseries",
        "GPU utilization",
        [
            _sql_target(
                """
SELECT $__timeGroupAlias(time,$__interval),
       coalesce(k8s_node, '') || ' ' || coalesce(json_extract_string(attributes, '$."hw.id"'), '')
           AS metric,
       avg(value) AS value
FROM metric_points
WHERE $__timeFilter(time) AND metric_name = 'hw.gpu.utilization'
GROUP BY 1, 2
ORDER BY 1""",
                "time_series",
            )
        ],
        w=8,
        h=8,
        unit="percentunit",
    )
    d.panel(
        "timeseries",
        "KV-cache usage",
        [
            _sql_target(
                """
SELECT $__timeGroupAlias(time,$__interval),
       coalesce(service_name, '') || ' ' || metric_name AS metric,
       avg(value) AS value
FROM metric_points
WHERE $__timeFilter(time)
  AND metric_name IN ('vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc',
                      'sglang:token_usage')
GROUP BY 1, 2
ORDER BY 1""",
                "time_series",
            )
        ],
        w=8,
        h=8,
        unit="percentunit",
    )
    d.panel(
        "timeseries",
        "Queue depth",
        [
            _sql_target(
                """
SELECT $__timeGroupAlias(time,$__interval),
       coalesce(service_name, '') || ' ' || metric_name AS metric,
       avg(value) AS value
FROM metric_points
WHERE $__timeFilter(time)
  AND metric_name IN ('vllm:num_requests_waiting', 'tgi_queue_size', 'sglang:num_queue_reqs')
GROUP BY 1, 2
ORDER BY 1""",
                "time_series",
            )
        ],
        w=8,
        h=8,
        unit="short",
    )
    d.row("Prometheus (the collector's /metrics)")
    rate = "$__rate_interval"
    d.panel(
        "timeseries",
        "Requests per second by model",
        [
            _prom_target(
                f"sum by (gen_ai_request_model) (rate(infersight_gen_ai_requests_total[{rate}]))",
                "{{gen_ai_request_model}}",
            )
        ],
        w=12,
        h=8,
        unit="reqps",
    )
    d.panel(
        "timeseries",
        "Error ratio by model",
        [
            _prom_target(
                f"sum by (gen_ai_request_model) (rate(infersight_gen_ai_errors_total[{rate}])) / "
                f"sum by (gen_ai_request_model) (rate(infersight_gen_ai_requests_total[{rate}]))",
                "{{gen_ai_request_model}}",
            )
        ],
        w=12,
        h=8,
        unit="percentunit",
    )
    d.panel(
        "timeseries",
        "Operation duration p95 by model",
        [
            _prom_target(
                "histogram_quantile(0.95, sum by (le, gen_ai_request_model) "
                f"(rate(gen_ai_client_operation_duration_seconds_bucket[{rate}])))",
                "{{gen_ai_request_model}}",
            )
        ],
        w=12,
        h=8,
        unit="s",
    )
    d.panel(
        "timeseries",
        "Time to first chunk p95 by model",
        [
            _prom_target(
                "histogram_quantile(0.95, sum by (le, gen_ai_request_model) "
                f"(rate(gen_ai_client_operation_time_to_first_chunk_seconds_bucket[{rate}])))",
                "{{gen_ai_request_model}}",
            )
        ],
        w=12,
        h=8,
        unit="s",
    )
    d.panel(
        "timeseries",
        "Tokens per second by type",
        [
            _prom_target(
                f"sum by (gen_ai_token_type) (rate(gen_ai_client_token_usage_sum[{rate}]))",
                "{{gen_ai_token_type}}",
            )
        ],
        w=24,
        h=8,
        unit="short",
    )
    return d.doc


def prompts_cost() -> dict[str, Any]:
    d = _Dashboard(
        "infersight-prompts",
        "infersight / prompts and cost",
        "Which prompts cost what, which are slow, which fail; spend per model, "
        "service and namespace.",
        ["prompts", "cost"],
    )
    _filters(d)
    d.row("Spend")
    d.panel(
        "timeseries",
        "Spend per interval by model",
        [
            _sql_target(
                f"""
SELECT $__timeGroupAlias(start_time,$__interval),
       coalesce(model, '(none)') AS metric,
       coalesce(sum(cost_usd), 0) AS value
FROM llm_calls
WHERE {CALL_FILTERS}
GROUP BY 1, 2
ORDER BY 1""",
                "time_series",
            )
        ],
        w=12,
        h=8,
        unit="currencyUSD",
    )
    d.panel(
        "bargauge",
        "Spend by service",
        [
            _sql_target(
                f"""
SELECT coalesce(service_name, '(none)') AS service, coalesce(sum(cost_usd), 0) AS usd
FROM llm_calls
WHERE {CALL_FILTERS}
GROUP BY 1
ORDER BY 2 DESC""",
                "table",
            )
        ],
        w=6,
        h=8,
        unit="currencyUSD",
        options={"reduceOptions": {"values": True, "calcs": [], "fields": "/usd/"}},
    )
    d.panel(
        "bargauge",
        "Spend by namespace",
        [
            _sql_target(
                f"""
SELECT coalesce(k8s_namespace, '(none)') AS namespace, coalesce(sum(cost_usd), 0) AS usd
FROM llm_calls
WHERE {CALL_FILTERS}
GROUP BY 1
ORDER BY 2 DESC""",
                "table",
            )
        ],
        w=6,
        h=8,
        unit="currencyUSD",
        options={"reduceOptions": {"values": True, "calcs": [], "fields": "/usd/"}},
    )
    d.panel(
        "table",
        "Spend by model",
        [
            _sql_target(
                f"""
SELECT coalesce(model, '(none)') AS model,
       count(*) AS calls,
       count(cost_usd) AS priced_calls,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(gpu_seconds), 0) AS gpu_seconds,
       coalesce(sum(cost_usd), 0) AS usd,
       any_value(cost_basis) AS basis
FROM llm_calls
WHERE {CALL_FILTERS}
GROUP BY 1
ORDER BY usd DESC""",
                "table",
            )
        ],
        w=24,
        h=8,
    )
    d.row("Prompts (by fingerprint)")
    prompt_sql = f"""
SELECT prompt_fingerprint AS fingerprint,
       count(*) AS calls,
       coalesce(sum(cost_usd), 0) AS usd,
       quantile_cont(duration_s, 0.95) AS p95_s,
       quantile_cont(ttft_s, 0.95) AS ttft_p95_s,
       count(*) FILTER (WHERE status = 'error')::DOUBLE / count(*) AS error_ratio,
       coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) AS tokens,
       min(start_time) AS first_seen,
       max(start_time) AS last_seen,
       arg_max(trace_id, start_time) AS example_trace_id
FROM llm_calls
WHERE {CALL_FILTERS} AND prompt_fingerprint IS NOT NULL
GROUP BY 1"""
    link = [
        {
            "matcher": {"id": "byName", "options": "example_trace_id"},
            "properties": [{"id": "links", "value": _trace_link()}],
        }
    ]
    d.panel(
        "table",
        "Most expensive prompts",
        [_sql_target(prompt_sql + "\nORDER BY usd DESC\nLIMIT 20", "table")],
        w=24,
        h=9,
        overrides=link,
    )
    d.panel(
        "table",
        "Slowest prompts (p95)",
        [_sql_target(prompt_sql + "\nORDER BY p95_s DESC NULLS LAST\nLIMIT 20", "table")],
        w=12,
        h=9,
        overrides=link,
    )
    d.panel(
        "table",
        "Most erroring prompts",
        [
            _sql_target(
                prompt_sql.replace(
                    "GROUP BY 1", "GROUP BY 1\nHAVING count(*) FILTER (WHERE status = 'error') > 0"
                )
                + "\nORDER BY error_ratio DESC, calls DESC\nLIMIT 20",
                "table",
            )
        ],
        w=12,
        h=9,
        overrides=link,
    )
    d.row("Input size")
    d.panel(
        "barchart",
        "Calls and latency by input size",
        [
            _sql_target(
                f"""
WITH edges AS (SELECT unnest([0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
                              131072]) AS lo),
bounds AS (SELECT lo, lead(lo) OVER (ORDER BY lo) AS hi FROM edges)
SELECT CASE WHEN b.hi IS NULL THEN CAST(b.lo AS VARCHAR) || '+'
            ELSE CAST(b.lo AS VARCHAR) || '-' || CAST(b.hi - 1 AS VARCHAR) END AS input_tokens,
       count(c.input_tokens) AS calls,
       quantile_cont(c.duration_s, 0.5) AS latency_p50_s,
       quantile_cont(c.duration_s, 0.95) AS latency_p95_s
FROM bounds b
LEFT JOIN (SELECT input_tokens, duration_s FROM llm_calls
           WHERE {CALL_FILTERS} AND input_tokens IS NOT NULL) c
  ON c.input_tokens >= b.lo AND (b.hi IS NULL OR c.input_tokens < b.hi)
GROUP BY b.lo, b.hi
ORDER BY b.lo""",
                "table",
            )
        ],
        w=24,
        h=9,
        options={"xField": "input_tokens"},
    )
    d.row("Single calls")
    call_cols = (
        "trace_id, start_time, service_name, model, duration_s, ttft_s, input_tokens, "
        "output_tokens, cost_usd, status, error_type"
    )
    trace_link = [
        {
            "matcher": {"id": "byName", "options": "trace_id"},
            "properties": [{"id": "links", "value": _trace_link()}],
        }
    ]
    d.panel(
        "table",
        "Slowest calls",
        [
            _sql_target(
                f"SELECT {call_cols} FROM llm_calls WHERE {CALL_FILTERS} "
                "ORDER BY duration_s DESC NULLS LAST LIMIT 20",
                "table",
            )
        ],
        w=12,
        h=9,
        overrides=trace_link,
    )
    d.panel(
        "table",
        "Costliest calls",
        [
            _sql_target(
                f"SELECT {call_cols} FROM llm_calls WHERE {CALL_FILTERS} "
                "ORDER BY cost_usd DESC NULLS LAST LIMIT 20",
                "table",
            )
        ],
        w=12,
        h=9,
        overrides=trace_link,
    )
    d.row("Prometheus")
    d.panel(
        "timeseries",
        "Spend rate by model (USD per hour)",
        [
            _prom_target(
                "3600 * sum by (gen_ai_request_model) "
                "(rate(infersight_gen_ai_cost_usd_total[$__rate_interval]))",
                "{{gen_ai_request_model}}",
            )
        ],
        w=24,
        h=8,
        unit="currencyUSD",
    )
    return d.doc


def gpu() -> dict[str, Any]:
    d = _Dashboard(
        "infersight-gpu",
        "infersight / GPU",
        "GPU utilization, memory and power from the agent's telemetry, engine "
        "KV-cache and queues, and GPU time and energy per model.",
        ["gpu"],
    )

    def per_gpu(title: str, metric: str, unit: str) -> None:
        d.panel(
            "timeseries",
            title,
            [
                _sql_target(
                    f"""
SELECT $__timeGroupAlias(time,$__interval),
       coalesce(k8s_node, '') || ' ' || coalesce(json_extract_string(attributes, '$."hw.id"'), '')
           AS metric,
       avg(value) AS value
FROM metric_points
WHERE $__timeFilter(time) AND metric_name = '{metric}'
GROUP BY 1, 2
ORDER BY 1""",
                    "time_series",
                )
            ],
            w=8,
            h=8,
            unit=unit,
        )

    d.row("Devices")
    per_gpu("GPU utilization", "hw.gpu.utilization", "percentunit")
    per_gpu("GPU memory used", "hw.gpu.memory.usage", "bytes")
    per_gpu("GPU power", "hw.power", "watt")
    d.row("Engines")
    d.panel(
        "timeseries",
        "KV-cache usage by engine",
        [
            _sql_target(
                """
SELECT $__timeGroupAlias(time,$__interval),
       coalesce(service_name, '') AS metric,
       avg(value) AS value
FROM metric_points
WHERE $__timeFilter(time)
  AND metric_name IN ('vllm:kv_cache_usage_perc', 'vllm:gpu_cache_usage_perc',
                      'sglang:token_usage')
GROUP BY 1, 2
ORDER BY 1""",
                "time_series",
            )
        ],
        w=12,
        h=8,
        unit="percentunit",
    )
    d.panel(
        "timeseries",
        "Requests waiting by engine",
        [
            _sql_target(
                """
SELECT $__timeGroupAlias(time,$__interval),
       coalesce(service_name, '') AS metric,
       avg(value) AS value
FROM metric_points
WHERE $__timeFilter(time)
  AND metric_name IN ('vllm:num_requests_waiting', 'tgi_queue_size', 'sglang:num_queue_reqs')
GROUP BY 1, 2
ORDER BY 1""",
                "time_series",
            )
        ],
        w=12,
        h=8,
        unit="short",
    )
    d.row("Calls on our GPUs")
    d.panel(
        "timeseries",
        "GPU seconds per second by model",
        [
            _sql_target(
                """
SELECT $__timeGroupAlias(start_time,$__interval),
       coalesce(model, '(none)') AS metric,
       sum(gpu_seconds) * 1000.0 / $__interval_ms AS value
FROM llm_calls
WHERE $__timeFilter(start_time) AND gpu_seconds IS NOT NULL
GROUP BY 1, 2
ORDER BY 1""",
                "time_series",
            )
        ],
        w=12,
        h=8,
        unit="short",
    )
    d.panel(
        "table",
        "GPU time, energy and cost by model",
        [
            _sql_target(
                """
SELECT coalesce(model, '(none)') AS model,
       count(*) AS calls,
       sum(gpu_seconds) AS gpu_seconds,
       sum(gpu_energy_j) / 3600.0 AS energy_wh,
       sum(gpu_energy_j) / nullif(sum(coalesce(output_tokens, 0)), 0) AS joules_per_output_token,
       sum(cost_usd) FILTER (WHERE cost_basis IN ('gpu_time', 'energy')) AS usd
FROM llm_calls
WHERE $__timeFilter(start_time) AND (gpu_seconds IS NOT NULL OR gpu_energy_j IS NOT NULL)
GROUP BY 1
ORDER BY gpu_seconds DESC NULLS LAST""",
                "table",
            )
        ],
        w=12,
        h=8,
    )
    return d.doc


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard, by file name."""
    return {
        "golden-signals.json": golden_signals(),
        "prompts-cost.json": prompts_cost(),
        "gpu.json": gpu(),
    }


def render(doc: dict[str, Any]) -> str:
    """The file text of one dashboard."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, doc in dashboards().items():
        (OUT_DIR / name).write_text(render(doc), "utf-8")


if __name__ == "__main__":
    main()
