"""The SQL text layer: splitting, the documented rewrites, session commands, parameter casts."""

from __future__ import annotations

import duckdb
import pytest

from collector.pgwire.sqltext import (
    SessionCommand,
    cast_params,
    max_param_index,
    parse_session_command,
    rewrite_for_duckdb,
    split_statements,
    substitute_params,
    tokenize,
)

SETTINGS = {"server_version_num": "150000", "search_path": "main"}


def rewrite(sql: str) -> str:
    return rewrite_for_duckdb(sql, SETTINGS, "PostgreSQL 15.0 (test)")


def test_tokenize_round_trips() -> None:
    sql = "SELECT 'a;b' AS \"x;y\", E'it\\'s' -- c;\n/* d; */ FROM t WHERE $1 = $$x;y$$"
    assert "".join(t.text for t in tokenize(sql)) == sql


def test_split_statements() -> None:
    assert split_statements("") == []
    assert split_statements("-- ping") == []
    assert split_statements(" ; ;/* only a comment */;") == []
    assert split_statements("SELECT 1; SELECT ';' AS semi;") == ["SELECT 1", "SELECT ';' AS semi"]
    assert split_statements('SELECT "a;b" FROM t -- x;y\n') == ['SELECT "a;b" FROM t -- x;y']
    assert split_statements("SELECT $tag$;$tag$; SELECT 2") == ["SELECT $tag$;$tag$", "SELECT 2"]


def test_psql_operator_and_collate_rewrites() -> None:
    sql = (
        "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) "
        "'^(spans)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) "
        "AND x::pg_catalog.regtype::pg_catalog.text <> 'pg_catalog.keep'"
    )
    out = rewrite(sql)
    assert "OPERATOR" not in out
    assert "COLLATE" not in out
    assert "c.relname  ~  '^(spans)$'" in out
    assert "pg_catalog." not in out.replace("'pg_catalog.keep'", "")
    assert "x::regtype::text" in out
    assert "'pg_catalog.keep'" in out  # literals are never touched


def test_setting_and_version_rewrites() -> None:
    out = rewrite("SELECT current_setting('server_version_num')::int/100 as version")
    assert out == "SELECT '150000'::int/100 as version"
    assert rewrite("SELECT pg_catalog.current_setting('search_path')") == "SELECT 'main'"
    # Settings the endpoint does not answer stay DuckDB's.
    assert rewrite("SELECT current_setting('threads')") == "SELECT current_setting('threads')"
    assert rewrite("SELECT version()") == "SELECT 'PostgreSQL 15.0 (test)'"
    assert rewrite("SELECT t.version() FROM t") == "SELECT t.version() FROM t"
    assert rewrite("SELECT 'current_setting(''x'')'") == "SELECT 'current_setting(''x'')'"


def test_set_returning_function_aliases() -> None:
    out = rewrite(
        "SELECT s[i] FROM generate_series(array_lower(string_to_array(x, ','), 1), 3) as i, "
        "string_to_array(x, ',') s WHERE i > 0"
    )
    assert "as i(i)" in out
    assert "s(s)" in out
    # Inside the call the scalar string_to_array is left alone.
    assert "array_lower(string_to_array(x, ','), 1)" in out
    # In a select list the function is scalar and keeps its plain alias.
    assert rewrite("SELECT generate_series(1, 3) AS n") == "SELECT generate_series(1, 3) AS n"
    assert rewrite("SELECT * FROM generate_series(1, 3) AS g(n)") == (
        "SELECT * FROM generate_series(1, 3) AS g(n)"
    )
    assert rewrite("SELECT * FROM unnest([1]) WHERE true") == "SELECT * FROM unnest([1]) WHERE true"


def test_rewritten_srf_aliases_work_in_duckdb() -> None:
    con = duckdb.connect()
    sql = rewrite(
        "SELECT i, s[i] FROM generate_series(1, 2) AS i, (SELECT ['a', 'b'] AS s) t ORDER BY i"
    )
    assert con.execute(sql).fetchall() == [(1, "a"), (2, "b")]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("BEGIN", SessionCommand("BEGIN")),
        ("begin transaction isolation level read committed", SessionCommand("BEGIN")),
        ("START TRANSACTION READ ONLY", SessionCommand("BEGIN")),
        ("COMMIT", SessionCommand("COMMIT")),
        ("END", SessionCommand("COMMIT")),
        ("ROLLBACK", SessionCommand("ROLLBACK")),
        ("ROLLBACK TO SAVEPOINT a", SessionCommand("ROLLBACK TO")),
        ("SET extra_float_digits = 3", SessionCommand("SET", "extra_float_digits", "3")),
        ("SET application_name TO 'psql'", SessionCommand("SET", "application_name", "psql")),
        ("SET TIME ZONE 'UTC'", SessionCommand("SET", "timezone", "UTC")),
        ("SET SESSION statement_timeout = '5s'", SessionCommand("SET", "statement_timeout", "5s")),
        ("SET threads = 1", SessionCommand("SET", "threads", "1")),
        ("SET GLOBAL threads = 1", SessionCommand("SET", "threads", "")),
        ("RESET ALL", SessionCommand("RESET", "all")),
        ("SHOW TimeZone", SessionCommand("SHOW", "timezone")),
        ("DISCARD ALL", SessionCommand("DISCARD", "all")),
        ("DEALLOCATE PREPARE s1", SessionCommand("DEALLOCATE", "s1")),
        ("SELECT 1", None),
        ("START spans", None),
        ("-- just a comment", None),
    ],
)
def test_session_commands(sql: str, expected: SessionCommand | None) -> None:
    assert parse_session_command(sql) == expected


def test_parameters() -> None:
    sql = "SELECT $1::bigint, CAST($2 AS timestamp with time zone), $3, $2::text[] WHERE x = $10"
    assert max_param_index(sql) == 10
    assert cast_params(sql) == {1: "BIGINT", 2: "TIMESTAMP WITH TIME ZONE"}
    assert cast_params("SELECT $1::double precision, $2::varchar[]") == {
        1: "DOUBLE PRECISION", 2: "VARCHAR[]",
    }  # fmt: skip
    assert max_param_index("SELECT '$1', \"$2\" -- $3") == 0
    assert substitute_params("SELECT $1, '$1', $2", {1: "CAST(NULL AS INTEGER)"}) == (
        "SELECT CAST(NULL AS INTEGER), '$1', NULL"
    )
