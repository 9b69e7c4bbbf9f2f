"""GPU telemetry of the node agent: NVML sampling, pod attribution, energy per call, metrics.

Modules: `types` (records), `nvml_binding` (the only importer of pynvml), `nvml_sampler` (the
sampling thread), `attribution` (pid -> pod), `energy` (GPU time and energy per call),
`metrics` (OTel instruments), `dcgm_names` (metric names and their DCGM counterparts).
Importing this package loads neither pynvml nor the NVML library.
"""
