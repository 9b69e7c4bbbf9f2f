"""OTLP receivers: OTLP/HTTP (`http.build_http_app`), OTLP/gRPC (`grpc_server.build_grpc_server`).

Take OTLP exports (traces, metrics, logs) over either transport; give Arrow batches to the
store writer and answer each export only after its rows are committed. Decoding is pure and
shared (`decode_traces`, `decode_metrics`, `decode_logs`, driven by `ingest`) and runs in the
worker processes of a `pool.DecodePool` when the receivers are given one; limits live in
`limits.ReceiverLimits`, self-metrics in `counters`.
"""
