"""Prompt-level analytics: per fingerprint, top-N lists, input sizes and one call in detail.

Takes a `QueryRunner` and validated parameters; gives JSON-ready dicts:
  * `prompt_stats`: per prompt fingerprint, calls, tokens, cost, latency and time-to-first-token
    percentiles, errors, first and last seen (over all stored calls), an example call;
  * `top_calls`: the slowest or most expensive single calls;
  * `input_size_distribution`: calls per input-token bucket with their latency percentiles;
  * `call_detail`: one call by trace and span id: its row, captured content, timings split into
    client, server, network and queueing when the server's span of the same trace is stored,
    tokens, cost, GPU time and energy, every span of its trace, and the failed attempts the
    client retried (folded into the call by pairing).
All aggregation runs in DuckDB.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

import orjson

from collector.analytics.params import BadParameterError, NotFoundError
from collector.analytics.query import fetch
from collector.api.sql import QueryRunner

_QLIST: Final = "[0.5, 0.9, 0.95, 0.99]"
_QNAMES: Final = ("p50", "p90", "p95", "p99")
_HEX = re.compile(r"^[0-9a-f]+$")

#: sort key of `prompt_stats` -> ORDER BY expression
PROMPT_ORDER: Final[dict[str, str]] = {
    "calls": "calls DESC",
    "cost": "cost_usd DESC NULLS LAST",
    "latency": "latency[3] DESC NULLS LAST",  # p95
    "errors": "errors DESC, error_ratio DESC",
    "error_ratio": "error_ratio DESC, errors DESC",
    "tokens": "total_tokens DESC",
    "last_seen": "last_seen_in_range DESC",
}

#: sort key of `prompt_stats` -> the aggregates its ORDER BY needs (the ranking pass computes
#: only these, over every fingerprint; the full statistics follow for the chosen few)
_ORDER_AGGREGATES: Final[dict[str, str]] = {
    "calls": "count(*) AS calls",
    "cost": "sum(cost_usd) AS cost_usd",
    "latency": f"quantile_cont(duration_s, {_QLIST}) AS latency",
    "errors": "count(*) FILTER (WHERE status = 'error') AS errors, "
    "count(*) FILTER (WHERE status = 'error') / count(*) AS error_ratio",
    "tokens": "coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) AS total_tokens",
    "last_seen": "max(start_time) AS last_seen_in_range",
}
_ORDER_AGGREGATES["error_ratio"] = _ORDER_AGGREGATES["errors"]

#: top-N lists over fingerprints
TOP_PROMPTS: Final[dict[str, str]] = {
    "slowest": "latency",
    "costliest": "cost",
    "erroring": "errors",
}

#: top-N lists over single calls -> ORDER BY
TOP_CALLS: Final[dict[str, str]] = {
    "slowest": "duration_s DESC NULLS LAST",
    "costliest": "cost_usd DESC NULLS LAST",
    "most_tokens": "coalesce(input_tokens, 0) + coalesce(output_tokens, 0) DESC",
    "slowest_first_token": "ttft_s DESC NULLS LAST",
}

#: lower edges of the input-size buckets, in tokens (the last bucket is open)
INPUT_SIZE_EDGES: Final = (0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)

_CALL_COLUMNS: Final = (
    "trace_id, span_id, start_time, end_time, service_name, k8s_namespace, k8s_pod, provider, "
    "operation, model, input_tokens, output_tokens, cache_read_input_tokens, duration_s, ttft_s, "
    "tpot_s, status, error_type, cost_usd, cost_basis, gpu_seconds, gpu_energy_j, "
    "prompt_fingerprint, source"
)


def _q(values: Any) -> dict[str, Any]:
    if not values:
        return dict.fromkeys(_QNAMES)
    return dict(zip(_QNAMES, values, strict=True))


def _filters(model: str | None, service: str | None, params: list[Any]) -> str:
    sql = ""
    if model is not None:
        sql += " AND model = ?"
        params.append(model)
    if service is not None:
        sql += " AND service_name = ?"
        params.append(service)
    return sql


def check_fingerprint(value: str) -> str:
    """A fingerprint parameter, validated (hex, lower case)."""
    fp = value.strip().lower()
    if not fp or len(fp) > 64 or not _HEX.match(fp):
        raise BadParameterError(f"fingerprint: {value!r} is not a prompt fingerprint (hex digits)")
    return fp


def check_trace_id(value: str, name: str = "trace_id", length: int = 32) -> str:
    """A trace or span id, validated (hex, lower case)."""
    ident = value.strip().lower()
    if len(ident) != length or not _HEX.match(ident):
        raise BadParameterError(f"{name}: {value!r} is not {length} hex digits")
    return ident


def prompt_stats(
    runner: QueryRunner,
    start: datetime,
    end: datetime,
    *,
    order: str = "calls",
    limit: int = 50,
    fingerprint: str | None = None,
    model: str | None = None,
    service: str | None = None,
) -> list[dict[str, Any]]:
    """One row per prompt fingerprint with calls in [start, end)."""
    order_sql = PROMPT_ORDER.get(order)
    if order_sql is None:
        raise BadParameterError(
            f"sort: unknown order {order!r}; use one of {', '.join(PROMPT_ORDER)}"
        )
    params: list[Any] = [start, end]
    where = ""
    if fingerprint is not None:
        where += " AND prompt_fingerprint = ?"
        params.append(fingerprint)
    where += _filters(model, service, params)
    # Ranking first, on the sort key alone: the percentiles, histograms and lists of the full
    # statistics cost most per group, and only `limit` groups are returned. The ranking reads
    # the unpriced rows unless it sorts by cost.
    source = "llm_calls" if "cost_usd" in order_sql else "call_rows"
    ranked = fetch(
        runner,
        f"SELECT prompt_fingerprint AS fingerprint, {_ORDER_AGGREGATES[order]} FROM {source} "
        f"WHERE start_time >= ? AND start_time < ? AND prompt_fingerprint IS NOT NULL{where} "
        f"GROUP BY prompt_fingerprint ORDER BY {order_sql}, fingerprint LIMIT ?",
        [*params, limit],
    )
    if not ranked:
        return []
    where += " AND prompt_fingerprint IN (SELECT unnest(?::VARCHAR[]))"
    params.append([r["fingerprint"] for r in ranked])
    params.append(limit)
    rows = fetch(
        runner,
        f"""
