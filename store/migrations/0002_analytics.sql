-- infersight store, schema version 2: prompt fingerprints, price tables, cost per call.
--
-- spans.prompt_fingerprint is filled at ingest by collector.analytics.fingerprint.
-- model_prices, gpu_prices and cost_settings are rewritten at collector start from the price
-- table shipped in collector/analytics/prices.yaml plus the user's override file
-- (collector.analytics.cost.load_prices); llm_calls computes cost_usd from them at query time,
-- so a price change applies to past calls as well.

ALTER TABLE spans ADD COLUMN IF NOT EXISTS prompt_fingerprint VARCHAR;
-- GPU time and energy the agent attributed to a call (span attributes infersight.gpu.seconds
-- and infersight.gpu.energy_j, usually on the server side of the call). Schema version 3 owns
-- them; they are added here too, in the same order, because llm_calls below reads them.
ALTER TABLE spans ADD COLUMN IF NOT EXISTS infersight_gpu_seconds DOUBLE;
ALTER TABLE spans ADD COLUMN IF NOT EXISTS infersight_gpu_energy_j DOUBLE;

-- Hosted models, priced per million tokens. `model` is lower case; `provider` is '' when the
-- price applies whichever provider served the model.
CREATE TABLE IF NOT EXISTS model_prices (
    model                        VARCHAR NOT NULL,
    provider                     VARCHAR NOT NULL DEFAULT '',
    input_usd_per_mtok           DOUBLE,
    output_usd_per_mtok          DOUBLE,
    cached_input_usd_per_mtok    DOUBLE,
    cache_write_usd_per_mtok     DOUBLE,
    price_version                VARCHAR,
    origin                       VARCHAR,   -- package | override
    PRIMARY KEY (model, provider)
);

-- Self-hosted models: price of one GPU-hour by GPU type (the NVML product name, lower case, as
-- in the span attribute infersight.gpu.name or hw.name; calls without one use the default).
CREATE TABLE IF NOT EXISTS gpu_prices (
    gpu_type           VARCHAR PRIMARY KEY,
    usd_per_gpu_hour   DOUBLE NOT NULL
);

-- Exactly one row (id = 1).
CREATE TABLE IF NOT EXISTS cost_settings (
    id                         INTEGER PRIMARY KEY CHECK (id = 1),
    price_version              VARCHAR,
    self_hosted_method         VARCHAR,   -- gpu_time | energy | none
    default_usd_per_gpu_hour   DOUBLE,
    usd_per_kwh                DOUBLE,
    loaded_time                TIMESTAMPTZ
);

