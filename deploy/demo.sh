#!/usr/bin/env bash
# `make demo`: start a collector on the embedded DuckDB store, send it a real GenAI workload,
# show what landed, then keep the collector running until Ctrl-C.
set -euo pipefail
DB="${1:-./infersight.duckdb}"
BIN=.venv/bin
API=http://127.0.0.1:7070
"$BIN/infersight" collector --db "$DB" --host 127.0.0.1 &
COLLECTOR=$!
trap 'kill -TERM $COLLECTOR 2>/dev/null; wait $COLLECTOR' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fsS "$API/readyz" >/dev/null 2>&1 && break
  kill -0 $COLLECTOR 2>/dev/null || { echo "collector failed to start" >&2; exit 1; }
  sleep 0.2
done
"$BIN/infersight" demo --collector http://127.0.0.1:4318 --calls 60
sleep 1
"$BIN/infersight" sql "SELECT model, count(*) AS calls, sum(input_tokens) AS input_tokens,
  sum(output_tokens) AS output_tokens, round(quantile_cont(duration_s, 0.95), 3) AS p95_s,
  round(avg(ttft_s), 4) AS avg_ttft_s, count(*) FILTER (WHERE status = 'error') AS errors
  FROM llm_calls GROUP BY model ORDER BY model"
echo
echo "Collector running: OTLP on :4317/:4318, SQL at $API/api/v1/sql, metrics at $API/metrics."
echo "Try: $BIN/infersight sql 'SELECT * FROM llm_calls LIMIT 5'   (Ctrl-C stops the collector)"
wait $COLLECTOR
