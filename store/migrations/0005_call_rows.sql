-- infersight store, schema version 5: llm_calls served from a maintained table.
--
-- Up to version 4, llm_calls derived every call from `spans` at query time: deduplicating
-- re-sent spans, applying pairs and joining server sides over the whole table on every query,
-- which no filter on start_time could narrow. From version 5 the derivation runs incrementally:
-- the collector's call-table stage (collector/call_table.py, store/call_rows.py) finds the
-- traces that gained spans or pairs since its last pass and re-derives only those into
-- `call_rows`, one row per logical call, in one transaction; llm_calls is `call_rows` with the
-- cost columns computed from the price tables at query time (prices stay live).
-- The columns of llm_calls keep their names and order.

-- spans of a pair, so that the stage knows how far back a new pair reaches
ALTER TABLE span_pairs ADD COLUMN IF NOT EXISTS sdk_received_time TIMESTAMPTZ;
ALTER TABLE span_pairs ADD COLUMN IF NOT EXISTS capture_received_time TIMESTAMPTZ;

-- the traces one refresh pass re-derives (filled and emptied inside the pass's transaction)
CREATE TABLE IF NOT EXISTS call_refresh_traces (trace_id VARCHAR NOT NULL);

-- what the stage has folded into call_rows (one row, id 1)
CREATE TABLE IF NOT EXISTS call_rows_state (
    id                 INTEGER PRIMARY KEY,
    spans_watermark    TIMESTAMPTZ,   -- newest spans.received_time seen by a pass
    pairs_watermark    TIMESTAMPTZ,   -- newest span_pairs.paired_time seen by a pass
    prices_digest      VARCHAR        -- the prices call_rows.cost_usd was computed with
);

DROP VIEW IF EXISTS llm_calls;

-- Every call of the traces in call_refresh_traces whose spans were received since since_ts,
-- as in llm_calls of version 4 before pricing: SDK spans (with their capture when paired),
-- captures no SDK span claimed, each joined to its server side.
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
    SELECT *
    FROM recent_pairs
    QUALIFY row_number() OVER (PARTITION BY sdk_trace_id, sdk_span_id
                               ORDER BY paired_time, capture_span_id) = 1
),
hidden AS (
    SELECT DISTINCT capture_trace_id AS trace_id, capture_span_id AS span_id FROM recent_pairs
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
        s.capture_span_id
    FROM calls s
    LEFT JOIN server_side sv ON sv.trace_id = s.trace_id AND sv.span_id = s.span_id
)
SELECT * FROM base;

CREATE TABLE IF NOT EXISTS call_rows AS
    SELECT *, NULL::DOUBLE AS cost_usd, NULL::VARCHAR AS cost_basis
    FROM call_rows_derive('-infinity'::TIMESTAMPTZ) WITH NO DATA;