SELECT prompt_fingerprint AS fingerprint,
       count(*) AS calls,
       count(*) FILTER (WHERE status = 'error') AS errors,
       count(*) FILTER (WHERE status = 'error') / count(*) AS error_ratio,
       histogram(coalesce(error_type, '_OTHER')) FILTER (WHERE status = 'error') AS errors_by_type,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) AS total_tokens,
       avg(input_tokens) AS mean_input_tokens,
       sum(cost_usd) AS cost_usd,
       avg(cost_usd) AS mean_cost_usd,
       quantile_cont(duration_s, {_QLIST}) AS latency,
       quantile_cont(ttft_s, {_QLIST}) AS ttft,
       min(start_time) AS first_seen_in_range,
       max(start_time) AS last_seen_in_range,
       arg_max({{'trace_id': trace_id, 'span_id': span_id}}, start_time) AS example,
       list(DISTINCT model ORDER BY model) FILTER (WHERE model IS NOT NULL) AS models,
       list(DISTINCT service_name ORDER BY service_name)
           FILTER (WHERE service_name IS NOT NULL) AS services
FROM llm_calls
WHERE start_time >= ? AND start_time < ? AND prompt_fingerprint IS NOT NULL{where}
GROUP BY prompt_fingerprint
ORDER BY {order_sql}, fingerprint
LIMIT ?
""",
        params,
    )
    if not rows:
        return []
    fingerprints = [r["fingerprint"] for r in rows]
    seen = {
        r["fingerprint"]: r
        for r in fetch(
            runner,
            "SELECT fingerprint, first_seen, last_seen, calls AS calls_all_time "
            "FROM prompt_fingerprints WHERE fingerprint IN (SELECT unnest(?::VARCHAR[]))",
            [fingerprints],
        )
    }
    examples = _content_for(
        runner, [(r["example"]["trace_id"], r["example"]["span_id"]) for r in rows]
    )
    out: list[dict[str, Any]] = []
    for r in rows:
        ex = r["example"]
        content = examples.get((ex["trace_id"], ex["span_id"]))
        out.append(
            {
                "fingerprint": r["fingerprint"],
                "calls": int(r["calls"]),
                "errors": int(r["errors"]),
                "error_ratio": r["error_ratio"],
                "errors_by_type": r["errors_by_type"] or {},
                "input_tokens": int(r["input_tokens"]),
                "output_tokens": int(r["output_tokens"]),
                "mean_input_tokens": r["mean_input_tokens"],
                "cost_usd": r["cost_usd"],
                "mean_cost_usd": r["mean_cost_usd"],
                "latency_s": _q(r["latency"]),
                "ttft_s": _q(r["ttft"]),
                "first_seen": seen.get(r["fingerprint"], {}).get("first_seen"),
                "last_seen": seen.get(r["fingerprint"], {}).get("last_seen"),
                "calls_all_time": seen.get(r["fingerprint"], {}).get("calls_all_time"),
                "first_seen_in_range": r["first_seen_in_range"],
                "last_seen_in_range": r["last_seen_in_range"],
                "models": r["models"] or [],
                "services": r["services"] or [],
                "example": {
                    "trace_id": ex["trace_id"],
                    "span_id": ex["span_id"],
                    "preview": preview(content) if content else None,
                    "content": content,
                },
            }
        )
    return out


def _load_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _content_for(
    runner: QueryRunner, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    if not keys:
        return {}
    rows = fetch(
        runner,
        "SELECT trace_id, span_id, "
        "first(system_instructions) FILTER (WHERE system_instructions IS NOT NULL) AS si, "
        "first(input_messages) FILTER (WHERE input_messages IS NOT NULL) AS im, "
        "first(output_messages) FILTER (WHERE output_messages IS NOT NULL) AS om, "
        "first(tool_definitions) FILTER (WHERE tool_definitions IS NOT NULL) AS td, "
        "list(DISTINCT origin) AS origins "
        "FROM genai_content WHERE list_contains(?, trace_id || ':' || span_id) "
        "GROUP BY trace_id, span_id",
        [[f"{t}:{s}" for t, s in keys]],
    )
    return {
        (r["trace_id"], r["span_id"]): {
            "system_instructions": _load_json(r["si"]),
            "input_messages": _load_json(r["im"]),
            "output_messages": _load_json(r["om"]),
            "tool_definitions": _load_json(r["td"]),
            "origins": r["origins"],
        }
        for r in rows
    }


def preview(content: dict[str, Any], chars: int = 200) -> str | None:
    """The start of the system text, else of the first input text."""
    texts: list[str] = []
    for key in ("system_instructions", "input_messages"):
        value = content.get(key)
        if not isinstance(value, list):
            continue
        for item in value:
            if not isinstance(item, dict):
                continue
            parts = item.get("parts") if "parts" in item else [item]
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, dict) and isinstance(part.get("content"), str):
                    texts.append(part["content"])
        if texts:
            break
    if not texts:
        return None
    text = " ".join(" ".join(texts).split())
    return text[:chars] + ("…" if len(text) > chars else "")


def top_calls(
    runner: QueryRunner,
    start: datetime,
    end: datetime,
    by: str,
    limit: int,
    *,
    model: str | None = None,
    service: str | None = None,
) -> list[dict[str, Any]]:
    """The `limit` calls in [start, end) ranked by `by` (see `TOP_CALLS`)."""
    order = TOP_CALLS.get(by)
    if order is None:
        raise BadParameterError(f"by: unknown ranking {by!r}; use one of {', '.join(TOP_CALLS)}")
    params: list[Any] = [start, end]
    where = _filters(model, service, params)
    params.append(limit)
    return fetch(
        runner,
        f"SELECT {_CALL_COLUMNS} FROM llm_calls "
        f"WHERE start_time >= ? AND start_time < ?{where} "
        f"ORDER BY {order}, trace_id, span_id LIMIT ?",
        params,
    )


def input_size_distribution(
    runner: QueryRunner,
    start: datetime,
    end: datetime,
    *,
    model: str | None = None,
    service: str | None = None,
) -> dict[str, Any]:
    """Calls per input-token bucket, with latency and time-to-first-token percentiles."""
    params: list[Any] = [list(INPUT_SIZE_EDGES), start, end]
    where = _filters(model, service, params)
    # the bucket of each call by a CASE over the edges (a range join of every call against
    # every bucket costs more); empty buckets come back from the join with the edges
    bucket_of = (
        "CASE "
        + " ".join(
            f"WHEN input_tokens < {hi} THEN {i}" for i, hi in enumerate(INPUT_SIZE_EDGES[1:])
        )
        + f" ELSE {len(INPUT_SIZE_EDGES) - 1} END"
    )
    rows = fetch(
        runner,
        f"""
