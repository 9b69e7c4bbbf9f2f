"""An inference engine's Prometheus page to saturation readings, per served model.

Takes in: the text of a `/metrics` page (Prometheus text format, as vLLM, SGLang and TGI
serve it), parsed with `prometheus_client.parser`.
Gives out: `classify()` (which engine wrote the page, by metric prefix, or None), and
`readings()`: one `EngineReading` per model with requests running and waiting, KV cache
usage, prefix cache figures, batch and queue size, where the engine reports them. Several series
of one model (data-parallel engines, ranks) are summed for counts and averaged for fractions.
Pure: no I/O. Malformed text raises `ValueError` (from the parser).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from agent.engines import names as n

#: metric name (counters without `_total`) -> [(labels, value)]
Samples = dict[str, list[tuple[dict[str, str], float]]]


@dataclass(frozen=True, slots=True)
class EngineReading:
    """What one engine reports about one model it serves, at one scrape."""

    engine: str
    model: str | None
    requests_running: float | None = None
    requests_waiting: float | None = None
    #: fraction (0..1) of the KV cache in use
    kv_cache_usage_ratio: float | None = None
    #: the engine's own prefix cache hit ratio (0..1), where it computes one
    prefix_cache_hit_ratio: float | None = None
    #: cumulative prefix cache lookups and hits, in tokens, where the engine counts them
    prefix_cache_queries_tokens: float | None = None
    prefix_cache_hits_tokens: float | None = None
    batch_size: float | None = None
    queue_size: float | None = None


def parse_samples(text: str) -> Samples:
    """Gauge, counter and untyped samples of a page by metric name; counters lose `_total`."""
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        if family.type not in ("gauge", "counter", "unknown", "untyped"):
            continue
        for s in family.samples:
            name = s.name
            if family.type == "counter":
                if name != family.name + "_total":
                    continue  # _created
                name = family.name
            elif name.endswith("_total"):
                # a counter served without its TYPE line
                name = name[: -len("_total")]
            out[name].append((dict(s.labels), float(s.value)))
    return dict(out)


def classify(samples: Samples) -> str | None:
    """The engine whose metric prefix most names on the page carry, or None."""
    counts: dict[str, int] = defaultdict(int)
    for name in samples:
        for prefix, engine in n.ENGINE_PREFIXES.items():
            if name.startswith(prefix):
                counts[engine] += 1
    if not counts:
        return None
    return max(counts.items(), key=lambda kv: kv[1])[0]


def _by_model(
    samples: Samples, candidates: Iterable[str], model_label: str | None
) -> dict[str | None, list[float]]:
    """Values of the first candidate name present, grouped by the model label."""
    for name in candidates:
        found = samples.get(name)
        if found:
            grouped: dict[str | None, list[float]] = defaultdict(list)
            for labels, value in found:
                if value != value:  # NaN: the engine has no value yet
                    continue
                grouped[labels.get(model_label) if model_label else None].append(value)
            return dict(grouped)
    return {}


def _total(values: list[float] | None) -> float | None:
    return sum(values) if values else None


def _ratio(values: list[float] | None) -> float | None:
    # engines write -1 for "no such cache" (vLLM's CPU prefix cache, for one)
    kept = [v for v in values or () if 0.0 <= v <= 1.0]
    return sum(kept) / len(kept) if kept else None


def readings(engine: str, samples: Samples) -> list[EngineReading]:
    """One reading per model the page reports on (one with model None where pages carry no
    model label, as TGI's)."""
    if engine == n.VLLM:
        label: str | None = n.VLLM_MODEL_LABEL
        fields = {
            "requests_running": (_by_model(samples, n.VLLM_RUNNING, label), _total),
            "requests_waiting": (_by_model(samples, n.VLLM_WAITING, label), _total),
            "kv_cache_usage_ratio": (_by_model(samples, n.VLLM_KV_USAGE, label), _ratio),
            "prefix_cache_hit_ratio": (_by_model(samples, n.VLLM_PREFIX_HIT_RATE, label), _ratio),
            "prefix_cache_queries_tokens": (
                _by_model(samples, n.VLLM_PREFIX_QUERIES, label),
                _total,
            ),
            "prefix_cache_hits_tokens": (_by_model(samples, n.VLLM_PREFIX_HITS, label), _total),
        }
    elif engine == n.SGLANG:
        label = n.SGLANG_MODEL_LABEL
        fields = {
            "requests_running": (_by_model(samples, n.SGLANG_RUNNING, label), _total),
            "requests_waiting": (_by_model(samples, n.SGLANG_WAITING, label), _total),
            "kv_cache_usage_ratio": (_by_model(samples, n.SGLANG_TOKEN_USAGE, label), _ratio),
            "prefix_cache_hit_ratio": (_by_model(samples, n.SGLANG_CACHE_HIT_RATE, label), _ratio),
        }
    elif engine == n.TGI:
        # TGI serves one model and names it on /info, not in its metrics; its running batch is
        # the set of requests in flight and its queue the requests waiting
        batch = _by_model(samples, n.TGI_BATCH, None)
        queue = _by_model(samples, n.TGI_QUEUE, None)
        fields = {
            "requests_running": (batch, _total),
            "requests_waiting": (queue, _total),
            "batch_size": (batch, _total),
            "queue_size": (queue, _total),
        }
    else:
        return []
    models: set[str | None] = set()
    for grouped, _ in fields.values():
        models.update(grouped)
    out: list[EngineReading] = []
    for model in sorted(models, key=lambda m: (m is None, m or "")):
        values = {key: agg(grouped.get(model)) for key, (grouped, agg) in fields.items()}
        out.append(EngineReading(engine=engine, model=model, **values))
    return out


def interval_hit_ratio(
    previous: tuple[float, float] | None, current: tuple[float, float]
) -> float | None:
    """Prefix cache hit ratio from (hits, queries) token counters.

    Over the interval since `previous` when there is one and the counters did not go back
    (an engine restart resets them); otherwise since the engine started. None when no token
    was looked up in that span.
    """
    hits, queries = current
    if previous is not None:
        d_hits, d_queries = hits - previous[0], queries - previous[1]
        if d_queries >= 0 and d_hits >= 0:
            return d_hits / d_queries if d_queries > 0 else None
    return hits / queries if queries > 0 else None
