"""`call_rows` maintained pass by pass equals `call_rows` derived at once from the same store.

Spans (SDK client spans, their eBPF captures, server sides with GPU figures, root spans) and
pairs arrive in commits whose order differs from their `received_time`, some twice (re-sent
exports), some long after their call (late server sides, late pairs); a refresh runs after
every commit. At the end the table must hold exactly what a full derivation gives, and a
restarted refresher must change nothing.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from collector.analytics.cost import load_prices
from store.call_rows import CallRows, CallRowSettings
from store.database import Database
from tests.analytics import synth

PAIRS_SCHEMA = pa.schema(
    [
        ("sdk_trace_id", pa.string()),
        ("sdk_span_id", pa.string()),
        ("capture_trace_id", pa.string()),
        ("capture_span_id", pa.string()),
        ("method", pa.string()),
        ("confidence", pa.float64()),
        ("paired_time", pa.timestamp("us", "UTC")),
        ("sdk_received_time", pa.timestamp("us", "UTC")),
        ("capture_received_time", pa.timestamp("us", "UTC")),
    ]
)


def capture_row(sdk: dict[str, Any], trace_id: str, span_id: str) -> dict[str, Any]:
    """The agent's capture of the call `sdk` describes."""
    row = dict(sdk)
    row.update(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=None if trace_id != sdk["trace_id"] else sdk["span_id"],
        source="ebpf",
        service_name="node-agent",
        attributes='{"http.response.status_code": 200, '
        '"infersight.wire.request_body_bytes": 321, "infersight.wire.response_body_bytes": 654}',
        gen_ai_response_time_to_first_chunk=0.05,
        prompt_fingerprint=None,
    )
    return row