WITH edges AS (SELECT unnest(?::BIGINT[]) AS lo),
bounds AS (
    SELECT lo, lead(lo) OVER (ORDER BY lo) AS hi, row_number() OVER (ORDER BY lo) - 1 AS i
    FROM edges
),
per_bucket AS (
    SELECT {bucket_of} AS i,
           count(*) AS calls,
           count(*) FILTER (WHERE status = 'error') AS errors,
           quantile_cont(duration_s, {_QLIST}) AS latency,
           quantile_cont(ttft_s, {_QLIST}) AS ttft,
           avg(output_tokens) AS mean_output_tokens,
           sum(cost_usd) AS cost_usd
    FROM llm_calls
    WHERE start_time >= ? AND start_time < ? AND input_tokens >= {INPUT_SIZE_EDGES[0]}{where}
    GROUP BY 1
)
SELECT b.lo, b.hi, coalesce(c.calls, 0) AS calls, coalesce(c.errors, 0) AS errors,
       c.latency, c.ttft, c.mean_output_tokens, c.cost_usd
FROM bounds b
LEFT JOIN per_bucket c ON c.i = b.i
ORDER BY b.lo
""",
        params,
    )
    unknown_params: list[Any] = [start, end]
    unknown_where = _filters(model, service, unknown_params)
    unknown = fetch(
        runner,
        "SELECT count(*) AS n FROM llm_calls WHERE start_time >= ? AND start_time < ? "
        f"AND input_tokens IS NULL{unknown_where}",
        unknown_params,
    )
    return {
        "buckets": [
            {
                "input_tokens_min": int(r["lo"]),
                "input_tokens_max": None if r["hi"] is None else int(r["hi"]) - 1,
                "calls": int(r["calls"]),
                "errors": int(r["errors"]),
                "latency_s": _q(r["latency"]),
                "ttft_s": _q(r["ttft"]),
                "mean_output_tokens": r["mean_output_tokens"],
                "cost_usd": r["cost_usd"],
            }
            for r in rows
        ],
        "calls_without_input_tokens": int(unknown[0]["n"]) if unknown else 0,
    }


#: server-span attributes that split the server's time (vLLM's request tracing names)
SERVER_PHASES: Final = (
    ("queue_s", "gen_ai.latency.time_in_queue"),
    ("scheduler_s", "gen_ai.latency.time_in_scheduler"),
    ("prefill_s", "gen_ai.latency.time_in_model_prefill"),
    ("decode_s", "gen_ai.latency.time_in_model_decode"),
    ("inference_s", "gen_ai.latency.time_in_model_inference"),
    ("server_ttft_s", "gen_ai.latency.time_to_first_token"),
)


# The failed attempts folded into a call (stored by the collector's pairing pass, keyed by the
# call's span or, for a call paired later, by its capture), oldest first. Attempts the node
# agent folded were never exported: the row's `attempts` counts them, this list cannot.
_RETRIED_ATTEMPTS = """
SELECT s.trace_id, s.span_id, s.start_time, s.duration_s,
       TRY_CAST(s.attributes ->> '$."http.response.status_code"' AS BIGINT) AS http_status_code,
       s.error_type, p.method
