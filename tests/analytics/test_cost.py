"""Price table loading, overrides, cost per call in `llm_calls`, and the cost endpoint."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from collector.analytics.cost import PRICES_ENV, PriceTableError, load_prices, read_price_table
from collector.api.sql import QueryRunner
from store.call_rows import CallRows
from store.database import Database
from tests.analytics import synth
from tests.analytics.conftest import Seeded, window
from tests.analytics.test_prompts import PRICES, expected_cost

V1_COLUMNS = [
    "trace_id",
    "span_id",
    "start_time",
    "service_name",
    "k8s_namespace",
    "k8s_pod",
    "provider",
    "operation",
    "model",
    "input_tokens",
    "output_tokens",
    "duration_s",
    "ttft_s",
    "tpot_s",
    "status",
    "error_type",
    "source",
    "gpu_seconds",
    "gpu_energy_j",
    "cost_usd",
    "prompt_fingerprint",
]


@pytest.fixture
def small_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.delenv(PRICES_ENV, raising=False)
    db = Database(tmp_path / "cost.duckdb")
    synth.seed(db, synth.make_calls(seed=3, n=60))
    return db


def costs(db: Database) -> dict[str, float | None]:
    rows = db.cursor().execute("SELECT span_id, cost_usd FROM llm_calls").fetchall()
    return {r[0]: r[1] for r in rows}


def test_view_keeps_every_v1_column_in_order(small_db: Database) -> None:
    cols = [r[0] for r in small_db.cursor().execute("DESCRIBE llm_calls").fetchall()]
    assert cols[: len(V1_COLUMNS)] == V1_COLUMNS
    assert "prompt_fingerprint" in [
        r[0] for r in small_db.cursor().execute("DESCRIBE spans").fetchall()
    ]


def test_without_prices_nothing_is_priced(small_db: Database) -> None:
    assert all(v is None for v in costs(small_db).values())


def test_packaged_prices_price_every_known_call(small_db: Database) -> None:
    table = load_prices(small_db)
    assert table.version == PRICES["version"]
    calls = {c.span_id: c for c in synth.make_calls(seed=3, n=60)}
    got = costs(small_db)
    assert set(got) == set(calls)
    for span_id, value in got.items():
        want = expected_cost(calls[span_id])
        if want is None:
            assert value is None, calls[span_id].model
        else:
            assert value == pytest.approx(want, rel=1e-12), calls[span_id].model
    version = small_db.cursor().execute("SELECT price_version FROM cost_settings").fetchall()
    assert version == [(PRICES["version"],)]


def test_override_file_from_environment_reprices_past_calls(
    small_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_prices(small_db)
    before = costs(small_db)
    override = tmp_path / "prices.yaml"
    override.write_text(
        "version: site-7\n"
        "models:\n"
        "  gpt-4o: {input: 100, output: 0}\n"
        "  mystery-model-7b: {input: 1, output: 2}\n"
        "self_hosted:\n"
        "  method: energy\n"
        "  usd_per_kwh: 0.36\n"
    )
    monkeypatch.setenv(PRICES_ENV, str(override))
    table = load_prices(small_db)
    assert table.version == f"{PRICES['version']}+site-7"
    assert table.override_path == str(override)
    after = costs(small_db)
    for c in synth.make_calls(seed=3, n=60):
        if c.model == "gpt-4o-2024-08-06":
            if c.input_tokens is None and c.output_tokens is None:
                assert after[c.span_id] is None
            else:
                fresh = (c.input_tokens or 0) - (c.cache_read or 0)
                # no cached price in the override: cached tokens cost the input price
                assert after[c.span_id] == pytest.approx((fresh + (c.cache_read or 0)) * 100 / 1e6)
        elif c.model == "mystery-model-7b":
            if c.input_tokens is not None:
                assert after[c.span_id] == pytest.approx(
                    ((c.input_tokens or 0) * 1 + (c.output_tokens or 0) * 2) / 1e6
                )
        elif c.gpu_energy_j is not None:
            assert after[c.span_id] == pytest.approx(c.gpu_energy_j / 3.6e6 * 0.36)
        else:
            assert after[c.span_id] == before[c.span_id]


def test_provider_specific_price_wins_and_names_are_matched(tmp_path: Path) -> None:
    db = Database(tmp_path / "m.duckdb")
    calls = synth.make_calls(seed=5, n=4)
    names = [
        "openai/gpt-4o-mini-2024-07-18",
        "GPT-4o-Mini",
        "llama-3.3-70b-versatile",
        "llama-3.3-70b-versatile",
    ]
    providers = ["openai", "openai", "groq", "together"]
    for c, name, provider in zip(calls, names, providers, strict=True):
        c.model, c.provider, c.input_tokens, c.output_tokens = name, provider, 1000, 1000
        c.cache_read, c.gpu_seconds, c.gpu_name = None, None, None
    synth.seed(db, calls)
    override = tmp_path / "o.yaml"
    override.write_text(
        "providers:\n  groq:\n    llama-3.3-70b-versatile: {input: 0.59, output: 0.79}\n"
    )
    load_prices(db, override)
    got = costs(db)
    mini = PRICES["models"]["gpt-4o-mini"]
    assert got[calls[0].span_id] == pytest.approx((mini["input"] + mini["output"]) / 1000)
    assert got[calls[1].span_id] == pytest.approx((mini["input"] + mini["output"]) / 1000)
    assert got[calls[2].span_id] == pytest.approx((0.59 + 0.79) / 1000)
    assert got[calls[3].span_id] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  gpt-4o: {input: -1}\n", "models.gpt-4o.input"),
        ("models:\n  gpt-4o: {inputs: 1}\n", "models.gpt-4o.inputs"),
        ("self_hosted:\n  method: vibes\n", "self_hosted.method"),
        ("currency: EUR\n", "currency"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("models: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_override_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PriceTableError, match=r"bad\.yaml") as info:
        read_price_table(path)
    assert message in str(info.value)


def test_missing_override_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="cannot read"):
        read_price_table(tmp_path / "absent.yaml")


def test_loading_after_lock_down_works(small_db: Database) -> None:
    small_db.lock_down()
    load_prices(small_db)
    assert any(v is not None for v in costs(small_db).values())


@pytest.mark.parametrize(
    ("by", "attr"),
    [
        ("model", "model"),
        ("service", "service"),
        ("namespace", "namespace"),
        ("provider", "provider"),
    ],
)
def test_cost_endpoint_sums(seeded: Seeded, by: str, attr: str) -> None:
    resp = seeded.get("/api/v1/cost", **window(by=by))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["price_version"] == PRICES["version"]
    want: dict[str | None, float] = defaultdict(float)
    calls: dict[str | None, int] = defaultdict(int)
    for c in seeded.calls:
        if 0 <= c.start_s < synth.WINDOW_S:
            key = getattr(c, attr)
            calls[key] += 1
            want[key] += expected_cost(c) or 0.0
    got = {r["key"]: r for r in body["rows"]}
    assert set(got) == set(want)
    for key, total in want.items():
        assert got[key]["cost_usd"] == pytest.approx(total, rel=1e-9)
        assert got[key]["calls"] == calls[key]
    assert body["total_cost_usd"] == pytest.approx(sum(want.values()))
    costs_sorted = [r["cost_usd"] for r in body["rows"]]
    assert costs_sorted == sorted(costs_sorted, reverse=True)


def test_cost_endpoint_errors_and_prices(seeded: Seeded) -> None:
    assert seeded.get("/api/v1/cost", **window(by="colour")).status_code == 400
    prices = seeded.get("/api/v1/cost/prices").json()
    assert prices["settings"]["price_version"] == PRICES["version"]
    assert prices["gpu_usd_per_hour"]["nvidia h100 80gb hbm3"] == pytest.approx(2.99)
    assert {m["model"] for m in prices["models"]} >= {"gpt-4o", "claude-3-5-sonnet"}


def test_runner_sees_cost_of_self_hosted_calls(seeded: Seeded) -> None:
    runner = QueryRunner(seeded.db, 1000, 10)
    rows = runner.run("SELECT count(*) AS n FROM llm_calls WHERE cost_basis = 'gpu_time'")
    assert rows.table.to_pylist()[0]["n"] == sum(
        1 for c in seeded.calls if c.gpu_seconds is not None
    )


def test_gpu_time_on_the_call_itself_and_the_default_gpu_price(tmp_path: Path) -> None:
    """A call whose own span carries GPU time (an in-process model, say) and no GPU name is
    priced at the default GPU-hour price; a server side's GPU time reaches its client call."""
    db = Database(tmp_path / "g.duckdb")
    own, served = synth.make_calls(seed=12, n=2)
    for c in (own, served):
        c.model, c.provider = "local-model", "local"
        c.gpu_seconds, c.gpu_energy_j, c.gpu_name = 7.2, 900.0, None
    own.server_span_id = None
    served.server_span_id, served.server_start_s = "00000000000000aa", served.start_s + 0.001
    served.server_duration_s, served.queue_s = served.duration_s - 0.002, 0.0
    rows = synth.span_rows([own, served])
    for row in rows:
        if row["span_id"] == own.span_id:
            row["infersight_gpu_seconds"], row["infersight_gpu_energy_j"] = 7.2, 900.0
    synth.insert_rows(db, "spans", synth.SPANS_OUT, rows)
    CallRows().refresh(db.cursor())
    load_prices(db)
    got = (
        db.cursor()
        .execute("SELECT span_id, gpu_seconds, gpu_energy_j, cost_usd, cost_basis FROM llm_calls")
        .fetchall()
    )
    default = PRICES["self_hosted"]["default_usd_per_gpu_hour"]
    assert sorted(got) == sorted(
        [
            (own.span_id, 7.2, 900.0, pytest.approx(7.2 / 3600 * default), "gpu_time"),
            (served.span_id, 7.2, 900.0, pytest.approx(7.2 / 3600 * default), "gpu_time"),
        ]
    )
