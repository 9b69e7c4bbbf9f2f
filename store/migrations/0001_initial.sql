-- infersight store, schema version 1: spans, GenAI content, metric points, log records.
-- Public contract: columns are added by later migrations, never renamed in place.

CREATE TABLE IF NOT EXISTS spans (
    trace_id                               VARCHAR NOT NULL,
    span_id                                VARCHAR NOT NULL,
    parent_span_id                         VARCHAR,
    trace_state                            VARCHAR,
    service_name                           VARCHAR,
    name                                   VARCHAR,
    kind                                   VARCHAR,
    start_time                             TIMESTAMPTZ,
    end_time                               TIMESTAMPTZ,
    start_unix_ns                          BIGINT,
    end_unix_ns                            BIGINT,
    duration_s                             DOUBLE,
    status_code                            VARCHAR,
    status_message                         VARCHAR,
    scope_name                             VARCHAR,
    scope_version                          VARCHAR,
    attributes                             JSON,
    resource                               JSON,
    events                                 JSON,
    links                                  JSON,
    k8s_namespace                          VARCHAR,
    k8s_pod                                VARCHAR,
    k8s_node                               VARCHAR,
    source                                 VARCHAR,
    gen_ai_dialect                         VARCHAR,
    gen_ai_operation_name                  VARCHAR,
    gen_ai_provider_name                   VARCHAR,
    gen_ai_request_model                   VARCHAR,
    gen_ai_response_model                  VARCHAR,
    gen_ai_response_id                     VARCHAR,
    gen_ai_usage_input_tokens              BIGINT,
    gen_ai_usage_output_tokens             BIGINT,
    gen_ai_usage_cache_read_input_tokens   BIGINT,
    gen_ai_usage_cache_creation_input_tokens BIGINT,
    gen_ai_usage_reasoning_output_tokens   BIGINT,
    gen_ai_response_finish_reasons         VARCHAR[],
    gen_ai_request_stream                  BOOLEAN,
    gen_ai_response_time_to_first_chunk    DOUBLE,
    gen_ai_conversation_id                 VARCHAR,
    gen_ai_request_temperature             DOUBLE,
    gen_ai_request_top_p                   DOUBLE,
    gen_ai_request_max_tokens              BIGINT,
    gen_ai_agent_name                      VARCHAR,
    gen_ai_tool_name                       VARCHAR,
    server_address                         VARCHAR,
    server_port                            BIGINT,
    error_type                             VARCHAR,
    received_time                          TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS genai_content (
    trace_id             VARCHAR,
    span_id              VARCHAR,
    time                 TIMESTAMPTZ,
    origin               VARCHAR,      -- span_attributes | span_events | log_events
    input_messages       JSON,
    output_messages      JSON,
    system_instructions  JSON,
    tool_definitions     JSON
);

CREATE TABLE IF NOT EXISTS metric_points (
    time                     TIMESTAMPTZ,
    start_time               TIMESTAMPTZ,
    time_unix_ns             BIGINT,
    service_name             VARCHAR,
    scope_name               VARCHAR,
    metric_name              VARCHAR,
    description              VARCHAR,
    unit                     VARCHAR,
    metric_type              VARCHAR,  -- gauge | sum | histogram | exponential_histogram | summary
    temporality              VARCHAR,  -- cumulative | delta | unspecified
    is_monotonic             BOOLEAN,
    value                    DOUBLE,
    count                    UBIGINT,
    sum                      DOUBLE,
    min                      DOUBLE,
    max                      DOUBLE,
    bucket_counts            UBIGINT[],
    explicit_bounds          DOUBLE[],
    exp_scale                INTEGER,
    exp_zero_count           UBIGINT,
    exp_positive_offset      INTEGER,
    exp_positive_bucket_counts UBIGINT[],
    exp_negative_offset      INTEGER,
    exp_negative_bucket_counts UBIGINT[],
    quantiles                DOUBLE[],
    quantile_values          DOUBLE[],
    flags                    UINTEGER,
    exemplars                JSON,
    attributes               JSON,
    resource                 JSON,
    k8s_namespace            VARCHAR,
    k8s_pod                  VARCHAR,
    k8s_node                 VARCHAR,
    received_time            TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS log_records (
    time               TIMESTAMPTZ,
    observed_time      TIMESTAMPTZ,
    time_unix_ns       BIGINT,
    service_name       VARCHAR,
    scope_name         VARCHAR,
    severity_number    INTEGER,
    severity_text      VARCHAR,
    event_name         VARCHAR,
    body               JSON,
    attributes         JSON,
    resource           JSON,
    trace_id           VARCHAR,
    span_id            VARCHAR,
    flags              UINTEGER,
    k8s_namespace      VARCHAR,
    k8s_pod            VARCHAR,
    k8s_node           VARCHAR,
    received_time      TIMESTAMPTZ
);

-- One row per logical LLM call. Pairing (eBPF capture + SDK span) refines this later;
-- for now it is every GenAI inference or embeddings span that is not the server side of a call.
CREATE OR REPLACE VIEW llm_calls AS
SELECT
    trace_id,
    span_id,
    start_time,
    service_name,
    k8s_namespace,
    k8s_pod,
    gen_ai_provider_name                         AS provider,
    gen_ai_operation_name                        AS operation,
    coalesce(gen_ai_response_model, gen_ai_request_model) AS model,
    gen_ai_usage_input_tokens                    AS input_tokens,
    gen_ai_usage_output_tokens                   AS output_tokens,
    duration_s,
    gen_ai_response_time_to_first_chunk          AS ttft_s,
    CASE WHEN gen_ai_response_time_to_first_chunk IS NOT NULL AND gen_ai_usage_output_tokens > 1
         THEN (duration_s - gen_ai_response_time_to_first_chunk) / (gen_ai_usage_output_tokens - 1)
    END                                          AS tpot_s,
    CASE WHEN status_code = 'error' OR error_type IS NOT NULL THEN 'error' ELSE 'ok' END AS status,
    error_type,
    coalesce(source, 'sdk')                      AS source,
    CAST(NULL AS DOUBLE)                         AS gpu_seconds,
    CAST(NULL AS DOUBLE)                         AS gpu_energy_j,
    CAST(NULL AS DOUBLE)                         AS cost_usd,
    CAST(NULL AS VARCHAR)                        AS prompt_fingerprint
FROM spans
WHERE gen_ai_operation_name IN ('chat', 'text_completion', 'generate_content', 'embeddings')
  AND kind IS DISTINCT FROM 'server';
