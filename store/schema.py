"""Arrow schemas of the store's tables, the contract between producers and the writer.

Takes nothing; gives one `pyarrow.Schema` per writable table, in the column order of the
table created by the migrations in `store/migrations/`. Producers (the OTLP decoders) build
`pyarrow.Table`s with these schemas; the writer inserts them by column name. JSON columns are
carried as Arrow strings holding serialized JSON. Timestamps are UTC nanoseconds.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ns", tz="UTC")
STR = pa.string()
JSON = pa.string()
I64 = pa.int64()
F64 = pa.float64()

SPANS = pa.schema(
    [
        ("trace_id", STR),
        ("span_id", STR),
        ("parent_span_id", STR),
        ("trace_state", STR),
        ("service_name", STR),
        ("name", STR),
        ("kind", STR),
        ("start_time", TS),
        ("end_time", TS),
        ("start_unix_ns", I64),
        ("end_unix_ns", I64),
        ("duration_s", F64),
        ("status_code", STR),
        ("status_message", STR),
        ("scope_name", STR),
        ("scope_version", STR),
        ("attributes", JSON),
        ("resource", JSON),
        ("events", JSON),
        ("links", JSON),
        ("k8s_namespace", STR),
        ("k8s_pod", STR),
        ("k8s_node", STR),
        ("source", STR),
        ("gen_ai_dialect", STR),
        ("gen_ai_operation_name", STR),
        ("gen_ai_provider_name", STR),
        ("gen_ai_request_model", STR),
        ("gen_ai_response_model", STR),
        ("gen_ai_response_id", STR),
        ("gen_ai_usage_input_tokens", I64),
        ("gen_ai_usage_output_tokens", I64),
        ("gen_ai_usage_cache_read_input_tokens", I64),
        ("gen_ai_usage_cache_creation_input_tokens", I64),
        ("gen_ai_usage_reasoning_output_tokens", I64),
        ("gen_ai_response_finish_reasons", pa.list_(STR)),
        ("gen_ai_request_stream", pa.bool_()),
        ("gen_ai_response_time_to_first_chunk", F64),
        ("gen_ai_conversation_id", STR),
        ("gen_ai_request_temperature", F64),
        ("gen_ai_request_top_p", F64),
        ("gen_ai_request_max_tokens", I64),
        ("gen_ai_agent_name", STR),
        ("gen_ai_tool_name", STR),
        ("server_address", STR),
        ("server_port", I64),
        ("error_type", STR),
        ("received_time", TS),
        ("prompt_fingerprint", STR),
        ("infersight_gpu_seconds", F64),
        ("infersight_gpu_energy_j", F64),
    ]
)

#: Span columns the decoder derives from normalized content and agent attributes (migrations
#: 0002 and 0003 added them).
DERIVED_COLUMNS: tuple[str, ...] = (
    "prompt_fingerprint",
    "infersight_gpu_seconds",
    "infersight_gpu_energy_j",
)

#: Span columns that normalization fills from GenAI attributes, whatever the dialect.
GENAI_COLUMNS: tuple[str, ...] = tuple(
    f.name
    for f in SPANS
    if f.name.startswith("gen_ai_") or f.name in ("server_address", "server_port", "error_type")
)

GENAI_CONTENT = pa.schema(
    [
        ("trace_id", STR),
        ("span_id", STR),
        ("time", TS),
        ("origin", STR),
        ("input_messages", JSON),
        ("output_messages", JSON),
        ("system_instructions", JSON),
        ("tool_definitions", JSON),
    ]
)

METRIC_POINTS = pa.schema(
    [
        ("time", TS),
        ("start_time", TS),
        ("time_unix_ns", I64),
        ("service_name", STR),
        ("scope_name", STR),
        ("metric_name", STR),
        ("description", STR),
        ("unit", STR),
        ("metric_type", STR),
        ("temporality", STR),
        ("is_monotonic", pa.bool_()),
        ("value", F64),
        ("count", pa.uint64()),
        ("sum", F64),
        ("min", F64),
        ("max", F64),
        ("bucket_counts", pa.list_(pa.uint64())),
        ("explicit_bounds", pa.list_(F64)),
        ("exp_scale", pa.int32()),
        ("exp_zero_count", pa.uint64()),
        ("exp_positive_offset", pa.int32()),
        ("exp_positive_bucket_counts", pa.list_(pa.uint64())),
        ("exp_negative_offset", pa.int32()),
        ("exp_negative_bucket_counts", pa.list_(pa.uint64())),
        ("quantiles", pa.list_(F64)),
        ("quantile_values", pa.list_(F64)),
        ("flags", pa.uint32()),
        ("exemplars", JSON),
        ("attributes", JSON),
        ("resource", JSON),
        ("k8s_namespace", STR),
        ("k8s_pod", STR),
        ("k8s_node", STR),
        ("received_time", TS),
    ]
)

LOG_RECORDS = pa.schema(
    [
        ("time", TS),
        ("observed_time", TS),
        ("time_unix_ns", I64),
        ("service_name", STR),
        ("scope_name", STR),
        ("severity_number", pa.int32()),
        ("severity_text", STR),
        ("event_name", STR),
        ("body", JSON),
        ("attributes", JSON),
        ("resource", JSON),
        ("trace_id", STR),
        ("span_id", STR),
        ("flags", pa.uint32()),
        ("k8s_namespace", STR),
        ("k8s_pod", STR),
        ("k8s_node", STR),
        ("received_time", TS),
    ]
)

#: Every table the writer accepts, by name.
TABLES: dict[str, pa.Schema] = {
    "spans": SPANS,
    "genai_content": GENAI_CONTENT,
    "metric_points": METRIC_POINTS,
    "log_records": LOG_RECORDS,
}
