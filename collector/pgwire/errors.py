"""Errors as PostgreSQL clients expect them: a SQLSTATE, a severity and a one-line message.

Takes DuckDB exceptions (or the endpoint's own refusals); gives `PgError` values that the server
turns into ErrorResponse messages. DuckDB's multi-line messages are split: the first line is the
message, the rest (the `LINE 1: ...` pointer, candidate bindings) becomes the detail.
Must not: leak Python tracebacks to clients.
"""

from __future__ import annotations

import re

import duckdb

# SQLSTATE codes used by the endpoint (PostgreSQL Appendix A).
SYNTAX_ERROR = "42601"
UNDEFINED_TABLE = "42P01"
UNDEFINED_COLUMN = "42703"
UNDEFINED_FUNCTION = "42883"
UNDEFINED_OBJECT = "42704"
INVALID_SCHEMA_NAME = "3F000"
INSUFFICIENT_PRIVILEGE = "42501"
FEATURE_NOT_SUPPORTED = "0A000"
QUERY_CANCELED = "57014"
INTERNAL_ERROR = "XX000"
PROTOCOL_VIOLATION = "08P01"
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"
TOO_MANY_CONNECTIONS = "53300"
OUT_OF_MEMORY = "53200"
INVALID_TEXT_REPRESENTATION = "22P02"
NUMERIC_OUT_OF_RANGE = "22003"
INVALID_PARAMETER_VALUE = "22023"
DATATYPE_MISMATCH = "42804"
SYNTAX_OR_ACCESS = "42000"
DUPLICATE_PSTATEMENT = "42P05"
DUPLICATE_CURSOR = "42P03"
INVALID_SQL_STATEMENT_NAME = "26000"
INVALID_CURSOR_NAME = "34000"
IN_FAILED_TRANSACTION = "25P02"
IO_ERROR = "58030"
SERIALIZATION_FAILURE = "40001"
INTEGRITY_VIOLATION = "23000"
UNDEFINED_PARAMETER = "42P02"
ADMIN_SHUTDOWN = "57P01"
PROGRAM_LIMIT_EXCEEDED = "54000"


class PgError(Exception):
    """An error to send to the client as an ErrorResponse."""

    def __init__(
        self,
        sqlstate: str,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
        severity: str = "ERROR",
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint
        self.severity = severity


_CLASS_STATES: tuple[tuple[type[BaseException], str], ...] = (
    (duckdb.ParserException, SYNTAX_ERROR),
    (duckdb.PermissionException, INSUFFICIENT_PRIVILEGE),
    (duckdb.InterruptException, QUERY_CANCELED),
    (duckdb.ConversionException, INVALID_TEXT_REPRESENTATION),
    (duckdb.OutOfRangeException, NUMERIC_OUT_OF_RANGE),
    (duckdb.NotImplementedException, FEATURE_NOT_SUPPORTED),
    (duckdb.OutOfMemoryException, OUT_OF_MEMORY),
    (duckdb.IOException, IO_ERROR),
    (duckdb.TransactionException, SERIALIZATION_FAILURE),
    (duckdb.ConstraintException, INTEGRITY_VIOLATION),
    (duckdb.TypeMismatchException, DATATYPE_MISMATCH),
)

_MESSAGE_STATES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?:Scalar|Aggregate|Macro|Table) Function with name .* does not exist|"
                r"No function matches", re.I), UNDEFINED_FUNCTION),
    (re.compile(r"Table with name .* does not exist|Catalog with name .* does not exist|"
                r"Table .* does not exist", re.I), UNDEFINED_TABLE),
    (re.compile(r"Referenced column .* not found|column .* does not exist|"
                r"Referenced table .* not found", re.I), UNDEFINED_COLUMN),
    (re.compile(r"Schema with name .* does not exist", re.I), INVALID_SCHEMA_NAME),
    (re.compile(r"Type with name .* does not exist", re.I), UNDEFINED_OBJECT),
    (re.compile(r"configuration has been locked|disabled by configuration|"
                r"Permission Error|external access", re.I), INSUFFICIENT_PRIVILEGE),
    (re.compile(r"unrecognized configuration parameter", re.I), UNDEFINED_OBJECT),
)  # fmt: skip


def from_duckdb(exc: BaseException) -> PgError:
    """The PgError for a DuckDB exception (XX000 when nothing more precise fits)."""
    text = str(exc).strip() or type(exc).__name__
    first, _, rest = text.partition("\n")
    detail = rest.strip() or None
    state: str | None = None
    if isinstance(exc, duckdb.InterruptException):
        return PgError(QUERY_CANCELED, "canceling statement due to user request")
    for pattern, code in _MESSAGE_STATES:
        if pattern.search(first):
            state = code
            break
    if state is None:
        for cls, code in _CLASS_STATES:
            if isinstance(exc, cls):
                state = code
                break
    if state is None:
        if isinstance(exc, duckdb.BinderException | duckdb.CatalogException):
            state = SYNTAX_OR_ACCESS
        elif isinstance(exc, duckdb.InvalidInputException):
            state = INVALID_PARAMETER_VALUE
        else:
            state = INTERNAL_ERROR
    return PgError(state, first, detail=detail)
