-- infersight store, schema version 3: GPU samples, GPU process samples, GPU time and energy
-- per call.
--
-- The node agent exports its NVML readings as OTLP metrics (names in agent/gpu/dcgm_names.py),
-- which land in metric_points like any other metric. gpu_samples and gpu_process_samples are
-- views that turn those rows back into one row per GPU (and per GPU process) per collection, so
-- ingest needs no GPU-specific path. Both read only the rows of their own metric names, parse
-- each row's attribute JSON once, and group by (time, GPU uuid): every point of one agent
-- collection carries the same timestamp. A filter on `time` or `gpu_uuid` reaches the scan.
--
-- `time` is when the agent's metric reader collected, i.e. the newest NVML sample of that
-- device at that moment (at most one sampling period old).

-- spans of server-side LLM calls carry the GPU time and energy the agent attributed to them
-- (span attributes infersight.gpu.seconds and infersight.gpu.energy_j)
ALTER TABLE spans ADD COLUMN IF NOT EXISTS infersight_gpu_seconds DOUBLE;
ALTER TABLE spans ADD COLUMN IF NOT EXISTS infersight_gpu_energy_j DOUBLE;

-- One row per GPU or MIG device per agent collection.
CREATE OR REPLACE VIEW gpu_samples AS
WITH points AS (
    SELECT
        time,
        time_unix_ns,
        metric_name,
        value,
        k8s_node AS resource_node,
        json_extract_string(attributes, [
            '$."hw.id"',                  -- 1
            '$."infersight.gpu.index"',   -- 2
            '$."hw.name"',                -- 3
            '$."hw.parent"',              -- 4
            '$."k8s.node.name"',          -- 5
            '$."network.io.direction"',   -- 6
            '$."error.type"',             -- 7
            '$."hw.state"',               -- 8
            '$."k8s.namespace.name"',     -- 9
            '$."k8s.pod.name"',           -- 10
            '$."k8s.container.name"',     -- 11
            '$."process.pid"'             -- 12
        ]) AS a
    FROM metric_points
    WHERE metric_name IN (
        'hw.gpu.utilization',
        'infersight.gpu.memory_controller.utilization',
        'hw.gpu.memory.usage',
        'infersight.gpu.memory.free',
        'hw.gpu.memory.limit',
        'hw.gpu.memory.utilization',
        'hw.power',
        'infersight.gpu.power.limit',
        'hw.energy',
        'hw.temperature',
        'infersight.gpu.clock.sm',
        'infersight.gpu.clock.memory',
        'infersight.gpu.clock_event_reasons',
        'infersight.gpu.pcie.throughput',
        'hw.errors',
        'hw.status',
        'infersight.gpu.xid_errors',
        'infersight.gpu.process.memory.usage'
    )
)
SELECT
    time,
    min(time_unix_ns)                                                      AS time_unix_ns,
    coalesce(any_value(a[5]), any_value(resource_node))                    AS k8s_node,
    a[1]                                                                   AS gpu_uuid,
    TRY_CAST(any_value(a[2]) AS INTEGER)                                   AS gpu_index,
    any_value(a[3])                                                        AS gpu_name,
    any_value(a[4])                                                        AS parent_uuid,
    any_value(a[4]) IS NOT NULL                                            AS is_mig_device,
    -- the pod whose processes these are, when every process on the GPU belongs to the same one
    CASE WHEN count(DISTINCT coalesce(a[9], '') || '/' || coalesce(a[10], ''))
              FILTER (WHERE is_process) = 1
         THEN any_value(a[9]) FILTER (WHERE is_process) END                AS k8s_namespace,
    CASE WHEN count(DISTINCT coalesce(a[9], '') || '/' || coalesce(a[10], ''))
              FILTER (WHERE is_process) = 1
         THEN any_value(a[10]) FILTER (WHERE is_process) END               AS k8s_pod,
    CASE WHEN count(DISTINCT coalesce(a[9], '') || '/' || coalesce(a[10], '') || '/'
                             || coalesce(a[11], '')) FILTER (WHERE is_process) = 1
         THEN any_value(a[11]) FILTER (WHERE is_process) END               AS k8s_container,
    -- every pod with processes on this GPU, as namespace/pod
    list_sort(list(DISTINCT coalesce(a[9], '') || '/' || a[10])
              FILTER (WHERE is_process AND a[10] IS NOT NULL))             AS k8s_pods,
    count(DISTINCT a[12]) FILTER (WHERE is_process)                        AS process_count,
    100 * max(value) FILTER (WHERE metric_name = 'hw.gpu.utilization')     AS gpu_util_pct,
    100 * max(value) FILTER (WHERE metric_name = 'infersight.gpu.memory_controller.utilization')
                                                                           AS mem_util_pct,
    CAST(max(value) FILTER (WHERE metric_name = 'hw.gpu.memory.usage') AS BIGINT)
                                                                           AS mem_used_bytes,
    CAST(max(value) FILTER (WHERE metric_name = 'infersight.gpu.memory.free') AS BIGINT)
                                                                           AS mem_free_bytes,
    CAST(max(value) FILTER (WHERE metric_name = 'hw.gpu.memory.limit') AS BIGINT)
                                                                           AS mem_total_bytes,
    max(value) FILTER (WHERE metric_name = 'hw.gpu.memory.utilization')    AS mem_used_ratio,
    max(value) FILTER (WHERE metric_name = 'hw.power')                     AS power_w,
    max(value) FILTER (WHERE metric_name = 'infersight.gpu.power.limit')   AS power_limit_w,
    max(value) FILTER (WHERE metric_name = 'hw.energy')                    AS energy_j,
    max(value) FILTER (WHERE metric_name = 'hw.temperature')               AS temperature_c,
    CAST(max(value) FILTER (WHERE metric_name = 'infersight.gpu.clock.sm') / 1e6 AS INTEGER)
                                                                           AS sm_clock_mhz,
    CAST(max(value) FILTER (WHERE metric_name = 'infersight.gpu.clock.memory') / 1e6 AS INTEGER)
                                                                           AS mem_clock_mhz,
    CAST(max(value) FILTER (WHERE metric_name = 'infersight.gpu.clock_event_reasons') AS BIGINT)
                                                                           AS clock_event_reasons,
    CAST(max(value) FILTER (WHERE metric_name = 'infersight.gpu.pcie.throughput'
                              AND a[6] = 'transmit') AS BIGINT)            AS pcie_tx_bytes_per_s,
    CAST(max(value) FILTER (WHERE metric_name = 'infersight.gpu.pcie.throughput'
                              AND a[6] = 'receive') AS BIGINT)             AS pcie_rx_bytes_per_s,
    CAST(max(value) FILTER (WHERE metric_name = 'hw.errors' AND a[7] = 'ecc_corrected')
         AS BIGINT)                                                        AS ecc_corrected_total,
    CAST(max(value) FILTER (WHERE metric_name = 'hw.errors' AND a[7] = 'ecc_uncorrected')
         AS BIGINT)                                                        AS ecc_uncorrected_total,
    -- XIDs since the agent started, all codes together
    CAST(sum(value) FILTER (WHERE metric_name = 'infersight.gpu.xid_errors') AS BIGINT)
                                                                           AS xid_errors_total,
    -- ok, or failed once the GPU fell off the bus
    any_value(a[8]) FILTER (WHERE metric_name = 'hw.status')               AS state
