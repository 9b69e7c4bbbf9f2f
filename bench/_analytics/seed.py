"""A store of synthetic LLM calls for the analytics benchmark, generated in DuckDB SQL.

Takes a call count and a folder; gives the path of a migrated, priced, checkpointed DuckDB file
holding that many client-side calls spread over `SPAN_DAYS` days up to the moment of seeding,
plus a server-side span (with GPU time) for `SERVER_FRACTION` of them. The file is cached by
size (`analytics-store-<n>.duckdb`), so later runs reuse it; its time range is read back from
the data, never assumed. Values come from `hash()` of the row number, so every run of one size
generates the same calls, only shifted in time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from collector.analytics.cost import load_prices
from store.call_rows import CallRows
from store.database import Database, DatabaseTuning

SPAN_DAYS = 7
SERVER_FRACTION = 0.05
TEMPLATES = 3000

#: model, provider, latency scale (s), share of calls (per mille, cumulative below)
MODELS: tuple[tuple[str, str, float, int], ...] = (
    ("gpt-4o-2024-08-06", "openai", 2.0, 300),
    ("gpt-4o-mini", "openai", 1.0, 200),
    ("claude-3-5-sonnet-20241022", "anthropic", 3.0, 150),
    ("claude-3-5-haiku-20241022", "anthropic", 1.2, 80),
    ("meta-llama/Llama-3.1-8B-Instruct", "vllm", 0.8, 120),
    ("meta-llama/Llama-3.1-70B-Instruct", "vllm", 2.5, 50),
    ("gemini-1.5-pro", "gcp.gemini", 2.2, 40),
    ("text-embedding-3-small", "openai", 0.1, 60),
)
SERVICES = 12
PODS_PER_SERVICE = 5
NAMESPACES = ("prod", "staging", "batch", "research", "support")
ERROR_TYPES = ("timeout", "rate_limited", "500", "503", "context_length_exceeded")


def store_path(folder: Path, calls: int) -> Path:
    return folder / f"analytics-store-{calls}.duckdb"


def _u(i: str, stream: int) -> str:
    """A uniform [0, 1) value of row `i` in its own stream."""
    return f"((hash({i}, {stream}) % 1000000007) / 1000000007.0)"


def _models_sql() -> str:
    rows = []
    low = 0
    for k, (model, provider, scale, share) in enumerate(MODELS):
        rows.append(f"({k}, '{model}', '{provider}', {scale}, {low}, {low + share})")
        low += share
    assert low == 1000, "model shares must add up to 1000"
    return "VALUES " + ", ".join(rows)


def _calls_sql(calls: int, end_unix_us: int) -> str:
    span_us = SPAN_DAYS * 86400 * 1_000_000
    start_us = end_unix_us - span_us
    errors = ", ".join(f"'{e}'" for e in ERROR_TYPES)
    namespaces = ", ".join(f"'{n}'" for n in NAMESPACES)
    return f"""
WITH models(k, model, provider, scale, lo, hi) AS ({_models_sql()}),
r AS (
    SELECT range AS i,
           {start_us} + CAST(range * ({span_us} / {calls}.0) AS BIGINT)
               + CAST({_u("range", 1)} * ({span_us} / {calls}.0) AS BIGINT) AS s_us,
           CAST(floor({_u("range", 2)} * 1000) AS INTEGER) AS model_pick,
           -- a skewed choice of template: a few thousand, the first ones far more common
           CAST(floor(pow({_u("range", 3)}, 3) * {TEMPLATES}) AS INTEGER) AS tpl,
           CAST(floor({_u("range", 4)} * {SERVICES}) AS INTEGER) AS svc,
           CAST(floor({_u("range", 5)} * {PODS_PER_SERVICE}) AS INTEGER) AS pod,
           {_u("range", 6)} AS u_dur,
           {_u("range", 7)} AS u_ttft,
           {_u("range", 8)} AS u_in,
           {_u("range", 9)} AS u_out,
           {_u("range", 10)} AS u_err,
           {_u("range", 11)} AS u_stream
    FROM range({calls})
),
c AS (
    SELECT r.*, m.model, m.provider, m.scale,
           m.model LIKE 'text-embedding%' AS is_embed,
           -- exponential latency around the model's scale, never below 50 ms
           0.05 + m.scale * -ln(1.0 - u_dur) AS dur_s,
           u_err < 0.02 AS failed
    FROM r JOIN models m ON r.model_pick >= m.lo AND r.model_pick < m.hi
)
SELECT
    md5(CAST(i AS VARCHAR)) AS trace_id,
    substr(md5(CAST(i AS VARCHAR) || 's'), 1, 16) AS span_id,
    substr(md5(CAST(i AS VARCHAR) || 'p'), 1, 16) AS parent_span_id,
    'svc-' || svc AS service_name,
    CASE WHEN is_embed THEN 'embeddings ' ELSE 'chat ' END || model AS name,
    'client' AS kind,
    make_timestamptz(s_us) AS start_time,
    make_timestamptz(s_us + CAST(dur_s * 1e6 AS BIGINT)) AS end_time,
    s_us * 1000 AS start_unix_ns,
    (s_us + CAST(dur_s * 1e6 AS BIGINT)) * 1000 AS end_unix_ns,
    dur_s AS duration_s,
    CASE WHEN failed THEN 'error' ELSE 'unset' END AS status_code,
    'opentelemetry.instrumentation.openai' AS scope_name,
    [{namespaces}][1 + svc % {len(NAMESPACES)}] AS k8s_namespace,
    'svc-' || svc || '-' || pod AS k8s_pod,
    'node-' || (svc * {PODS_PER_SERVICE} + pod) % 8 AS k8s_node,
    'sdk' AS source,
    CASE WHEN is_embed THEN 'embeddings' ELSE 'chat' END AS gen_ai_operation_name,
    provider AS gen_ai_provider_name,
    model AS gen_ai_request_model,
    model AS gen_ai_response_model,
    -- input sizes spread over every bucket (10 .. ~60k tokens, log-uniform)
    CAST(floor(10 * exp(u_in * ln(6000))) AS BIGINT) AS gen_ai_usage_input_tokens,
    CASE WHEN is_embed THEN NULL ELSE CAST(1 + u_out * 900 AS BIGINT) END
        AS gen_ai_usage_output_tokens,
    NOT is_embed AND u_stream < 0.4 AS gen_ai_request_stream,
    CASE WHEN NOT is_embed AND u_stream < 0.4 THEN dur_s * (0.05 + 0.3 * u_ttft) END
        AS gen_ai_response_time_to_first_chunk,
    CASE WHEN failed THEN [{errors}][1 + CAST(floor(u_ttft * {len(ERROR_TYPES)}) AS INTEGER)] END
        AS error_type,
    substr(md5('template-' || tpl), 1, 16) AS prompt_fingerprint,
    make_timestamptz(s_us + CAST(dur_s * 1e6 AS BIGINT) + 1000000) AS received_time
