-- infersight store, schema version 6: retried attempts folded into their call.
--
-- A client that retries a failed request (a 429 or a 5xx, then the same request again) makes
-- one logical call out of several wire exchanges. The pairing pass (agent/pair/rules.py,
-- collector/pairing/stage.py) records each failed attempt it folds in span_pairs, with method
-- 'retry_trace' (same SDK span on the wire) or 'retry_digest' (same process, same request
-- digest, sent again within the retry gap); the capture side is the attempt, the SDK side the
-- span that stands for the call. Such an attempt is no row of llm_calls; the call's row counts
-- its wire exchanges in the new column `attempts`.
-- Earlier rows are not re-derived: before this version no attempt was folded, so a row with a
-- wire side had exactly one exchange.

ALTER TABLE call_rows ADD COLUMN IF NOT EXISTS attempts INTEGER;
UPDATE call_rows SET attempts = 1 WHERE source IN ('ebpf', 'both');

-- As in version 5, except: retry links are not pairs, their attempts are hidden, and
-- `attempts` is the last column.
CREATE OR REPLACE MACRO call_rows_derive(since_ts) AS TABLE
WITH recent AS (
    -- the spans of the traces being refreshed, received since since_ts
    SELECT *
    FROM spans
    WHERE (since_ts = '-infinity'::TIMESTAMPTZ OR received_time >= since_ts)
      AND trace_id IN (SELECT trace_id FROM call_refresh_traces)
),
recent_pairs AS (
    -- a pair is always recorded after both of its spans were received
    SELECT *
    FROM span_pairs
    WHERE (since_ts = '-infinity'::TIMESTAMPTZ OR paired_time >= since_ts)
      AND (sdk_trace_id IN (SELECT trace_id FROM call_refresh_traces)
           OR capture_trace_id IN (SELECT trace_id FROM call_refresh_traces))
),
genai AS (
    -- every GenAI span once, however often its export was re-sent
    SELECT *
    FROM recent
    WHERE gen_ai_operation_name IN ('chat', 'text_completion', 'generate_content', 'embeddings')
    QUALIFY row_number() OVER (PARTITION BY trace_id, span_id ORDER BY received_time) = 1
),
pairs AS (
    -- a call's capture (the failed attempts the client retried are not: see retries)
    SELECT *
    FROM recent_pairs
    WHERE method NOT IN ('retry_trace', 'retry_digest')
    QUALIFY row_number() OVER (PARTITION BY sdk_trace_id, sdk_span_id
                               ORDER BY paired_time, capture_span_id) = 1
),
hidden AS (
    -- captures that are part of another row: paired ones and folded retry attempts
    SELECT DISTINCT capture_trace_id AS trace_id, capture_span_id AS span_id FROM recent_pairs
),
retries AS (
    -- failed attempts folded into a call, by the span that stands for the call (an SDK span,
    -- or a capture: the one that was later paired, or the last attempt of an unpaired call)
    SELECT sdk_trace_id AS trace_id, sdk_span_id AS span_id,
           count(DISTINCT (capture_trace_id, capture_span_id)) AS attempts
    FROM recent_pairs
    WHERE method IN ('retry_trace', 'retry_digest')
    GROUP BY ALL
),
calls AS (
    -- the client side of every call: SDK spans (with their capture when paired) and captures
    -- that no SDK span claimed; w_* are the wire side (the capture, or the row itself when it
    -- is an unpaired capture, or an SDK span the node agent already merged with its capture:
    -- source 'both', the wire fields among its attributes)
    SELECT
        s.*,
        coalesce(p.method, CASE WHEN s.source = 'both'
                               THEN s.attributes ->> '$."infersight.pair.method"' END)
                                                                 AS pair_method,
        coalesce(p.confidence, CASE WHEN s.source = 'both'
                                   THEN TRY_CAST(s.attributes ->> '$."infersight.pair.confidence"'
                                                 AS DOUBLE) END) AS pair_confidence,
        c.trace_id                                               AS capture_trace_id,
        c.span_id                                                AS capture_span_id,
        c.parent_span_id                                         AS capture_parent_span_id,
        c.gen_ai_usage_input_tokens                              AS c_input_tokens,
        c.gen_ai_usage_output_tokens                             AS c_output_tokens,
        c.gen_ai_request_model                                   AS c_request_model,
        c.gen_ai_response_model                                  AS c_response_model,
        c.infersight_gpu_seconds                                 AS c_gpu_seconds,
        c.infersight_gpu_energy_j                                AS c_gpu_energy_j,
        CASE WHEN p.sdk_span_id IS NOT NULL THEN c.attributes
             WHEN s.source IN ('ebpf', 'both') THEN s.attributes END AS w_attributes,
        CASE WHEN p.sdk_span_id IS NOT NULL THEN c.duration_s
             WHEN s.source = 'ebpf' THEN s.duration_s
             WHEN s.source = 'both'
             THEN TRY_CAST(s.attributes ->> '$."infersight.wire.duration_s"' AS DOUBLE)
        END                                                      AS w_duration_s,
        CASE WHEN p.sdk_span_id IS NOT NULL THEN c.gen_ai_response_time_to_first_chunk
             WHEN s.source = 'ebpf' THEN s.gen_ai_response_time_to_first_chunk
             WHEN s.source = 'both'
             THEN TRY_CAST(s.attributes ->> '$."infersight.wire.time_to_first_chunk_s"'
                           AS DOUBLE)
        END                                                      AS w_ttfc_s
    FROM genai s
    LEFT JOIN pairs p ON p.sdk_trace_id = s.trace_id AND p.sdk_span_id = s.span_id
    LEFT JOIN genai c ON c.trace_id = p.capture_trace_id AND c.span_id = p.capture_span_id
    WHERE s.kind IS DISTINCT FROM 'server'
      AND NOT EXISTS (SELECT 1 FROM hidden h WHERE h.trace_id = s.trace_id
                                                 AND h.span_id = s.span_id)
),
server_spans AS (
    -- server sides of calls (GenAI server spans, or any server span the agent gave GPU time)
    SELECT trace_id, span_id, parent_span_id, duration_s,
           infersight_gpu_seconds, infersight_gpu_energy_j,
           lower(coalesce(attributes ->> '$."infersight.gpu.name"',
                          attributes ->> '$."hw.name"')) AS gpu_name
    FROM recent
    WHERE kind = 'server'
      AND (gen_ai_operation_name IS NOT NULL
           OR infersight_gpu_seconds IS NOT NULL OR infersight_gpu_energy_j IS NOT NULL)
    QUALIFY row_number() OVER (PARTITION BY trace_id, span_id ORDER BY received_time) = 1
),
server_parents AS (
    -- the parents of server sides, to reach the SDK span through an HTTP client span
    SELECT DISTINCT p.trace_id, p.span_id, p.parent_span_id
    FROM recent p
    WHERE EXISTS (SELECT 1 FROM server_spans v WHERE v.trace_id = p.trace_id
                                                  AND v.parent_span_id = p.span_id)
),
server_side AS (
    SELECT c.trace_id,
           c.span_id,
           max(v.duration_s)                AS server_duration_s,
           sum(v.infersight_gpu_seconds)    AS gpu_seconds,
           sum(v.infersight_gpu_energy_j)   AS gpu_energy_j,
           any_value(v.gpu_name)            AS gpu_name
    FROM calls c
    JOIN server_spans v ON v.trace_id = c.trace_id
    LEFT JOIN server_parents sp ON sp.trace_id = v.trace_id AND sp.span_id = v.parent_span_id
    WHERE v.parent_span_id = c.span_id
       OR v.parent_span_id = c.capture_span_id
       OR v.parent_span_id = c.capture_parent_span_id
       OR (c.source = 'ebpf' AND v.parent_span_id = c.parent_span_id)
       OR sp.parent_span_id = c.span_id
    GROUP BY c.trace_id, c.span_id
),
base AS (
    SELECT
        s.trace_id,
        s.span_id,
        s.start_time,
        s.service_name,
        s.k8s_namespace,
        s.k8s_pod,
        s.gen_ai_provider_name                                   AS provider,
        s.gen_ai_operation_name                                  AS operation,
        coalesce(s.gen_ai_response_model, s.c_response_model, s.gen_ai_request_model,
                 s.c_request_model)                              AS model,
        coalesce(s.gen_ai_usage_input_tokens, s.c_input_tokens)  AS input_tokens,
        coalesce(s.gen_ai_usage_output_tokens, s.c_output_tokens) AS output_tokens,
        s.duration_s,
        coalesce(s.gen_ai_response_time_to_first_chunk, s.w_ttfc_s) AS ttft_s,
        CASE WHEN coalesce(s.gen_ai_response_time_to_first_chunk, s.w_ttfc_s) IS NOT NULL
                  AND coalesce(s.gen_ai_usage_output_tokens, s.c_output_tokens) > 1
             THEN (s.duration_s - coalesce(s.gen_ai_response_time_to_first_chunk, s.w_ttfc_s))
                  / (coalesce(s.gen_ai_usage_output_tokens, s.c_output_tokens) - 1)
        END                                                      AS tpot_s,
        CASE WHEN s.status_code = 'error' OR s.error_type IS NOT NULL
             THEN 'error' ELSE 'ok' END                          AS status,
        s.error_type,
        CASE WHEN s.pair_method IS NOT NULL THEN 'both'
             ELSE coalesce(s.source, 'sdk') END                  AS source,
        -- GPU time and energy: the call's own, else what its server side was attributed
        coalesce(s.infersight_gpu_seconds, s.c_gpu_seconds, sv.gpu_seconds) AS gpu_seconds,
        coalesce(s.infersight_gpu_energy_j, s.c_gpu_energy_j, sv.gpu_energy_j) AS gpu_energy_j,
        s.prompt_fingerprint,
        s.end_time,
        s.k8s_node,
        coalesce(s.gen_ai_request_model, s.c_request_model)      AS request_model,
        s.gen_ai_usage_cache_read_input_tokens                   AS cache_read_input_tokens,
        s.gen_ai_usage_cache_creation_input_tokens               AS cache_creation_input_tokens,
        s.server_address,
        s.received_time,
        CASE WHEN s.infersight_gpu_seconds IS NOT NULL OR s.infersight_gpu_energy_j IS NOT NULL
             THEN lower(coalesce(s.attributes ->> '$."infersight.gpu.name"',
                                 s.attributes ->> '$."hw.name"'))
             ELSE sv.gpu_name END                                AS gpu_name,
        lower(coalesce(s.gen_ai_response_model, s.c_response_model, s.gen_ai_request_model,
                       s.c_request_model))                       AS price_key,
        -- the same model without a routing prefix (openai/, models/) or a release suffix
        -- (-2024-08-06, -20240620, -latest), so that dated releases find the family's price
        regexp_replace(
            regexp_replace(lower(coalesce(s.gen_ai_response_model, s.c_response_model,
                                          s.gen_ai_request_model, s.c_request_model)),
                           '^([a-z0-9_.-]+/)+', ''),
            '(-\d{4}-\d{2}-\d{2}|-\d{8}|-latest)$', '')          AS price_base_key,
        -- wire side (new in version 4)
        coalesce(s.w_ttfc_s,
                 TRY_CAST(s.w_attributes ->> '$."infersight.wire.time_to_first_byte_s"'
                          AS DOUBLE))                            AS wire_ttft_s,
        s.w_duration_s                                           AS wire_duration_s,
        TRY_CAST(coalesce(s.w_attributes ->> '$."http.response.status_code"',
                          s.attributes ->> '$."http.response.status_code"')
                 AS BIGINT)                                      AS http_status_code,
        TRY_CAST(s.w_attributes ->> '$."infersight.wire.request_body_bytes"'
                 AS BIGINT)                                      AS wire_request_bytes,
        TRY_CAST(s.w_attributes ->> '$."infersight.wire.response_body_bytes"'
                 AS BIGINT)                                      AS wire_response_bytes,
        sv.server_duration_s,
        s.pair_method,
        s.pair_confidence,
        s.capture_trace_id,
        s.capture_span_id,
        -- wire exchanges of the call: its own (merged on the node with the attempts it folded
        -- there, else one) plus the retried attempts folded here; NULL when none was captured
        CASE WHEN s.pair_method IS NOT NULL OR s.source IN ('ebpf', 'both') THEN
            coalesce(TRY_CAST(s.w_attributes ->> '$."infersight.wire.attempts"' AS INTEGER), 1)
            + coalesce(r1.attempts, 0) + coalesce(r2.attempts, 0)
        END                                                      AS attempts
    FROM calls s
    LEFT JOIN server_side sv ON sv.trace_id = s.trace_id AND sv.span_id = s.span_id
    LEFT JOIN retries r1 ON r1.trace_id = s.trace_id AND r1.span_id = s.span_id
    LEFT JOIN retries r2 ON r2.trace_id = s.capture_trace_id AND r2.span_id = s.capture_span_id
)
SELECT * FROM base;

-- One row per logical LLM call, priced: the columns of version 5 in their order, then
-- attempts.
CREATE OR REPLACE VIEW llm_calls AS
SELECT
    trace_id,
    span_id,
    start_time,
    service_name,
    k8s_namespace,
    k8s_pod,
    provider,
    operation,
    model,
    input_tokens,
    output_tokens,
    duration_s,
    ttft_s,
    tpot_s,
    status,
    error_type,
    source,
    gpu_seconds,
    gpu_energy_j,
    cost_usd,
    prompt_fingerprint,
    end_time,
    k8s_node,
    request_model,
    cache_read_input_tokens,
    cache_creation_input_tokens,
    server_address,
    received_time,
    cost_basis,
    wire_ttft_s,
    wire_duration_s,
    http_status_code,
    wire_request_bytes,
    wire_response_bytes,
    server_duration_s,
    pair_method,
    pair_confidence,
    capture_trace_id,
    capture_span_id,
    attempts
FROM call_rows;