-- One row per logical LLM call. Every column of schema version 1 keeps its name and position;
-- the columns after prompt_fingerprint are new in version 2.
CREATE OR REPLACE VIEW llm_calls AS
WITH server_gpu AS (
    -- GPU figures of the server side of a call, keyed by the client span they answer
    SELECT trace_id,
           parent_span_id,
           sum(infersight_gpu_seconds)  AS gpu_seconds,
           sum(infersight_gpu_energy_j) AS gpu_energy_j,
           lower(any_value(coalesce(attributes ->> '$."infersight.gpu.name"',
                                    attributes ->> '$."hw.name"'))) AS gpu_name
    FROM spans
    WHERE kind = 'server'
      AND (infersight_gpu_seconds IS NOT NULL OR infersight_gpu_energy_j IS NOT NULL)
    GROUP BY trace_id, parent_span_id
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
        coalesce(s.gen_ai_response_model, s.gen_ai_request_model) AS model,
        s.gen_ai_usage_input_tokens                              AS input_tokens,
        s.gen_ai_usage_output_tokens                             AS output_tokens,
        s.duration_s,
        s.gen_ai_response_time_to_first_chunk                    AS ttft_s,
        CASE WHEN s.gen_ai_response_time_to_first_chunk IS NOT NULL
                  AND s.gen_ai_usage_output_tokens > 1
             THEN (s.duration_s - s.gen_ai_response_time_to_first_chunk)
                  / (s.gen_ai_usage_output_tokens - 1)
        END                                                      AS tpot_s,
        CASE WHEN s.status_code = 'error' OR s.error_type IS NOT NULL
             THEN 'error' ELSE 'ok' END                          AS status,
        s.error_type,
        coalesce(s.source, 'sdk')                                AS source,
        -- GPU time and energy: the call's own, else what its server side was attributed
        coalesce(s.infersight_gpu_seconds, sg.gpu_seconds)      AS gpu_seconds,
        coalesce(s.infersight_gpu_energy_j, sg.gpu_energy_j)    AS gpu_energy_j,
        s.prompt_fingerprint,
        s.end_time,
        s.k8s_node,
        s.gen_ai_request_model                                   AS request_model,
        s.gen_ai_usage_cache_read_input_tokens                   AS cache_read_input_tokens,
        s.gen_ai_usage_cache_creation_input_tokens               AS cache_creation_input_tokens,
        s.server_address,
        s.received_time,
        CASE WHEN s.infersight_gpu_seconds IS NOT NULL OR s.infersight_gpu_energy_j IS NOT NULL
             THEN lower(coalesce(s.attributes ->> '$."infersight.gpu.name"',
                                 s.attributes ->> '$."hw.name"'))
             ELSE sg.gpu_name END                                AS gpu_name,
        lower(coalesce(s.gen_ai_response_model, s.gen_ai_request_model)) AS price_key,
        -- the same model without a routing prefix (openai/, models/) or a release suffix
        -- (-2024-08-06, -20240620, -latest), so that dated releases find the family's price
        regexp_replace(
            regexp_replace(lower(coalesce(s.gen_ai_response_model, s.gen_ai_request_model)),
                           '^([a-z0-9_.-]+/)+', ''),
            '(-\d{4}-\d{2}-\d{2}|-\d{8}|-latest)$', '')          AS price_base_key
    FROM spans s
    LEFT JOIN server_gpu sg ON sg.trace_id = s.trace_id AND sg.parent_span_id = s.span_id
    WHERE s.gen_ai_operation_name IN ('chat', 'text_completion', 'generate_content', 'embeddings')
      AND s.kind IS DISTINCT FROM 'server'
),
priced AS (
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
    FROM base b
    LEFT JOIN model_prices p1 ON p1.model = b.price_key AND p1.provider = b.provider
    LEFT JOIN model_prices p2 ON p2.model = b.price_key AND p2.provider = ''
    LEFT JOIN model_prices p3 ON p3.model = b.price_base_key AND p3.provider = b.provider
    LEFT JOIN model_prices p4 ON p4.model = b.price_base_key AND p4.provider = ''
    LEFT JOIN gpu_prices g ON g.gpu_type = b.gpu_name
    LEFT JOIN cost_settings cs ON cs.id = 1
)
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
    prompt_fingerprint,
    end_time,
    k8s_node,
    request_model,
    cache_read_input_tokens,
    cache_creation_input_tokens,
    server_address,
    received_time,
    CASE
        WHEN price_rank IS NOT NULL THEN 'tokens'
        WHEN self_hosted_method = 'gpu_time' AND gpu_seconds IS NOT NULL
             AND coalesce(gpu_hour_price, default_usd_per_gpu_hour) IS NOT NULL THEN 'gpu_time'
        WHEN self_hosted_method = 'energy' AND gpu_energy_j IS NOT NULL
             AND usd_per_kwh IS NOT NULL THEN 'energy'
    END                                                          AS cost_basis
FROM priced;

-- Full-text search over genai_content (collector.analytics.search): which of the two index
-- slots is current, and what it was built from. Exactly one row (id = 1) once built.
CREATE TABLE IF NOT EXISTS analytics_search_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    slot            VARCHAR,
    built_time      TIMESTAMPTZ,
    content_rows    BIGINT,
    docs            BIGINT,
    build_s         DOUBLE
);