FROM c
ORDER BY s_us
"""


def _server_sql(fraction: float) -> str:
    """Server sides of self-hosted calls, `fraction` of all calls: child spans with GPU time."""
    vllm_share = sum(share for _, provider, _, share in MODELS if provider == "vllm") / 1000
    per_mille = min(1000, round(fraction / vllm_share * 1000))
    return f"""
SELECT trace_id,
       substr(md5(span_id || 'srv'), 1, 16) AS span_id,
       span_id AS parent_span_id,
       'vllm-engine' AS service_name,
       name,
       'server' AS kind,
       start_time + INTERVAL 2 MILLISECOND AS start_time,
       end_time - INTERVAL 2 MILLISECOND AS end_time,
       start_unix_ns + 2000000 AS start_unix_ns,
       end_unix_ns - 2000000 AS end_unix_ns,
       greatest(duration_s - 0.004, 0.0) AS duration_s,
       status_code,
       '{{"infersight.gpu.name": "NVIDIA H100 80GB HBM3"}}' AS attributes,
       k8s_namespace,
       'vllm-0' AS k8s_pod,
       k8s_node,
       'sdk' AS source,
       gen_ai_operation_name,
       gen_ai_provider_name,
       gen_ai_request_model,
       gen_ai_response_model,
       gen_ai_usage_input_tokens,
       gen_ai_usage_output_tokens,
       duration_s * 0.9 AS infersight_gpu_seconds,
       duration_s * 0.9 * 450.0 AS infersight_gpu_energy_j,
       received_time
FROM spans
WHERE kind = 'client' AND gen_ai_provider_name = 'vllm'
  AND (hash(span_id) % 1000) < {per_mille}
"""


def seed_store(
    folder: Path, calls: int, *, threads: int | None = None, log: bool = True
) -> tuple[Path, bool]:
    """The cached store of `calls` calls (made now if absent); the flag says it was made."""
    path = store_path(folder, calls)
    if path.exists():
        return path, False
    tmp = path.with_suffix(".seeding.duckdb")
    for stale in (tmp, Path(str(tmp) + ".wal")):
        stale.unlink(missing_ok=True)
    started = time.monotonic()
    db = Database(tmp, DatabaseTuning(threads=threads))
    try:
        load_prices(db)
        end_us = int(datetime.now(UTC).timestamp() * 1_000_000)
        con = db.connection
        con.execute("SET enable_progress_bar = false")
        con.execute(f"INSERT INTO spans BY NAME {_calls_sql(calls, end_us)}")
        if log:
            print(f"  seeded {calls:,} client spans in {time.monotonic() - started:.1f} s")
        con.execute(f"INSERT INTO spans BY NAME {_server_sql(SERVER_FRACTION)}")
        rows = CallRows().rebuild(con)  # what the collector's call-table stage keeps up to date
        if log:
            print(f"  derived {rows:,} llm_calls rows in {time.monotonic() - started:.1f} s")
        db.checkpoint()
    finally:
        db.close()
    tmp.rename(path)
    if log:
        size_mb = path.stat().st_size / 1e6
        print(f"  store ready: {path} ({size_mb:,.0f} MB, {time.monotonic() - started:.1f} s)")
    return path, True