FROM span_pairs p
JOIN spans s ON s.trace_id = p.capture_trace_id AND s.span_id = p.capture_span_id
WHERE p.method IN ('retry_trace', 'retry_digest')
  AND ((p.sdk_trace_id = ? AND p.sdk_span_id = ?) OR (p.sdk_trace_id = ? AND p.sdk_span_id = ?))
QUALIFY row_number() OVER (PARTITION BY s.trace_id, s.span_id ORDER BY s.received_time) = 1
ORDER BY s.start_unix_ns, s.span_id
"""


def call_detail(runner: QueryRunner, trace_id: str, span_id: str) -> dict[str, Any]:
    """Everything stored about one call (see the module docstring); `NotFoundError` if absent."""
    trace_id = check_trace_id(trace_id)
    span_id = check_trace_id(span_id, "span_id", 16)
    calls = fetch(
        runner,
        "SELECT * EXCLUDE (received_time) FROM llm_calls WHERE trace_id = ? AND span_id = ?",
        [trace_id, span_id],
    )
    if not calls:
        raise NotFoundError(f"no LLM call with trace_id {trace_id} and span_id {span_id}")
    call = calls[0]
    phase_cols = ", ".join(
        f"TRY_CAST(attributes ->> '$.\"{attr}\"' AS DOUBLE) AS {name}"
        for name, attr in SERVER_PHASES
    )
    spans = fetch(
        runner,
        "SELECT span_id, parent_span_id, service_name, name, kind, start_time, end_time, "
        "start_unix_ns, end_unix_ns, duration_s, status_code, status_message, source, "
        "gen_ai_operation_name, gen_ai_request_model, gen_ai_response_model, "
        "gen_ai_usage_input_tokens, gen_ai_usage_output_tokens, "
        "gen_ai_response_time_to_first_chunk, k8s_namespace, k8s_pod, k8s_node, "
        "infersight_gpu_seconds AS gpu_seconds, infersight_gpu_energy_j AS gpu_energy_j, "
        f"{phase_cols} "
        "FROM spans WHERE trace_id = ? ORDER BY start_unix_ns NULLS LAST, start_time, span_id",
        [trace_id],
    )
    me = next((s for s in spans if s["span_id"] == span_id), None)
    server = _server_span(spans, span_id)
    timings: dict[str, Any] = {
        "client_s": call["duration_s"],
        "ttft_s": call["ttft_s"],
        "tpot_s": call["tpot_s"],
        "server_s": None,
        "network_s": None,
        "request_leg_s": None,
        "response_leg_s": None,
        "queue_s": None,
        "server_span_id": None,
        "server_phases": {},
    }
    gpu_seconds = call["gpu_seconds"]
    gpu_energy_j = call["gpu_energy_j"]
    if server is not None and me is not None:
        timings["server_span_id"] = server["span_id"]
        timings["server_s"] = server["duration_s"]
        if call["duration_s"] is not None and server["duration_s"] is not None:
            # skew-free: both durations come from one clock each
            timings["network_s"] = call["duration_s"] - server["duration_s"]
        if None not in (me["start_unix_ns"], server["start_unix_ns"]):
            timings["request_leg_s"] = (server["start_unix_ns"] - me["start_unix_ns"]) / 1e9
        if None not in (me["end_unix_ns"], server["end_unix_ns"]):
            timings["response_leg_s"] = (me["end_unix_ns"] - server["end_unix_ns"]) / 1e9
        timings["server_phases"] = {
            name: server[name] for name, _ in SERVER_PHASES if server[name] is not None
        }
        timings["queue_s"] = server["queue_s"]
        if gpu_seconds is None:
            gpu_seconds = server["gpu_seconds"]
        if gpu_energy_j is None:
            gpu_energy_j = server["gpu_energy_j"]
    content = _content_for(runner, [(trace_id, span_id)]).get((trace_id, span_id))
    retried = fetch(
        runner,
        _RETRIED_ATTEMPTS,
        [
            trace_id,
            span_id,
            call["capture_trace_id"] or trace_id,
            call["capture_span_id"] or span_id,
        ],
    )
    trace = [
        {k: v for k, v in s.items() if k not in {name for name, _ in SERVER_PHASES}} for s in spans
    ]
    return {
        "call": call,
        "tokens": {
            "input": call["input_tokens"],
            "output": call["output_tokens"],
            "cache_read_input": call["cache_read_input_tokens"],
            "cache_creation_input": call["cache_creation_input_tokens"],
        },
        "cost": {"usd": call["cost_usd"], "basis": call["cost_basis"]},
        "gpu": {"seconds": gpu_seconds, "energy_j": gpu_energy_j},
        "timings": timings,
        "content": content,
        "trace": trace,
        "retried_attempts": retried,
    }


def _server_span(spans: list[dict[str, Any]], client_span_id: str) -> dict[str, Any] | None:
    """The server side of a call: a server span whose parent is the call, else the only GenAI
    server span of the trace."""
    servers = [s for s in spans if s["kind"] == "server"]
    for s in servers:
        if s["parent_span_id"] == client_span_id:
            return s
    genai = [s for s in servers if s["gen_ai_operation_name"] is not None]
    return genai[0] if len(genai) == 1 else None