FROM (
    SELECT *, metric_name = 'infersight.gpu.process.memory.usage' AS is_process FROM points
)
WHERE a[1] IS NOT NULL
GROUP BY time, a[1];

-- One row per process on a GPU per agent collection (processes are listed every few seconds;
-- each collection repeats the latest listing while it is fresh).
CREATE OR REPLACE VIEW gpu_process_samples AS
WITH points AS (
    SELECT
        time,
        time_unix_ns,
        metric_name,
        value,
        k8s_node AS resource_node,
        json_extract_string(attributes, [
            '$."hw.id"',                  -- 1
            '$."process.pid"',            -- 2
            '$."infersight.gpu.index"',   -- 3
            '$."hw.name"',                -- 4
            '$."k8s.node.name"',          -- 5
            '$."k8s.namespace.name"',     -- 6
            '$."k8s.pod.name"',           -- 7
            '$."k8s.container.name"',     -- 8
            '$."k8s.pod.uid"',            -- 9
            '$."container.id"',           -- 10
            '$."hw.parent"'               -- 11
        ]) AS a
    FROM metric_points
    WHERE metric_name IN ('infersight.gpu.process.memory.usage',
                          'infersight.gpu.process.utilization')
)
SELECT
    time,
    min(time_unix_ns)                                                      AS time_unix_ns,
    coalesce(any_value(a[5]), any_value(resource_node))                    AS k8s_node,
    a[1]                                                                   AS gpu_uuid,
    TRY_CAST(any_value(a[3]) AS INTEGER)                                   AS gpu_index,
    any_value(a[4])                                                        AS gpu_name,
    any_value(a[11])                                                       AS parent_uuid,
    TRY_CAST(a[2] AS BIGINT)                                               AS pid,
    any_value(a[6])                                                        AS k8s_namespace,
    any_value(a[7])                                                        AS k8s_pod,
    any_value(a[8])                                                        AS k8s_container,
    any_value(a[9])                                                        AS k8s_pod_uid,
    any_value(a[10])                                                       AS container_id,
    CAST(max(value) FILTER (WHERE metric_name = 'infersight.gpu.process.memory.usage')
         AS BIGINT)                                                        AS mem_used_bytes,
    100 * max(value) FILTER (WHERE metric_name = 'infersight.gpu.process.utilization')
                                                                           AS sm_util_pct
FROM points
WHERE a[1] IS NOT NULL AND a[2] IS NOT NULL
GROUP BY time, a[1], a[2];
