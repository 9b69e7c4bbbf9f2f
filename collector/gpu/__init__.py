"""GPU telemetry in the collector: the store's GPU views offered under DCGM exporter names.

Modules: `dcgm_exporter` (a prometheus_client collector for `/metrics`). The SQL surface itself
(`gpu_samples`, `gpu_process_samples`) is defined by `store/migrations/0003_gpu.sql`.
"""
