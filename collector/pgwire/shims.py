"""PostgreSQL functions and catalog objects that DuckDB lacks, defined inside DuckDB.

Takes an open `store.database.Database` before `lock_down()`; attaches an in-memory catalog
`infersight_pg` holding schema `pg_shim` with macros (`quote_ident`, `parse_ident`,
`array_lower`, `array_upper`, `string_to_array` as a table, `pg_get_userbyid`, ...) and the
views `pg_extension`, `pg_roles`, `pg_user`; gives the `search_path` value that makes them visible
(`SHIM_SEARCH_PATH`), which the endpoint sets on each of its cursors. Nothing is written to the
store file: the catalog lives in memory and is rebuilt at each start.

Why an attached catalog: temporary macros belong to one connection, and after `lock_down()` no
ATTACH is possible, while a cursor may still set its own `search_path`. DuckDB's `pg_catalog`
schema cannot be extended, so `pg_catalog.` qualifiers are dropped by
`collector.pgwire.sqltext` (rewrite 3).
Must not: run after `lock_down()` (ATTACH is then refused), or touch the store's own schemas.
"""

from __future__ import annotations

from collector.pgwire.types import SCALARS
from store.database import Database

SHIM_CATALOG = "infersight_pg"
SHIM_SCHEMA = "pg_shim"
SHIM_SEARCH_PATH = f"main,{SHIM_CATALOG}.{SHIM_SCHEMA}"
PG_USER_NAME = "infersight"

_S = f"{SHIM_CATALOG}.{SHIM_SCHEMA}"

_CATEGORY = {
    "bool": "B", "bytea": "U", "name": "S", "int8": "N", "int2": "N", "int4": "N", "text": "S",
    "oid": "N", "json": "U", "float4": "N", "float8": "N", "bpchar": "S", "varchar": "S",
    "date": "D", "time": "D", "timestamp": "D", "timestamptz": "D", "interval": "T",
    "timetz": "D", "numeric": "N", "uuid": "U", "jsonb": "U",
}  # fmt: skip


def _pg_type_view() -> str:
    """`pg_type` with the built-in types the endpoint sends, under PostgreSQL's OIDs."""
    rows: list[str] = []
    for t in SCALARS:
        byval = "true" if 0 < t.size <= 8 else "false"
        rows.append(
            f"({t.oid}, '{t.name}', {t.size}, {byval}, '{_CATEGORY.get(t.name, 'U')}', 0, "
            f"{t.array_oid})"
        )
        rows.append(f"({t.array_oid}, '_{t.name}', -1, false, 'A', {t.oid}, 0)")
    rows.append("(1560, 'bit', -1, false, 'V', 0, 1561)")
    rows.append("(705, 'unknown', -2, false, 'X', 0, 0)")
    values = ",\n            ".join(rows)
    return f"""CREATE OR REPLACE VIEW {_S}.pg_type AS
        SELECT CAST(oid AS BIGINT) AS oid, typname, CAST(11 AS BIGINT) AS typnamespace,
               10 AS typowner, CAST(typlen AS BIGINT) AS typlen, typbyval, 'b' AS typtype,
               typcategory, false AS typispreferred, true AS typisdefined, ',' AS typdelim,
               0 AS typrelid, 0 AS typsubscript, CAST(typelem AS BIGINT) AS typelem,
               CAST(typarray AS BIGINT) AS typarray, 0 AS typinput, 0 AS typoutput,
               0 AS typreceive, 0 AS typsend, 0 AS typmodin, 0 AS typmodout, 0 AS typanalyze,
               'i' AS typalign, 'p' AS typstorage, false AS typnotnull,
               CAST(0 AS BIGINT) AS typbasetype, -1 AS typtypmod, 0 AS typndims,
               CAST(0 AS BIGINT) AS typcollation, CAST(NULL AS VARCHAR) AS typdefaultbin,
               CAST(NULL AS VARCHAR) AS typdefault, CAST(NULL AS VARCHAR[]) AS typacl
        FROM (VALUES
            {values}
        ) AS t(oid, typname, typlen, typbyval, typcategory, typelem, typarray)"""


