"""Inference-engine saturation: find vLLM, TGI and SGLang on the node and export their load.

Modules: `names` (our metric names and the engines'), `exposition` (a /metrics page to
readings, pure), `discovery` (candidate endpoints from the kubelet pod list and /proc),
`kubelet` (the pod list over HTTP), `monitor` (probing and scraping, one thread), `metrics`
(OTel instruments over the monitor's snapshot).
"""
