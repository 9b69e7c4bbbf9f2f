"""Names of the inference-engine saturation metrics, and of the engines' own metrics they read.

Takes in: nothing.
Gives out: the OTel metric names and attribute keys the agent exports for inference engines
(`infersight.engine.*`; attribute keys from the semantic conventions where they exist), and per
engine the Prometheus metric names it reads, newest name first where an engine renamed a metric
between releases.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import GEN_AI_REQUEST_MODEL
from opentelemetry.semconv._incubating.attributes.k8s_attributes import (
    K8S_CONTAINER_NAME,
    K8S_NAMESPACE_NAME,
    K8S_NODE_NAME,
    K8S_POD_NAME,
)
from opentelemetry.semconv._incubating.attributes.process_attributes import PROCESS_PID
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT

# ---- what the agent exports ----
REQUESTS_RUNNING: Final = "infersight.engine.requests.running"  # gauge, {request}
REQUESTS_WAITING: Final = "infersight.engine.requests.waiting"  # gauge, {request}
KV_CACHE_USAGE: Final = "infersight.engine.kv_cache.usage"  # gauge, 1 (fraction of KV cache)
PREFIX_CACHE_HIT_RATIO: Final = "infersight.engine.prefix_cache.hit_ratio"  # gauge, 1
PREFIX_CACHE_QUERIES: Final = "infersight.engine.prefix_cache.queries"  # counter, {token}
PREFIX_CACHE_HITS: Final = "infersight.engine.prefix_cache.hits"  # counter, {token}
BATCH_SIZE: Final = "infersight.engine.batch.size"  # gauge, {request}
QUEUE_SIZE: Final = "infersight.engine.queue.size"  # gauge, {request}
SCRAPE_ERRORS: Final = "infersight.agent.engines.scrape.errors"  # counter, {error}
ENDPOINTS: Final = "infersight.agent.engines.endpoints"  # gauge, {endpoint}; by engine
CANDIDATES: Final = "infersight.agent.engines.candidates"  # gauge, {endpoint}

ATTR_ENGINE: Final = "infersight.engine.name"  # vllm | tgi | sglang
ATTR_MODEL: Final = GEN_AI_REQUEST_MODEL  # the model name the engine serves
ATTR_SERVER_ADDRESS: Final = SERVER_ADDRESS
ATTR_SERVER_PORT: Final = SERVER_PORT
ATTR_K8S_NODE: Final = K8S_NODE_NAME
ATTR_K8S_NAMESPACE: Final = K8S_NAMESPACE_NAME
ATTR_K8S_POD: Final = K8S_POD_NAME
ATTR_K8S_CONTAINER: Final = K8S_CONTAINER_NAME
ATTR_PROCESS_PID: Final = PROCESS_PID

VLLM: Final = "vllm"
TGI: Final = "tgi"
SGLANG: Final = "sglang"

#: metric name prefix -> engine; a /metrics page is the engine's when it has metrics so named
ENGINE_PREFIXES: Final[dict[str, str]] = {"vllm:": VLLM, "tgi_": TGI, "sglang:": SGLANG}

# ---- what the engines expose (Prometheus names, counters without `_total`) ----
VLLM_RUNNING: Final = ("vllm:num_requests_running",)
VLLM_WAITING: Final = ("vllm:num_requests_waiting",)
#: renamed from gpu_cache_usage_perc; both are a fraction (0..1) despite the name
VLLM_KV_USAGE: Final = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
#: token counters of the V1 engine (the `gpu_` names are those of its first releases)
VLLM_PREFIX_QUERIES: Final = ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries")
VLLM_PREFIX_HITS: Final = ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits")
#: the V0 engine's own hit rate gauge (0..1)
VLLM_PREFIX_HIT_RATE: Final = ("vllm:gpu_prefix_cache_hit_rate",)
VLLM_MODEL_LABEL: Final = "model_name"

TGI_QUEUE: Final = ("tgi_queue_size",)
TGI_BATCH: Final = ("tgi_batch_current_size",)

SGLANG_RUNNING: Final = ("sglang:num_running_reqs",)
SGLANG_WAITING: Final = ("sglang:num_queue_reqs",)
SGLANG_TOKEN_USAGE: Final = ("sglang:token_usage",)
SGLANG_CACHE_HIT_RATE: Final = ("sglang:cache_hit_rate",)
SGLANG_MODEL_LABEL: Final = "model_name"
