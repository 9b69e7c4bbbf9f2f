"""Full-text search over captured prompt and response content (`genai_content`).

Takes a `Database` (for building the index) and a `QueryRunner` (for searching); gives ranked
matches (trace and span ids, BM25 score, a snippet, the call's model, service and start).

How it works, and why:
  * DuckDB's `fts` extension comes from the `duckdb-extension-fts` wheel. `load_fts(db)` loads
    it from the wheel's file path; that must happen before `Database.lock_down()`, which forbids
    `LOAD`. Building and rebuilding an index after lock-down works (checked by the tests): the
    `create_fts_index` pragma only creates tables and macros. It does not work inside an explicit
    transaction once the configuration is locked, so each build runs in auto-commit mode.
  * An FTS index in DuckDB is a snapshot: rows added later are not in it. So the text of every
    call (system instructions, input and output messages: every `content`, tool `arguments` and
    tool `response` value) is copied into a document table, one row per span, and indexed.
    Two such tables take turns (slots `a` and `b`): a rebuild fills the idle slot, switches, then
    drops the old one, so a search never sees a half-built index.
  * A search asks the index (all terms must match, Porter stemming, BM25 ranking) and adds the
    content that arrived since the last build, matched by `ILIKE` on every term; those rows
    carry no score. Without the extension (wheel missing, `load_fts` not called) every search is
    `ILIKE` over all content.
  * A search triggers a rebuild in a background thread when the index is older than
    `refresh_interval_s` and the content table has changed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from collector.analytics.params import BadParameterError
from collector.analytics.query import fetch
from collector.api.sql import QueryRunner
from store.database import Database

log = logging.getLogger(__name__)

_SLOTS = ("a", "b")
_DOC_TABLE = "analytics_content_docs_{slot}"
_TERM = re.compile(r"[^\W_]+", re.UNICODE)
MAX_TERMS = 16
SNIPPET_CHARS = 160

#: one text per content row: every string under `content`, `response` and `arguments`
_TEXT_EXPR = """concat_ws(' ',
    array_to_string(json_extract_string(system_instructions, '$..content'), ' '),
    array_to_string(json_extract_string(input_messages, '$..content'), ' '),
    array_to_string(json_extract_string(input_messages, '$..response'), ' '),
    array_to_string(json_extract_string(input_messages, '$..arguments'), ' '),
    array_to_string(json_extract_string(output_messages, '$..content'), ' '),
    array_to_string(json_extract_string(output_messages, '$..arguments'), ' '))"""


def fts_extension_path() -> Path | None:
    """The `fts` extension file inside the installed `duckdb-extension-fts` wheel, if any."""
    import duckdb as _duckdb

    spec = importlib.util.find_spec("duckdb_extension_fts")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    exact = root / "extensions" / f"v{_duckdb.__version__}" / "fts.duckdb_extension"
    if exact.is_file():
        return exact
    found = sorted(root.glob("extensions/*/fts.duckdb_extension"))
    return found[-1] if found else None


def load_fts(db: Database) -> bool:
    """Load the `fts` extension into `db` from the wheel; call before `db.lock_down()`.

    Returns whether it is loaded. A missing wheel or a failed load is logged, not raised: search
    then falls back to `ILIKE`.
    """
    if fts_loaded(db):
        return True
    path = fts_extension_path()
    if path is None:
        log.warning("duckdb-extension-fts is not installed; content search uses ILIKE")
        return False
    try:
        db.connection.execute("LOAD '" + str(path).replace("'", "''") + "'")
    except duckdb.Error as exc:
        log.warning(
            "cannot load the fts extension from %s (%s); content search uses ILIKE", path, exc
        )
        return False
    return fts_loaded(db)


def fts_loaded(db: Database) -> bool:
    """Whether the `fts` extension is loaded in `db`."""
    cur = db.cursor()
    try:
        # duckdb_extensions() lists the extension directory, which lock-down forbids; the
        # extension's `stem` function is visible either way
        row = cur.execute(
            "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'stem'"
        ).fetchone()
        return bool(row and row[0])
    except duckdb.Error:
        return False
    finally:
        cur.close()


def search_terms(query: str) -> list[str]:
    """The words of a query, lower case, at most `MAX_TERMS`."""
    terms = [t.lower() for t in _TERM.findall(query)]
    if not terms:
        raise BadParameterError("q: give at least one word to search for")
    if len(terms) > MAX_TERMS:
        raise BadParameterError(f"q: at most {MAX_TERMS} words")
    return terms


@dataclass(frozen=True, slots=True)
class IndexState:
    """The index searches use now."""

    slot: str
    built_time: datetime | None
    content_rows: int
    docs: int
    build_s: float


class ContentSearch:
    """Owns the FTS index over `genai_content` and answers searches."""

    def __init__(self, db: Database, *, refresh_interval_s: float = 60.0) -> None:
        self._db = db
        self.refresh_interval_s = refresh_interval_s
        self._lock = threading.Lock()
        self._building = threading.Lock()
        self._state: IndexState | None = None
        self._state_read = False
        self._last_check_mono = 0.0
        self.rebuilds = 0

    # -- index ---------------------------------------------------------------------------

    def _read_state(self) -> IndexState | None:
        cur = self._db.cursor()
        try:
            row = cur.execute(
                "SELECT slot, built_time, content_rows, docs, build_s "
                "FROM analytics_search_state WHERE id = 1"
            ).fetchone()
            if row is None or row[0] not in _SLOTS:
                return None
            schema = "fts_main_" + _DOC_TABLE.format(slot=row[0])
            exists = cur.execute(
                "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = ?", [schema]
            ).fetchone()
            if not exists or not exists[0]:
                return None
            return IndexState(
                row[0], row[1], int(row[2] or 0), int(row[3] or 0), float(row[4] or 0.0)
            )
        finally:
            cur.close()

    def state(self) -> IndexState | None:
        """The current index, or None when none was built (or the extension is missing)."""
        with self._lock:
            if not self._state_read:
                self._state = self._read_state()
                self._state_read = True
            return self._state

    def refresh(self) -> IndexState | None:
        """Rebuild the index now from all of `genai_content`; None without the extension."""
        if not fts_loaded(self._db):
            return None
        with self._building:
            current = self.state()
            slot = "b" if current is not None and current.slot == "a" else "a"
            other = "a" if slot == "b" else "b"
            table = _DOC_TABLE.format(slot=slot)
            started = time.monotonic()
            cur = self._db.cursor()
            try:
                rows_row = cur.execute("SELECT count(*) FROM genai_content").fetchone()
                content_rows = int(rows_row[0]) if rows_row else 0
                cur.execute(
                    f"CREATE OR REPLACE TABLE {table} AS "
                    "SELECT trace_id || ':' || span_id AS doc_key, trace_id, span_id, "
                    "max(time) AS time, string_agg(txt, ' ') AS text "
                    f"FROM (SELECT trace_id, span_id, time, {_TEXT_EXPR} AS txt "
                    "      FROM genai_content) "
                    "GROUP BY trace_id, span_id"
                )
                cur.execute(f"PRAGMA create_fts_index('{table}', 'doc_key', 'text', overwrite=1)")
                docs_row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
                docs = int(docs_row[0]) if docs_row else 0
                build_s = time.monotonic() - started
                cur.execute(
                    "INSERT OR REPLACE INTO analytics_search_state VALUES (1, ?, now(), ?, ?, ?)",
                    [slot, content_rows, docs, build_s],
                )
                built = cur.execute(
                    "SELECT built_time FROM analytics_search_state WHERE id = 1"
                ).fetchone()
                state = IndexState(slot, built[0] if built else None, content_rows, docs, build_s)
                with self._lock:
                    self._state = state
                    self._state_read = True
                self.rebuilds += 1
                self._drop_slot(cur, other)
                log.info("content index rebuilt: %d documents in %.2f s", docs, build_s)
                return state
            finally:
                cur.close()

    @staticmethod
    def _drop_slot(cur: duckdb.DuckDBPyConnection, slot: str) -> None:
        table = _DOC_TABLE.format(slot=slot)
        exists = cur.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
        ).fetchone()
        if exists and exists[0]:
            with contextlib.suppress(duckdb.Error):
                cur.execute(f"PRAGMA drop_fts_index('{table}')")
            cur.execute(f"DROP TABLE IF EXISTS {table}")

    def _content_rows(self) -> int:
        cur = self._db.cursor()
        try:
            row = cur.execute("SELECT count(*) FROM genai_content").fetchone()
            return int(row[0]) if row else 0
        finally:
            cur.close()

    def refresh_if_stale(self, *, wait: bool = False) -> None:
        """Start a rebuild when the index is older than the interval and content changed."""
        now = time.monotonic()
        if now - self._last_check_mono < min(5.0, self.refresh_interval_s):
            return
        self._last_check_mono = now
        state = self.state()
        if state is not None:
            age_s = (
                time.time() - state.built_time.timestamp()
                if state.built_time is not None
                else float("inf")
            )
            if age_s < self.refresh_interval_s or self._content_rows() == state.content_rows:
                return
        if self._building.locked() or not fts_loaded(self._db):
            return
        if wait:
            self.refresh()
            return

        def run() -> None:
            try:
                self.refresh()
            except duckdb.Error as exc:
                log.warning("content index rebuild failed: %s", exc)

        threading.Thread(target=run, name="infersight-fts-rebuild", daemon=True).start()

    # -- search --------------------------------------------------------------------------

    def search(
        self,
        runner: QueryRunner,
        query: str,
        *,
        limit: int = 50,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        """Calls whose content matches every word of `query`, best first."""
        terms = search_terms(query)
        self.refresh_if_stale()
        state = self.state() if fts_loaded(self._db) else None
        try:
            rows = self._run(runner, terms, state, limit, start, end)
            mode = "fts" if state is not None else "ilike"
        except BadParameterError:
            raise
        except Exception as exc:  # an index swapped mid-query: answer anyway
            if state is None:
                raise
            log.info("search through the index failed (%s); using ILIKE", exc)
            rows = self._run(runner, terms, None, limit, start, end)
            mode = "ilike"
        for row in rows:
            row["snippet"] = snippet(row.pop("text") or "", terms)
        return {
            "query": query,
            "terms": terms,
            "mode": mode,
            "index": None
            if state is None
            else {
                "built_time": state.built_time.isoformat() if state.built_time else None,
                "docs": state.docs,
            },
            "results": rows,
        }

    @staticmethod
    def _run(
        runner: QueryRunner,
        terms: list[str],
        state: IndexState | None,
        limit: int,
        start: datetime | None,
        end: datetime | None,
    ) -> list[dict[str, Any]]:
        params: list[Any] = []
        like = " AND ".join("t.text ILIKE ?" for _ in terms)
        like_params = [f"%{t}%" for t in terms]
        time_filter = ""
        time_params: list[Any] = []
        if start is not None:
            time_filter += " AND t.time >= ?"
            time_params.append(start)
        if end is not None:
            time_filter += " AND t.time < ?"
            time_params.append(end)

        def tail_source(unindexed_of: str | None) -> str:
            # leave out what the index holds before extracting any text: the tail stays cheap
            where = (
                ""
                if unindexed_of is None
                else f"WHERE NOT EXISTS (SELECT 1 FROM {unindexed_of} d "
                "WHERE d.trace_id = g.trace_id AND d.span_id = g.span_id) "
            )
            return (
                "SELECT trace_id, span_id, max(time) AS time, "
                f"string_agg({_TEXT_EXPR}, ' ') AS text FROM genai_content g {where}"
                "GROUP BY trace_id, span_id"
            )

        if state is None:
            matches = (
                f"SELECT t.trace_id, t.span_id, CAST(NULL AS DOUBLE) AS score, t.time, t.text "
                f"FROM ({tail_source(None)}) t WHERE {like}{time_filter}"
            )
            params.extend(like_params + time_params)
        else:
            table = _DOC_TABLE.format(slot=state.slot)
            matches = (
                f"SELECT t.trace_id, t.span_id, t.score, t.time, t.text FROM ("
                f"  SELECT d.*, fts_main_{table}.match_bm25(d.doc_key, ?, conjunctive := 1) "
                f"  AS score FROM {table} d) t "
                f"WHERE t.score IS NOT NULL{time_filter} "
                "UNION ALL "
                f"SELECT t.trace_id, t.span_id, CAST(NULL AS DOUBLE), t.time, t.text "
                f"FROM ({tail_source(table)}) t "
                f"WHERE {like}{time_filter}"
            )
            params.extend([" ".join(terms), *time_params, *like_params, *time_params])
        params.append(limit)
        rows = fetch(
            runner,
            f"SELECT m.trace_id, m.span_id, m.score, m.time, m.text FROM ({matches}) m "
            "ORDER BY m.score DESC NULLS LAST, m.time DESC NULLS LAST, m.trace_id, m.span_id "
            "LIMIT ?",
            params,
        )
        if not rows:
            return rows
        # the calls of the hits only: a filter on the span keys, not a join with every call
        calls = {
            (c["trace_id"], c["span_id"]): c
            for c in fetch(
                runner,
                "SELECT trace_id, span_id, model, service_name, start_time, status, "
                "duration_s, prompt_fingerprint FROM llm_calls "
                "WHERE list_contains(?, trace_id || ':' || span_id)",
                [[f"{r['trace_id']}:{r['span_id']}" for r in rows]],
            )
        }
        for row in rows:
            call = calls.get((row["trace_id"], row["span_id"]), {})
            for key in (
                "model",
                "service_name",
                "start_time",
                "status",
                "duration_s",
                "prompt_fingerprint",
            ):
                row[key] = call.get(key)
        return rows


def snippet(text: str, terms: list[str], width: int = SNIPPET_CHARS) -> str:
    """A window of `text` around the first term found (the start of it when none is)."""
    lowered = text.lower()
    positions = [p for p in (lowered.find(t) for t in terms) if p >= 0]
    if not positions:
        return text[:width]
    centre = min(positions)
    begin = max(0, centre - width // 3)
    piece = text[begin : begin + width]
    return ("…" if begin > 0 else "") + piece + ("…" if begin + width < len(text) else "")
