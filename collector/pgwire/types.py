"""PostgreSQL types as clients know them, and the one chosen for each DuckDB column type.

Takes DuckDB type names (`str(DuckDBPyType)`, e.g. `TIMESTAMP WITH TIME ZONE`, `VARCHAR[]`,
`DECIMAL(10,2)`, `STRUCT(a INTEGER)`); gives a `ColumnType`: the PostgreSQL OID, type length
and the encoding family used by `collector.pgwire.encode`. Only built-in OIDs are used, so no
client ever has to introspect `pg_type` to decode a result. Must not: invent OIDs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PgType:
    """A built-in PostgreSQL type: OID, name, `typlen` (-1 for variable length), array OID."""

    oid: int
    name: str
    size: int
    array_oid: int


BOOL = PgType(16, "bool", 1, 1000)
BYTEA = PgType(17, "bytea", -1, 1001)
NAME = PgType(19, "name", 64, 1003)
INT8 = PgType(20, "int8", 8, 1016)
INT2 = PgType(21, "int2", 2, 1005)
INT4 = PgType(23, "int4", 4, 1007)
TEXT = PgType(25, "text", -1, 1009)
OID = PgType(26, "oid", 4, 1028)
JSON = PgType(114, "json", -1, 199)
FLOAT4 = PgType(700, "float4", 4, 1021)
FLOAT8 = PgType(701, "float8", 8, 1022)
UNKNOWN = PgType(705, "unknown", -2, 0)
BPCHAR = PgType(1042, "bpchar", -1, 1014)
VARCHAR = PgType(1043, "varchar", -1, 1015)
DATE = PgType(1082, "date", 4, 1182)
TIME = PgType(1083, "time", 8, 1183)
TIMESTAMP = PgType(1114, "timestamp", 8, 1115)
TIMESTAMPTZ = PgType(1184, "timestamptz", 8, 1185)
INTERVAL = PgType(1186, "interval", 16, 1187)
TIMETZ = PgType(1266, "timetz", 12, 1270)
NUMERIC = PgType(1700, "numeric", -1, 1231)
UUID = PgType(2950, "uuid", 16, 2951)
JSONB = PgType(3802, "jsonb", -1, 3807)

SCALARS: tuple[PgType, ...] = (
    BOOL, BYTEA, NAME, INT8, INT2, INT4, TEXT, OID, JSON, FLOAT4, FLOAT8, BPCHAR, VARCHAR,
    DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ, NUMERIC, UUID, JSONB,
)  # fmt: skip
BY_OID: dict[int, PgType] = {t.oid: t for t in SCALARS}
#: Array OID -> element type.
ARRAY_ELEMENT: dict[int, PgType] = {t.array_oid: t for t in SCALARS}


@dataclass(frozen=True, slots=True)
class ColumnType:
    """How one result column goes on the wire.

    `family` names the encoder: int, float, decimal, bool, text, bytea, date, time, timestamp,
    timestamptz, interval, uuid, json (DuckDB JSON text), nested (STRUCT/MAP/UNION or lists of
    those, serialized as JSON), array (a list of scalars, with `element`), null.
    """

    pg: PgType
    family: str
    element: ColumnType | None = None

    @property
    def oid(self) -> int:
        return self.pg.array_oid if self.family == "array" else self.pg.oid

    @property
    def size(self) -> int:
        return -1 if self.family == "array" else self.pg.size


_SIMPLE: dict[str, ColumnType] = {
    "BOOLEAN": ColumnType(BOOL, "bool"),
    "TINYINT": ColumnType(INT2, "int"),
    "SMALLINT": ColumnType(INT2, "int"),
    "UTINYINT": ColumnType(INT2, "int"),
    "INTEGER": ColumnType(INT4, "int"),
    "USMALLINT": ColumnType(INT4, "int"),
    "BIGINT": ColumnType(INT8, "int"),
    "UINTEGER": ColumnType(INT8, "int"),
    "UBIGINT": ColumnType(NUMERIC, "decimal"),
    "HUGEINT": ColumnType(NUMERIC, "decimal"),
    "UHUGEINT": ColumnType(NUMERIC, "decimal"),
    "VARINT": ColumnType(NUMERIC, "decimal"),
    "BIGNUM": ColumnType(NUMERIC, "decimal"),
    "FLOAT": ColumnType(FLOAT4, "float"),
    "DOUBLE": ColumnType(FLOAT8, "float"),
    "VARCHAR": ColumnType(TEXT, "text"),
    "BLOB": ColumnType(BYTEA, "bytea"),
    "BIT": ColumnType(TEXT, "text"),
    "DATE": ColumnType(DATE, "date"),
    "TIME": ColumnType(TIME, "time"),
    "TIME_NS": ColumnType(TIME, "time"),
    "TIME WITH TIME ZONE": ColumnType(TEXT, "text"),
    "TIMESTAMP": ColumnType(TIMESTAMP, "timestamp"),
    "TIMESTAMP_S": ColumnType(TIMESTAMP, "timestamp"),
    "TIMESTAMP_MS": ColumnType(TIMESTAMP, "timestamp"),
    "TIMESTAMP_NS": ColumnType(TIMESTAMP, "timestamp"),
    "TIMESTAMP WITH TIME ZONE": ColumnType(TIMESTAMPTZ, "timestamptz"),
    "INTERVAL": ColumnType(INTERVAL, "interval"),
    "UUID": ColumnType(UUID, "uuid"),
    "JSON": ColumnType(JSON, "json"),
    '"NULL"': ColumnType(TEXT, "null"),
    "NULL": ColumnType(TEXT, "null"),
}

_NESTED = ColumnType(JSON, "nested")
_ARRAY_SUFFIX = re.compile(r"^(?P<inner>.*)\[(?P<size>[0-9]*)\]$", re.S)


def column_type(duckdb_type: str) -> ColumnType:
    """The wire type for a DuckDB type name; unknown types travel as text."""
    name = duckdb_type.strip()
    simple = _SIMPLE.get(name.upper())
    if simple is not None:
        return simple
    upper = name.upper()
    if upper.startswith("DECIMAL") or upper.startswith("NUMERIC"):
        return ColumnType(NUMERIC, "decimal")
    if upper.startswith("ENUM(") or upper.startswith("VARCHAR("):
        return ColumnType(TEXT, "text")
    if upper.startswith(("STRUCT(", "MAP(", "UNION(")):
        return _NESTED
    match = _ARRAY_SUFFIX.match(name)
    if match:
        inner = column_type(match.group("inner"))
        if inner.family in ("nested", "array", "null"):
            return _NESTED
        return ColumnType(inner.pg, "array", inner)
    return ColumnType(TEXT, "text")


_PG_NAMES: dict[str, PgType] = {
    "INT": INT4, "INT4": INT4, "INTEGER": INT4, "SIGNED": INT4,
    "INT2": INT2, "SMALLINT": INT2, "TINYINT": INT2, "INT1": INT2,
    "INT8": INT8, "BIGINT": INT8, "LONG": INT8, "UBIGINT": NUMERIC, "HUGEINT": NUMERIC,
    "FLOAT4": FLOAT4, "REAL": FLOAT4, "FLOAT": FLOAT4,
    "FLOAT8": FLOAT8, "DOUBLE": FLOAT8, "DOUBLE PRECISION": FLOAT8,
    "NUMERIC": NUMERIC, "DECIMAL": NUMERIC, "OID": OID, "REGTYPE": OID, "REGCLASS": OID,
    "BOOL": BOOL, "BOOLEAN": BOOL,
    "TEXT": TEXT, "VARCHAR": VARCHAR, "STRING": TEXT, "CHAR": BPCHAR, "BPCHAR": BPCHAR,
    "CHARACTER VARYING": VARCHAR, "NAME": TEXT,
    "BYTEA": BYTEA, "BLOB": BYTEA,
    "DATE": DATE, "TIME": TIME,
    "TIMESTAMP": TIMESTAMP, "TIMESTAMP WITHOUT TIME ZONE": TIMESTAMP,
    "TIMESTAMPTZ": TIMESTAMPTZ, "TIMESTAMP WITH TIME ZONE": TIMESTAMPTZ,
    "INTERVAL": INTERVAL, "UUID": UUID, "JSON": JSON, "JSONB": JSONB,
}  # fmt: skip


def oid_for_cast(type_name: str) -> int:
    """The OID of a type written in SQL (`$1::bigint`); 0 when not a known built-in."""
    name = type_name.strip().upper()
    is_array = name.endswith("[]")
    if is_array:
        name = name[:-2].strip()
    pg = _PG_NAMES.get(name)
    if pg is None:
        return 0
    return pg.array_oid if is_array else pg.oid


#: DuckDB type to substitute for a parameter of a given OID when describing a statement.
DUCKDB_FOR_OID: dict[int, str] = {
    BOOL.oid: "BOOLEAN", BYTEA.oid: "BLOB", INT8.oid: "BIGINT", INT2.oid: "SMALLINT",
    INT4.oid: "INTEGER", TEXT.oid: "VARCHAR", VARCHAR.oid: "VARCHAR", BPCHAR.oid: "VARCHAR",
    NAME.oid: "VARCHAR", OID.oid: "BIGINT", JSON.oid: "JSON", JSONB.oid: "JSON",
    FLOAT4.oid: "FLOAT", FLOAT8.oid: "DOUBLE", DATE.oid: "DATE", TIME.oid: "TIME",
    TIMESTAMP.oid: "TIMESTAMP", TIMESTAMPTZ.oid: "TIMESTAMPTZ", INTERVAL.oid: "INTERVAL",
    NUMERIC.oid: "DECIMAL(38,10)", UUID.oid: "UUID", UNKNOWN.oid: "VARCHAR",
}  # fmt: skip


def duckdb_type_for_oid(oid: int) -> str:
    """A DuckDB type for a parameter OID (arrays become lists); VARCHAR when unknown."""
    if oid in DUCKDB_FOR_OID:
        return DUCKDB_FOR_OID[oid]
    element = ARRAY_ELEMENT.get(oid)
    if element is not None and element.oid in DUCKDB_FOR_OID:
        return DUCKDB_FOR_OID[element.oid] + "[]"
    return "VARCHAR"
