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
# The node agent needs root and bcc (`make ebpf-setup`); without them the demo runs without it.
if [ "$(id -u)" -eq 0 ] && "$BIN/python" -c "import bcc" >/dev/null 2>&1; then
  "$BIN/infersight" agent --collector http://127.0.0.1:4318 --no-gpu --metrics-port 9464 \
    --log-level warning &
  AGENT=$!
  trap 'kill -TERM $AGENT 2>/dev/null; wait $AGENT; kill -TERM $COLLECTOR 2>/dev/null; wait $COLLECTOR' EXIT INT TERM
  for _ in $(seq 1 150); do
    curl -fsS http://127.0.0.1:9464/metrics 2>/dev/null | grep -q '^infersight_agent_capture_up 1' && break
    sleep 0.2
  done
  echo "agent capturing LLM traffic on this node (eBPF)"
else
  echo "agent not started: it needs root and bcc (run 'make ebpf-setup' as root)"
fi
"$BIN/infersight" demo --collector http://127.0.0.1:4318 --calls 60
sleep 1
"$BIN/infersight" sql "SELECT model, count(*) AS calls, sum(input_tokens) AS input_tokens,
  sum(output_tokens) AS output_tokens, round(quantile_cont(duration_s, 0.95), 3) AS p95_s,
  round(avg(ttft_s), 4) AS avg_ttft_s, count(*) FILTER (WHERE status = 'error') AS errors
  FROM llm_calls GROUP BY model ORDER BY model"
"$BIN/infersight" sql "SELECT source, kind, count(*) AS spans FROM spans
  WHERE gen_ai_operation_name IS NOT NULL GROUP BY ALL ORDER BY ALL"
echo
echo "Collector running: OTLP on :4317/:4318, SQL at $API/api/v1/sql, metrics at $API/metrics."
echo "Try: $BIN/infersight sql 'SELECT * FROM llm_calls LIMIT 5'   (Ctrl-C stops the collector)"
wait $COLLECTOR