-- The price of calls in call_rows: every call (all_rows), or those of the traces being
-- refreshed received since since_ts. Hosted models by tokens from model_prices (the model as
-- reported, for its provider or any; else without routing prefix and release suffix);
-- self-hosted ones by GPU time or energy as cost_settings says. Stored with each call when it
-- is derived, and for every call again when the prices change (collector.analytics.cost).
CREATE OR REPLACE MACRO call_costs(since_ts, all_rows) AS TABLE
WITH priced AS (
    SELECT
        b.*,
        CASE WHEN p1.model IS NOT NULL THEN 1 WHEN p2.model IS NOT NULL THEN 2
             WHEN p3.model IS NOT NULL THEN 3 WHEN p4.model IS NOT NULL THEN 4 END AS price_rank,
        CASE WHEN p1.model IS NOT NULL THEN p1.input_usd_per_mtok
             WHEN p2.model IS NOT NULL THEN p2.input_usd_per_mtok
             WHEN p3.model IS NOT NULL THEN p3.input_usd_per_mtok
             ELSE p4.input_usd_per_mtok END                      AS in_price,
        CASE WHEN p1.model IS NOT NULL THEN p1.output_usd_per_mtok
             WHEN p2.model IS NOT NULL THEN p2.output_usd_per_mtok
             WHEN p3.model IS NOT NULL THEN p3.output_usd_per_mtok
             ELSE p4.output_usd_per_mtok END                     AS out_price,
        CASE WHEN p1.model IS NOT NULL THEN p1.cached_input_usd_per_mtok
             WHEN p2.model IS NOT NULL THEN p2.cached_input_usd_per_mtok
             WHEN p3.model IS NOT NULL THEN p3.cached_input_usd_per_mtok
             ELSE p4.cached_input_usd_per_mtok END               AS cached_price,
        CASE WHEN p1.model IS NOT NULL THEN p1.cache_write_usd_per_mtok
             WHEN p2.model IS NOT NULL THEN p2.cache_write_usd_per_mtok
             WHEN p3.model IS NOT NULL THEN p3.cache_write_usd_per_mtok
             ELSE p4.cache_write_usd_per_mtok END                AS cache_write_price,
        g.usd_per_gpu_hour                                       AS gpu_hour_price,
        cs.self_hosted_method,
        cs.default_usd_per_gpu_hour,
        cs.usd_per_kwh
    FROM (SELECT *
          FROM call_rows
          WHERE all_rows
             OR (received_time >= since_ts
                 AND trace_id IN (SELECT trace_id FROM call_refresh_traces))) b
    LEFT JOIN model_prices p1 ON p1.model = b.price_key AND p1.provider = b.provider
    LEFT JOIN model_prices p2 ON p2.model = b.price_key AND p2.provider = ''
    LEFT JOIN model_prices p3 ON p3.model = b.price_base_key AND p3.provider = b.provider
    LEFT JOIN model_prices p4 ON p4.model = b.price_base_key AND p4.provider = ''
    LEFT JOIN gpu_prices g ON g.gpu_type = b.gpu_name
    LEFT JOIN cost_settings cs ON cs.id = 1
)
SELECT trace_id,
       span_id,
    CASE
        WHEN price_rank IS NOT NULL THEN
            CASE WHEN input_tokens IS NULL AND output_tokens IS NULL THEN NULL ELSE (
                greatest(coalesce(input_tokens, 0) - coalesce(cache_read_input_tokens, 0)
                         - coalesce(cache_creation_input_tokens, 0), 0)
                    * coalesce(in_price, 0)
                + coalesce(cache_read_input_tokens, 0) * coalesce(cached_price, in_price, 0)
                + coalesce(cache_creation_input_tokens, 0)
                    * coalesce(cache_write_price, in_price, 0)
                + coalesce(output_tokens, 0) * coalesce(out_price, 0)
            ) / 1e6 END
        WHEN self_hosted_method = 'gpu_time' AND gpu_seconds IS NOT NULL THEN
            gpu_seconds / 3600.0 * coalesce(gpu_hour_price, default_usd_per_gpu_hour)
        WHEN self_hosted_method = 'energy' AND gpu_energy_j IS NOT NULL THEN
            gpu_energy_j / 3.6e6 * usd_per_kwh
    END                                                          AS cost_usd,
    CASE
        WHEN price_rank IS NOT NULL THEN 'tokens'
        WHEN self_hosted_method = 'gpu_time' AND gpu_seconds IS NOT NULL
             AND coalesce(gpu_hour_price, default_usd_per_gpu_hour) IS NOT NULL THEN 'gpu_time'
        WHEN self_hosted_method = 'energy' AND gpu_energy_j IS NOT NULL
             AND usd_per_kwh IS NOT NULL THEN 'energy'
    END                                                          AS cost_basis
FROM priced;

-- fill from what the file already holds
INSERT INTO call_refresh_traces SELECT DISTINCT trace_id FROM spans;
-- in start order, so that a time filter on llm_calls skips most row groups
INSERT INTO call_rows
    SELECT *, NULL, NULL FROM call_rows_derive('-infinity'::TIMESTAMPTZ) ORDER BY start_time;
DELETE FROM call_refresh_traces;
UPDATE call_rows SET cost_usd = c.cost_usd, cost_basis = c.cost_basis
    FROM call_costs('-infinity'::TIMESTAMPTZ, true) c
    WHERE call_rows.trace_id = c.trace_id AND call_rows.span_id = c.span_id;

-- every prompt fingerprint ever seen in llm_calls: first and last call, calls (kept by the same
-- passes, so that all-time figures of a prompt need no scan of every call)
CREATE TABLE IF NOT EXISTS prompt_fingerprints (
    fingerprint   VARCHAR PRIMARY KEY,
    first_seen    TIMESTAMPTZ,
    last_seen     TIMESTAMPTZ,
    calls         BIGINT NOT NULL
);
INSERT INTO prompt_fingerprints
    SELECT prompt_fingerprint, min(start_time), max(start_time), count(*)
    FROM call_rows WHERE prompt_fingerprint IS NOT NULL GROUP BY 1;

INSERT INTO call_rows_state
    SELECT 1, max(received_time), (SELECT max(paired_time) FROM span_pairs), NULL FROM spans;

-- One row per logical LLM call, priced. The columns of version 4, in their order.
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
    capture_span_id
FROM call_rows;