SHIM_SQL: tuple[str, ...] = (
    # Identifiers that need no quotes are lower-case, start with a letter or _, and are not
    # reserved words; everything else is double-quoted with inner quotes doubled.
    f"""CREATE OR REPLACE MACRO {_S}.quote_ident(name) AS
        CASE WHEN regexp_full_match(name, '[a-z_][a-z0-9_$]*')
                  AND name NOT IN (SELECT keyword_name FROM duckdb_keywords()
                                   WHERE keyword_category = 'reserved')
             THEN name
             ELSE '"' || replace(name, '"', '""') || '"' END""",
    f"""CREATE OR REPLACE MACRO {_S}.quote_literal(value) AS
        '''' || replace(CAST(value AS VARCHAR), '''', '''''') || ''''""",
    # Quoted parts keep their case, unquoted parts fold to lower case, as in PostgreSQL.
    f"""CREATE OR REPLACE MACRO {_S}.parse_ident(name) AS
        list_transform(string_split(name, '.'),
            part -> CASE WHEN part LIKE '"%"' THEN replace(part[2:-2], '""', '"')
                         ELSE lower(trim(part)) END)""",
    f"""CREATE OR REPLACE MACRO {_S}.array_lower(arr, dim) AS
        CASE WHEN dim = 1 AND len(arr) > 0 THEN 1 END""",
    f"""CREATE OR REPLACE MACRO {_S}.array_upper(arr, dim) AS
        CASE WHEN dim = 1 AND len(arr) > 0 THEN len(arr) END""",
    f"""CREATE OR REPLACE MACRO {_S}.string_to_array(str, delim) AS TABLE
        SELECT string_split(str, delim) AS string_to_array""",
    f"CREATE OR REPLACE MACRO {_S}.pg_get_userbyid(role_oid) AS '{PG_USER_NAME}'",
    f"CREATE OR REPLACE MACRO {_S}.pg_encoding_to_char(encoding) AS 'UTF8'",
    f"CREATE OR REPLACE MACRO {_S}.pg_backend_pid() AS 0",
    f"CREATE OR REPLACE MACRO {_S}.pg_total_relation_size(rel) AS CAST(NULL AS BIGINT)",
    f"CREATE OR REPLACE MACRO {_S}.pg_relation_size(rel) AS CAST(NULL AS BIGINT)",
    f"CREATE OR REPLACE MACRO {_S}.pg_table_size(rel) AS CAST(NULL AS BIGINT)",
    f"CREATE OR REPLACE MACRO {_S}.pg_get_triggerdef(trg) AS CAST(NULL AS VARCHAR)",
    f"CREATE OR REPLACE MACRO {_S}.pg_relation_is_publishable(rel) AS false",
    *(
        f"CREATE TYPE IF NOT EXISTS {_S}.{name} AS BIGINT"
        for name in (
            "regclass",
            "regtype",
            "regproc",
            "regprocedure",
            "regnamespace",
            "regrole",
            "regoper",
            "regoperator",
            "regconfig",
            "regdictionary",
        )
    ),
    # psql's \\d reads a few pg_class columns DuckDB does not have.
    f"""CREATE OR REPLACE VIEW {_S}.pg_class AS
        SELECT *, false AS relforcerowsecurity FROM system.pg_catalog.pg_class""",
    # psql's \\l: one row per user database, without DuckDB's internal catalogs.
    f"""CREATE OR REPLACE VIEW {_S}.pg_database AS
        SELECT oid, datname, datallowconn, datistemplate, CAST(10 AS BIGINT) AS datdba,
               6 AS encoding, 'C' AS datcollate, 'C' AS datctype,
               CAST(NULL AS VARCHAR) AS daticulocale, 'c' AS datlocprovider,
               CAST(NULL AS VARCHAR[]) AS datacl, -1 AS datconnlimit
        FROM system.pg_catalog.pg_database
        WHERE datname NOT IN ('system', 'temp', '{SHIM_CATALOG}')""",
    f"CREATE OR REPLACE MACRO {_S}.pg_partition_ancestors(rel) AS rel",
    f"CREATE OR REPLACE MACRO {_S}.pg_get_statisticsobjdef_columns(obj) AS CAST(NULL AS VARCHAR)",
    f"""CREATE OR REPLACE MACRO {_S}.pg_get_expr(node, rel) AS CAST(node AS VARCHAR),
                                 (node, rel, pretty) AS CAST(node AS VARCHAR)""",
    f"""CREATE OR REPLACE MACRO {_S}.pg_get_constraintdef(con) AS CAST(NULL AS VARCHAR),
                                 (con, pretty) AS CAST(NULL AS VARCHAR)""",
    f"""CREATE OR REPLACE MACRO {_S}.pg_get_indexdef(idx) AS CAST(NULL AS VARCHAR),
                                 (idx, col, pretty) AS CAST(NULL AS VARCHAR)""",
    # Catalogs of PostgreSQL features DuckDB lacks: present, with their columns, and empty.
    f"""CREATE OR REPLACE VIEW {_S}.pg_policy AS
        SELECT CAST(NULL AS BIGINT) AS oid, CAST(NULL AS VARCHAR) AS polname,
               CAST(NULL AS BIGINT) AS polrelid, CAST(NULL AS VARCHAR) AS polcmd,
               CAST(NULL AS BOOLEAN) AS polpermissive, CAST(NULL AS BIGINT[]) AS polroles,
               CAST(NULL AS VARCHAR) AS polqual, CAST(NULL AS VARCHAR) AS polwithcheck
        WHERE false""",
    f"""CREATE OR REPLACE VIEW {_S}.pg_inherits AS
        SELECT CAST(NULL AS BIGINT) AS inhrelid, CAST(NULL AS BIGINT) AS inhparent,
               CAST(NULL AS INTEGER) AS inhseqno, CAST(NULL AS BOOLEAN) AS inhdetachpending
        WHERE false""",
    f"""CREATE OR REPLACE VIEW {_S}.pg_trigger AS
        SELECT CAST(NULL AS BIGINT) AS oid, CAST(NULL AS BIGINT) AS tgrelid,
               CAST(NULL AS BIGINT) AS tgparentid, CAST(NULL AS VARCHAR) AS tgname,
               CAST(NULL AS VARCHAR) AS tgenabled, CAST(NULL AS BOOLEAN) AS tgisinternal
        WHERE false""",
    f"""CREATE OR REPLACE VIEW {_S}.pg_statistic_ext AS
        SELECT CAST(NULL AS BIGINT) AS oid, CAST(NULL AS BIGINT) AS stxrelid,
               CAST(NULL AS VARCHAR) AS stxname, CAST(NULL AS BIGINT) AS stxnamespace,
               CAST(NULL AS INTEGER) AS stxstattarget, CAST(NULL AS INTEGER[]) AS stxkeys,
               CAST(NULL AS VARCHAR[]) AS stxkind, CAST(NULL AS VARCHAR) AS stxexprs
        WHERE false""",
    f"""CREATE OR REPLACE VIEW {_S}.pg_publication AS
        SELECT CAST(NULL AS BIGINT) AS oid, CAST(NULL AS VARCHAR) AS pubname,
               CAST(NULL AS BOOLEAN) AS puballtables, CAST(NULL AS BOOLEAN) AS pubviaroot
        WHERE false""",
    f"""CREATE OR REPLACE VIEW {_S}.pg_publication_rel AS
        SELECT CAST(NULL AS BIGINT) AS oid, CAST(NULL AS BIGINT) AS prpubid,
               CAST(NULL AS BIGINT) AS prrelid, CAST(NULL AS VARCHAR) AS prqual,
               CAST(NULL AS INTEGER[]) AS prattrs
        WHERE false""",
    f"""CREATE OR REPLACE VIEW {_S}.pg_publication_namespace AS
        SELECT CAST(NULL AS BIGINT) AS oid, CAST(NULL AS BIGINT) AS pnpubid,
               CAST(NULL AS BIGINT) AS pnnspid
        WHERE false""",
    # Drivers that look types up by OID (asyncpg for arrays, JDBC) need PostgreSQL's OIDs.
    _pg_type_view(),
    f"""CREATE OR REPLACE VIEW {_S}.pg_namespace AS
        SELECT oid, nspname, nspowner, nspacl FROM system.pg_catalog.pg_namespace
        UNION ALL
        SELECT CAST(11 AS BIGINT), 'pg_catalog', 10, CAST(NULL AS INTEGER)""",
    f"""CREATE OR REPLACE VIEW {_S}.pg_range AS
        SELECT CAST(NULL AS BIGINT) AS rngtypid, CAST(NULL AS BIGINT) AS rngsubtype,
               CAST(NULL AS BIGINT) AS rngmultitypid, CAST(NULL AS BIGINT) AS rngcollation,
               CAST(NULL AS BIGINT) AS rngsubopc, CAST(NULL AS VARCHAR) AS rngcanonical,
               CAST(NULL AS VARCHAR) AS rngsubdiff
        WHERE false""",
    # Grafana asks for the timescaledb extension; no row means "not installed".
    f"""CREATE OR REPLACE VIEW {_S}.pg_extension AS
        SELECT CAST(0 AS BIGINT) AS oid, CAST('' AS VARCHAR) AS extname,
               CAST(10 AS BIGINT) AS extowner, CAST(0 AS BIGINT) AS extnamespace,
               false AS extrelocatable, CAST('' AS VARCHAR) AS extversion,
               CAST(NULL AS BIGINT[]) AS extconfig, CAST(NULL AS VARCHAR[]) AS extcondition
        WHERE false""",
    f"""CREATE OR REPLACE VIEW {_S}.pg_roles AS
        SELECT '{PG_USER_NAME}' AS rolname, false AS rolsuper, false AS rolinherit,
               false AS rolcreaterole, false AS rolcreatedb, true AS rolcanlogin,
               false AS rolreplication, false AS rolbypassrls, -1 AS rolconnlimit,
               CAST(NULL AS TIMESTAMPTZ) AS rolvaliduntil, CAST(10 AS BIGINT) AS oid""",
    f"""CREATE OR REPLACE VIEW {_S}.pg_user AS
        SELECT '{PG_USER_NAME}' AS usename, CAST(10 AS BIGINT) AS usesysid,
               false AS usecreatedb, false AS usesuper""",
)


def install_shims(db: Database) -> None:
    """Create the shim catalog on `db` (idempotent). Call before `db.lock_down()`.

    Also pins the database's default TimeZone to UTC for every cursor, so timestamptz
    arithmetic on the endpoint (time_bucket, date_trunc) matches the `+00` it prints.
    """
    con = db.cursor()
    try:
        locked = con.execute("SELECT current_setting('lock_configuration')").fetchone()
        if locked and locked[0]:
            raise RuntimeError(
                "install_shims must run before Database.lock_down(): the configuration is locked"
            )
        con.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {SHIM_CATALOG}")
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {_S}")
        for statement in SHIM_SQL:
            con.execute(statement)
        con.execute("SET GLOBAL TimeZone = 'UTC'")
    finally:
        con.close()


def shims_installed(db: Database) -> bool:
    """Whether `install_shims` has run on this database."""
    con = db.cursor()
    try:
        rows = con.execute(
            "SELECT count(*) FROM duckdb_databases() WHERE database_name = ?", [SHIM_CATALOG]
        ).fetchone()
    finally:
        con.close()
    return bool(rows and rows[0])
