"""Full-text search over captured content: FTS from the wheel, built after lock-down, the
ILIKE tail for content newer than the index, persistence, and the fallback without FTS."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from collector.analytics.search import ContentSearch, fts_extension_path, load_fts
from collector.api.app import build_api_app
from store.database import Database
from tests.analytics import synth
from tests.analytics.conftest import ServedApp, make_state


@dataclass
class SearchEnv:
    db: Database
    search: ContentSearch
    api: str
    calls: list[synth.Call]

    def find(self, q: str, **params: str | int) -> httpx.Response:
        return httpx.get(f"{self.api}/api/v1/search", params={"q": q, **params}, timeout=60)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SearchEnv]:
    path = tmp_path_factory.mktemp("search") / "store.duckdb"
    db = Database(path)
    assert load_fts(db), "duckdb-extension-fts must be installed (a project dependency)"
    calls = synth.make_calls(seed=11, n=200)
    synth.seed(db, calls)
    db.lock_down()
    state = make_state(db)
    search = ContentSearch(db, refresh_interval_s=3600)
    app = build_api_app(state, search=search)
    with ServedApp(app) as served:
        yield SearchEnv(db, search, served.url, calls)
    db.close()


def text_of(c: synth.Call) -> str:
    return " ".join(t for t in (c.system_text, c.user_text, c.response_text) if t).lower()


def expected(calls: list[synth.Call], *words: str) -> set[tuple[str, str]]:
    return {
        (c.trace_id, c.span_id)
        for c in calls
        if c.system_text is not None and all(w in text_of(c) for w in words)
    }


def keys(body: dict[str, object]) -> set[tuple[str, str]]:
    results = body["results"]
    assert isinstance(results, list)
    return {(r["trace_id"], r["span_id"]) for r in results}


def test_wheel_provides_the_extension() -> None:
    path = fts_extension_path()
    assert path is not None
    assert path.name == "fts.duckdb_extension"


def test_index_built_after_lock_down_answers_like_python(env: SearchEnv) -> None:
    state = env.search.refresh()
    assert state is not None
    assert state.docs == sum(1 for c in env.calls if c.system_text is not None)
    resp = env.find("penguin volcano", limit=500)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "fts"
    want = expected(env.calls, "penguin", "volcano")
    assert want
    assert keys(body) == want
    scores = [r["score"] for r in body["results"]]
    assert all(s is not None for s in scores)
    assert scores == sorted(scores, reverse=True)
    first = body["results"][0]
    assert "penguin" in first["snippet"].lower() or "volcano" in first["snippet"].lower()
    call = next(
        c for c in env.calls if (c.trace_id, c.span_id) == (first["trace_id"], first["span_id"])
    )
    assert first["model"] == call.model
    assert first["prompt_fingerprint"] == call.fingerprint


def test_stemming_finds_other_word_forms(env: SearchEnv) -> None:
    env.search.refresh()
    body = env.find("penguins", limit=500).json()
    assert body["mode"] == "fts"
    assert keys(body) == expected(env.calls, "penguin")


def test_content_newer_than_the_index_is_found_by_the_tail(env: SearchEnv) -> None:
    env.search.refresh()
    fresh = synth.make_calls(seed=99, n=40)
    fresh = [c for c in fresh if c.system_text is not None][:3]
    for c in fresh:
        c.user_text = f"{c.user_text} xylophone"
    synth.seed(env.db, fresh)
    body = env.find("xylophone").json()
    assert body["mode"] == "fts"
    assert keys(body) == {(c.trace_id, c.span_id) for c in fresh}
    assert all(r["score"] is None for r in body["results"])
    before = env.search.state()
    assert before is not None
    after = env.search.refresh()
    assert after is not None
    assert after.slot != before.slot
    assert after.docs == before.docs + 3
    tables = {
        r[0]
        for r in env.db.cursor()
        .execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'analytics_content_docs%'"
        )
        .fetchall()
    }
    assert tables == {f"analytics_content_docs_{after.slot}"}
    body = env.find("xylophone").json()
    assert keys(body) == {(c.trace_id, c.span_id) for c in fresh}
    assert all(r["score"] is not None for r in body["results"])
    env.calls.extend(fresh)


def test_time_filter(env: SearchEnv) -> None:
    end = synth.ts(300)
    body = env.find("refund", end=end.isoformat(), limit=500).json()
    want = {
        k
        for k in expected(env.calls, "refund")
        if next(c for c in env.calls if (c.trace_id, c.span_id) == k).end_s < 300
    }
    assert keys(body) == want


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("", "at least one word"),
        ("?!  --", "at least one word"),
        (" ".join(["w"] * 17), "at most 16"),
    ],
)
def test_bad_queries(env: SearchEnv, q: str, message: str) -> None:
    resp = env.find(q)
    assert resp.status_code == 400
    assert message in resp.json()["error"]


def test_missing_q_is_a_client_error(env: SearchEnv) -> None:
    assert httpx.get(f"{env.api}/api/v1/search", timeout=10).status_code == 422


def test_index_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "restart.duckdb"
    db = Database(path)
    load_fts(db)
    calls = synth.make_calls(seed=4, n=80)
    synth.seed(db, calls)
    search = ContentSearch(db)
    built = search.refresh()
    assert built is not None
    db.close()
    db = Database(path)
    load_fts(db)
    db.lock_down()
    state = make_state(db)
    again = ContentSearch(db, refresh_interval_s=3600)
    current = again.state()
    assert current is not None
    assert current.slot == built.slot
    body = again.search(state.runner, "warranty", limit=500)
    assert body["mode"] == "fts"
    assert again.rebuilds == 0
    assert keys(body) == expected(calls, "warranty")
    db.close()


def test_without_the_extension_search_uses_ilike(tmp_path: Path) -> None:
    db = Database(tmp_path / "plain.duckdb")
    calls = synth.make_calls(seed=8, n=80)
    synth.seed(db, calls)
    db.lock_down()
    state = make_state(db)
    search = ContentSearch(db)
    assert search.refresh() is None
    body = search.search(state.runner, "Shipping", limit=500)
    assert body["mode"] == "ilike"
    assert keys(body) == expected(calls, "shipping")
    db.close()
