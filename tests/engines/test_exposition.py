"""Engine /metrics pages to readings: vLLM (old and new metric names), TGI, SGLang."""

from __future__ import annotations

import pytest

from agent.engines.exposition import (
    EngineReading,
    classify,
    interval_hit_ratio,
    parse_samples,
    readings,
)
from tests.engines.servers import sample

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def read(text: str) -> tuple[str | None, list[EngineReading]]:
    samples = parse_samples(text)
    engine = classify(samples)
    return engine, readings(engine, samples) if engine else []


def test_vllm_v1_page() -> None:
    engine, found = read(
        sample(
            "vllm_v1.prom",
            running=7,
            waiting=2,
            kv_usage=0.4321,
            prefix_queries=81920,
            prefix_hits=20480,
        )
    )
    assert engine == "vllm"
    assert found == [
        EngineReading(
            engine="vllm",
            model=LLAMA,
            requests_running=7.0,
            requests_waiting=2.0,
            kv_cache_usage_ratio=pytest.approx(0.4321),
            prefix_cache_queries_tokens=81920.0,
            prefix_cache_hits_tokens=20480.0,
        )
    ]


def test_vllm_v0_page_with_the_old_names() -> None:
    engine, [r] = read(sample("vllm_v0.prom", running=3, waiting=1, kv_usage=0.125, hit_rate=0.5))
    assert engine == "vllm"
    assert (r.model, r.requests_running, r.requests_waiting) == (
        "Qwen/Qwen2.5-1.5B-Instruct",
        3.0,
        1.0,
    )
    assert r.kv_cache_usage_ratio == pytest.approx(0.125)
    assert r.prefix_cache_hit_ratio == pytest.approx(0.5)
    # V0 engines have no token counters
    assert r.prefix_cache_queries_tokens is None


def test_vllm_v0_without_prefix_caching_reports_no_hit_ratio() -> None:
    # vLLM writes -1 for a prefix cache it does not have
    _, [r] = read(sample("vllm_v0.prom", running=0, waiting=0, kv_usage=0.0, hit_rate=-1.0))
    assert r.prefix_cache_hit_ratio is None
    assert r.kv_cache_usage_ratio == 0.0


def test_first_v1_names_of_the_prefix_counters() -> None:
    text = (
        "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.25\n'
        "# TYPE vllm:gpu_prefix_cache_queries_total counter\n"
        'vllm:gpu_prefix_cache_queries_total{engine="0",model_name="m"} 400.0\n'
        "# TYPE vllm:gpu_prefix_cache_hits_total counter\n"
        'vllm:gpu_prefix_cache_hits_total{engine="0",model_name="m"} 100.0\n'
        "# TYPE vllm:gpu_prefix_cache_hits_created gauge\n"
        'vllm:gpu_prefix_cache_hits_created{engine="0",model_name="m"} 1.75e9\n'
    )
    _, [r] = read(text)
    assert (r.kv_cache_usage_ratio, r.prefix_cache_queries_tokens, r.prefix_cache_hits_tokens) == (
        0.25,
        400.0,
        100.0,
    )


def test_new_name_wins_when_a_release_serves_both() -> None:
    text = (
        'vllm:kv_cache_usage_perc{model_name="m"} 0.75\n'
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n'
    )
    _, [r] = read(text)
    assert r.kv_cache_usage_ratio == 0.75


def test_data_parallel_engines_are_summed_and_averaged_per_model() -> None:
    text = "".join(
        f'vllm:num_requests_running{{engine="{e}",model_name="{m}"}} {run}\n'
        f'vllm:num_requests_waiting{{engine="{e}",model_name="{m}"}} {wait}\n'
        f'vllm:kv_cache_usage_perc{{engine="{e}",model_name="{m}"}} {kv}\n'
        for e, m, run, wait, kv in (
            ("0", "a", 4, 1, 0.2),
            ("1", "a", 6, 3, 0.6),
            ("0", "b", 1, 0, 0.9),
        )
    )
    _, found = read(text)
    by_model = {r.model: r for r in found}
    assert (by_model["a"].requests_running, by_model["a"].requests_waiting) == (10.0, 4.0)
    assert by_model["a"].kv_cache_usage_ratio == pytest.approx(0.4)
    assert (by_model["b"].requests_running, by_model["b"].kv_cache_usage_ratio) == (1.0, 0.9)


def test_tgi_page() -> None:
    engine, found = read(sample("tgi.prom", queue=3, batch=12))
    assert engine == "tgi"
    # TGI's model is on /info, not on its metrics
    assert found == [
        EngineReading(
            engine="tgi",
            model=None,
            requests_running=12.0,
            requests_waiting=3.0,
            batch_size=12.0,
            queue_size=3.0,
        )
    ]


def test_sglang_page() -> None:
    engine, found = read(sample("sglang.prom", running=5, queue=9, token_usage=0.27, hit_rate=0.61))
    assert engine == "sglang"
    assert found == [
        EngineReading(
            engine="sglang",
            model="Qwen/Qwen2.5-7B-Instruct",
            requests_running=5.0,
            requests_waiting=9.0,
            kv_cache_usage_ratio=pytest.approx(0.27),
            prefix_cache_hit_ratio=pytest.approx(0.61),
        )
    ]


def test_nan_means_not_reported() -> None:
    _, [r] = read(
        'sglang:num_running_reqs{model_name="m"} 2\nsglang:token_usage{model_name="m"} NaN\n'
    )
    assert (r.requests_running, r.kv_cache_usage_ratio) == (2.0, None)


def test_other_pages_are_not_engines() -> None:
    node_exporter = "# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.42\n"
    assert read(node_exporter) == (None, [])
    # a Python service's default page
    assert (
        classify(
            parse_samples(
                "# TYPE python_gc_objects_collected_total counter\n"
                'python_gc_objects_collected_total{generation="0"} 1.0\n'
            )
        )
        is None
    )
    with pytest.raises(ValueError, match="invalid"):
        parse_samples("<html><body>Not a metrics page</body></html>\n")


def test_hit_ratio_over_the_interval() -> None:
    assert interval_hit_ratio(None, (250.0, 1000.0)) == 0.25  # since the engine started
    assert interval_hit_ratio((250.0, 1000.0), (1250.0, 3000.0)) == 0.5
    assert interval_hit_ratio((250.0, 1000.0), (250.0, 1000.0)) is None  # nothing looked up
    assert interval_hit_ratio((5000.0, 9000.0), (30.0, 100.0)) == 0.3  # counters were reset
    assert interval_hit_ratio(None, (0.0, 0.0)) is None