def build(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Span rows and pair rows, each with the simulated time it becomes visible."""
    calls = synth.make_calls(seed=rng.randint(0, 10_000), n=120)
    rows = synth.span_rows(calls)
    by_span = {r["span_id"]: r for r in rows}
    pairs: list[dict[str, Any]] = []
    for i, c in enumerate(calls):
        sdk = by_span[c.span_id]
        if i % 3 == 0:
            continue  # no capture: an SDK-only call
        same_trace = i % 3 == 1
        trace = c.trace_id if same_trace else f"{rng.getrandbits(128):032x}"
        cap = capture_row(sdk, trace, f"{rng.getrandbits(64):016x}")
        rows.append(cap)
        paired = i % 5 != 0  # some captures stay unpaired (source 'ebpf')
        if paired:
            pairs.append(
                {
                    "sdk_trace_id": sdk["trace_id"],
                    "sdk_span_id": sdk["span_id"],
                    "capture_trace_id": cap["trace_id"],
                    "capture_span_id": cap["span_id"],
                    "method": "traceparent" if same_trace else "heuristic",
                    "confidence": 1.0 if same_trace else 0.8,
                }
            )
        if i % 7 == 2:  # a refused first attempt, folded into the call that retried it
            refused = capture_row(
                sdk, f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"
            )
            refused["attributes"] = '{"http.response.status_code": 429}'
            rows.append(refused)
            call = sdk if paired else cap
            pairs.append(
                {
                    "sdk_trace_id": call["trace_id"],
                    "sdk_span_id": call["span_id"],
                    "capture_trace_id": refused["trace_id"],
                    "capture_span_id": refused["span_id"],
                    "method": "retry_digest",
                    "confidence": 0.95,
                }
            )
    return rows, pairs


def arrival_plan(
    rng: random.Random, rows: list[dict[str, Any]], pairs: list[dict[str, Any]]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Commits in visibility order: received times jitter by up to 5 s against commit order,
    a fifth of the span rows are re-sent later, server sides sometimes come a minute late, and
    each pair is committed some seconds after both its spans."""
    clock = synth.BASE + timedelta(hours=1)
    events: list[tuple[datetime, str, dict[str, Any]]] = []
    for i, row in enumerate(rows):
        late = timedelta(seconds=60) if row["kind"] == "server" and rng.random() < 0.3 else 0
        received = clock + timedelta(seconds=i * 0.05) + (late or timedelta())
        visible = received + timedelta(seconds=rng.uniform(0, 5))
        events.append((visible, "spans", {**row, "received_time": received}))
        if rng.random() < 0.2:
            again = received + timedelta(seconds=rng.uniform(1, 20))
            events.append((again + timedelta(seconds=1), "spans", {**row, "received_time": again}))
    received_of: dict[str, datetime] = {}
    for visible, _, row in events:
        received_of.setdefault(row["span_id"], visible)
    for p in pairs:
        both = max(received_of[p["sdk_span_id"]], received_of[p["capture_span_id"]])
        paired = both + timedelta(seconds=rng.uniform(0.5, 40))
        events.append(
            (
                paired,
                "span_pairs",
                {
                    **p,
                    "paired_time": paired,
                    "sdk_received_time": received_of[p["sdk_span_id"]] - timedelta(seconds=5),
                    "capture_received_time": received_of[p["capture_span_id"]]
                    - timedelta(seconds=5),
                },
            )
        )
    events.sort(key=lambda e: e[0])
    commits: list[tuple[str, list[dict[str, Any]]]] = []
    for _, table, row in events:
        if commits and commits[-1][0] == table and len(commits[-1][1]) < rng.randint(1, 12):
            commits[-1][1].append(row)
        else:
            commits.append((table, [row]))
    return commits


def insert(db: Database, table: str, rows: list[dict[str, Any]]) -> None:
    schema = synth.SPANS_OUT if table == "spans" else PAIRS_SCHEMA
    synth.insert_rows(db, table, schema, rows)


def table_rows(db: Database) -> list[tuple[Any, ...]]:
    """The calls, then the per-fingerprint summary kept beside them."""
    cur = db.cursor()
    calls = cur.execute("SELECT * FROM call_rows ORDER BY ALL").fetchall()
    prompts = cur.execute("SELECT * FROM prompt_fingerprints ORDER BY ALL").fetchall()
    return [*calls, ("prompts", *prompts)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_equals_full_derivation(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    rows, pairs = build(rng)
    commits = arrival_plan(rng, rows, pairs)
    live = Database(tmp_path / "live.duckdb")
    load_prices(live)  # calls are priced as they are derived
    refresher = CallRows(CallRowSettings(overlap_s=30, join_window_s=300))
    cur = live.cursor()
    touched = 0
    for i, (table, batch) in enumerate(commits):
        insert(live, table, batch)
        if i % 3 == 0 or i == len(commits) - 1:  # passes see one or several commits
            touched += refresher.refresh(cur).traces
    assert touched > 0

    full = Database(tmp_path / "full.duckdb")
    for table, batch in commits:
        insert(full, table, batch)
    written = CallRows().rebuild(full.cursor())
    assert CallRows().reprice(full.cursor(), "test") == written  # prices loaded only now
    load_prices(full)

    got, want = table_rows(live), table_rows(full)
    assert len(want) - 1 == written
    assert got == want
    with_fp = (
        live.cursor()
        .execute("SELECT count(*) FROM call_rows WHERE prompt_fingerprint IS NOT NULL")
        .fetchone()
    )
    assert with_fp is not None
    assert with_fp[0] > 0
    assert sum(p[3] for p in got[-1][1:]) == with_fp[0]  # every call counted once
    # one row per call: SDK spans, plus captures no pair claimed
    n_sdk = sum(1 for r in rows if r["source"] == "sdk" and r["kind"] == "client")
    n_captures = sum(1 for r in rows if r["source"] == "ebpf")
    n_lone = n_captures - len(pairs)  # a pair and a folded retry each hide a capture
    n_paired = sum(1 for p in pairs if not p["method"].startswith("retry"))
    assert n_paired < len(pairs)
    assert len(got) - 1 == n_sdk + n_lone
    priced = live.cursor().execute("SELECT count(cost_usd) FROM llm_calls").fetchone()
    assert priced is not None
    assert priced[0] > len(got) // 2
    sources = dict(
        live.cursor().execute("SELECT source, count(*) FROM llm_calls GROUP BY ALL").fetchall()
    )
    assert sources == {"both": n_paired, "sdk": n_sdk - n_paired, "ebpf": n_lone}
    # every capture is counted once: as a row's own exchange or as a folded attempt
    attempts = live.cursor().execute("SELECT sum(attempts), max(attempts) FROM llm_calls")
    assert attempts.fetchone() == (n_captures, 2)

    # nothing new: a pass changes nothing, and neither does a restarted refresher
    assert refresher.refresh(cur).rows_inserted == 0
    again = CallRows(CallRowSettings(overlap_s=30, join_window_s=300)).refresh(live.cursor())
    assert again.traces > 0  # it re-derives the overlap window once...
    assert table_rows(live) == want  # ...to the same rows


def test_a_late_server_side_and_a_late_pair_update_their_call(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    refresher = CallRows()
    cur = db.cursor()
    (call,) = synth.make_calls(seed=5, n=1)
    call.server_span_id, call.server_start_s = "00000000000000cc", call.start_s + 0.001
    call.server_duration_s, call.gpu_seconds, call.gpu_energy_j = 0.5, 2.0, 300.0
    root, client, server = synth.span_rows([call])
    t0 = synth.BASE + timedelta(hours=2)
    insert(db, "spans", [{**root, "received_time": t0}, {**client, "received_time": t0}])
    refresher.refresh(cur)
    before = cur.execute("SELECT gpu_seconds, server_duration_s, source FROM llm_calls").fetchall()
    assert before == [(None, None, "sdk")]

    insert(db, "spans", [{**server, "received_time": t0 + timedelta(seconds=90)}])
    refresher.refresh(cur)
    after = cur.execute("SELECT gpu_seconds, server_duration_s, source FROM llm_calls").fetchall()
    assert after == [(2.0, 0.5, "sdk")]

    cap = capture_row(client, call.trace_id, "00000000000000dd")
    insert(db, "spans", [{**cap, "received_time": t0 + timedelta(seconds=91)}])
    refresher.refresh(cur)
    assert cur.execute("SELECT count(*) FROM llm_calls").fetchone() == (2,)
    pair = {
        "sdk_trace_id": call.trace_id,
        "sdk_span_id": call.span_id,
        "capture_trace_id": call.trace_id,
        "capture_span_id": "00000000000000dd",
        "method": "traceparent",
        "confidence": 1.0,
        "paired_time": t0 + timedelta(minutes=4),
        "sdk_received_time": t0,
        "capture_received_time": t0 + timedelta(seconds=91),
    }
    insert(db, "span_pairs", [pair])
    refresher.refresh(cur)
    got = cur.execute(
        "SELECT span_id, source, pair_method, http_status_code, wire_request_bytes FROM llm_calls"
    ).fetchall()
    assert got == [(call.span_id, "both", "traceparent", 200, 321)]


def test_migration_fills_call_rows_from_an_older_file(tmp_path: Path) -> None:
    """A file at schema version 4 (llm_calls derived at query time) gets its calls copied."""
    import duckdb

    from store.database import bundled_migrations

    path = tmp_path / "v4.duckdb"
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        "CREATE TABLE infersight_schema (version INTEGER PRIMARY KEY, name VARCHAR,"
        " applied_time TIMESTAMPTZ)"
    )
    for m in bundled_migrations()[:4]:
        con.execute(m.sql)
        con.execute("INSERT INTO infersight_schema VALUES (?, ?, now())", [m.version, m.name])
    calls = synth.make_calls(seed=9, n=30)
    batch = pa.Table.from_pylist(synth.span_rows(calls), schema=synth.SPANS_OUT)
    con.register("b", batch)
    con.execute("INSERT INTO spans BY NAME SELECT * FROM b")
    old = con.execute("SELECT * FROM llm_calls ORDER BY ALL").fetchall()
    con.close()

    db = Database(path)
    assert db.schema_version() >= 6
    cur = db.cursor()
    # the columns of version 4 unchanged; `attempts` (version 6) after them
    assert cur.execute("SELECT * EXCLUDE (attempts) FROM llm_calls ORDER BY ALL").fetchall() == old
    assert len(old) == 30
    attempts = cur.execute(
        "SELECT source, list(DISTINCT attempts) FROM llm_calls GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert attempts
    assert all(got == ([None] if source == "sdk" else [1]) for source, got in attempts), attempts


def test_a_span_the_node_agent_merged_shows_its_wire_side(tmp_path: Path) -> None:
    """The agent pairs on the node and sends one span (source 'both', wire fields among its
    attributes): its row carries them as a collector-made pair would."""
    db = Database(tmp_path / "n.duckdb")
    (call,) = synth.make_calls(seed=6, n=1)
    root, client = synth.span_rows([call])[:2]
    merged = {
        **client,
        "source": "both",
        "gen_ai_response_time_to_first_chunk": None,
        "attributes": '{"infersight.source": "both", "infersight.pair.method": "traceparent",'
        ' "infersight.pair.confidence": 1.0, "infersight.wire.duration_s": 0.75,'
        ' "infersight.wire.time_to_first_chunk_s": 0.125, "http.response.status_code": 429,'
        ' "infersight.wire.request_body_bytes": 11, "infersight.wire.response_body_bytes": 22}',
        "received_time": synth.BASE + timedelta(hours=3),
    }
    insert(db, "spans", [{**root, "received_time": merged["received_time"]}, merged])
    cur = db.cursor()
    CallRows().refresh(cur)
    got = cur.execute(
        "SELECT source, pair_method, pair_confidence, wire_duration_s, wire_ttft_s, ttft_s,"
        " http_status_code, wire_request_bytes, wire_response_bytes FROM llm_calls"
    ).fetchall()
    assert got == [("both", "traceparent", 1.0, 0.75, 0.125, 0.125, 429, 11, 22)]
