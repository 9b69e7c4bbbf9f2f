"""The PostgreSQL wire-protocol endpoint: an asyncio server in front of a `QueryBackend`.

Takes client connections (TLS via SSLRequest, SCRAM-SHA-256/MD5/cleartext or trust auth) and
their queries over the simple and extended protocols; gives read-only results in PostgreSQL text
or binary format, errors with SQLSTATEs, and answers to the catalog probes Grafana, psql, psycopg,
asyncpg and pgx make. DuckDB work (execution, fetching, row encoding) runs on a thread pool so the
event loop only moves bytes; large results stream batch by batch with socket backpressure.

Read-only by construction: every statement is classified by DuckDB's parser and only SELECT and
EXPLAIN (which include DESCRIBE, SHOW, SUMMARIZE, PIVOT, FROM-first) reach the backend.
Transaction control and harmless session SETs are acknowledged without touching DuckDB.
Must not: run a writing statement, block the event loop on DuckDB, or leave a query running after
its client, its timeout or a CancelRequest ended it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import ssl
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import duckdb

from collector.pgwire import errors as e
from collector.pgwire import protocol as p
from collector.pgwire.auth import (
    SCRAM_MECHANISM,
    AuthFailedError,
    ScramExchange,
    ScramVerifier,
    check_cleartext,
    check_md5,
    is_verifier,
)
from collector.pgwire.backend import BackendSession, Column, QueryBackend, QueryResult
from collector.pgwire.encode import data_rows, text_row
from collector.pgwire.errors import PgError
from collector.pgwire.params import decode
from collector.pgwire.settings import PgWireSettings
from collector.pgwire.sqltext import (
    SessionCommand,
    cast_params,
    max_param_index,
    parse_session_command,
    rewrite_for_duckdb,
    split_statements,
    substitute_params,
)
from collector.pgwire.types import (
    OID,
    TEXT,
    ColumnType,
    column_type,
    duckdb_type_for_oid,
    oid_for_cast,
)

log = logging.getLogger("infersight.pgwire")

T = TypeVar("T")

SERVER_VERSION = "15.0"
SERVER_VERSION_NUM = "150000"
VERSION_TEXT = f"PostgreSQL {SERVER_VERSION} (infersight pgwire on DuckDB {duckdb.__version__})"

_ALLOWED_TYPES = frozenset({"SELECT", "EXPLAIN"})
_UNSUPPORTED_TYPES = frozenset({"PREPARE", "EXECUTE", "RELATION", "LOGICAL_PLAN", "MULTI"})
_FLUSH_BYTES = 256 * 1024

_STATIC_SETTINGS: dict[str, str] = {
    "server_version": SERVER_VERSION,
    "server_version_num": SERVER_VERSION_NUM,
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "datestyle": "ISO, MDY",
    "intervalstyle": "postgres",
    "timezone": "UTC",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "is_superuser": "off",
    "search_path": "main",
    "max_identifier_length": "63",
    "lc_collate": "C",
    "lc_ctype": "C",
    "transaction_isolation": "read committed",
    "default_transaction_isolation": "read committed",
    "transaction_read_only": "on",
    "default_transaction_read_only": "on",
    "in_hot_standby": "off",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "client_min_messages": "notice",
}

# SETs a client may send that change nothing here (the endpoint's behaviour already matches).
_NOOP_SETTINGS = frozenset(
    {
        "extra_float_digits", "client_min_messages", "lock_timeout", "search_path",
        "idle_in_transaction_session_timeout", "idle_session_timeout",
        "default_transaction_isolation", "transaction_isolation",
        "default_transaction_read_only", "transaction_read_only",
        "transaction", "session characteristics", "jit", "row_security", "plan_cache_mode",
        "bytea_output", "intervalstyle", "standard_conforming_strings", "datestyle",
        "client_encoding", "timezone", "application_name", "statement_timeout", "names",
        "default_transaction_deferrable", "synchronous_commit", "work_mem",
    }
)  # fmt: skip
_UTC_NAMES = frozenset({"utc", "etc/utc", "gmt", "etc/gmt", "z", "zulu", "uct", "universal",
                        "+00", "+00:00", "00:00", "0", "default", "local"})  # fmt: skip
_GOOD_ENCODINGS = frozenset({"utf8", "utf-8", "unicode", "default", "auto", "sql_ascii"})


@dataclass(slots=True)
class _Prepared:
    """A parsed statement: empty, a session command, or DuckDB SQL with parameter OIDs."""

    sql: str = ""
    command: SessionCommand | None = None
    empty: bool = False
    param_oids: list[int] = field(default_factory=list)
    columns: list[Column] | None = None
    overrides: dict[str, ColumnType] = field(default_factory=dict)


# asyncpg looks up array types with a fixed recursive query over pg_type; PostgreSQL types its
# OID columns `oid` and `oid[]`, which asyncpg decodes natively, while DuckDB returns BIGINT and
# BIGINT[] (int8[] would need that very lookup again). Those columns are announced as oid types.
_ASYNCPG_TYPE_QUERY_MARK = "typeinfo_tree"
_OID_OVERRIDES = {
    name: ColumnType(OID, "int") for name in ("oid", "basetype", "elemtype", "range_subtype")
} | {"attrtypoids": ColumnType(OID, "array", ColumnType(OID, "int"))}


def _column_types(stmt: _Prepared, columns: Sequence[Column]) -> list[ColumnType]:
    return [stmt.overrides.get(c.name) or column_type(c.duckdb_type) for c in columns]


@dataclass(slots=True)
class _Portal:
    """A bound statement, possibly half-read (PortalSuspended)."""

    stmt: _Prepared
    params: list[Any]
    raw_formats: list[int]
    result: QueryResult | None = None
    types: list[ColumnType] = field(default_factory=list)
    formats: list[int] = field(default_factory=list)
    rows_sent: int = 0
    done: bool = False

    def close(self) -> None:
        if self.result is not None:
            self.result.close()
            self.result = None


# Failures that end the connection rather than the statement.
_CONNECTION_ENDING = (
    p.ProtocolError,
    ConnectionError,
    asyncio.IncompleteReadError,
    ssl.SSLError,
    asyncio.CancelledError,
)


def _as_pg_error(exc: Exception) -> PgError:
    """The error to send for a failed statement; unexpected ones are logged as XX000."""
    if isinstance(exc, PgError):
        return exc
    log.exception("pgwire: internal error while serving a statement")
    return PgError(e.INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}")


def _resolve_formats(raw: Sequence[int], count: int) -> list[int]:
    if not raw:
        return [0] * count
    if len(raw) == 1:
        return [raw[0]] * count
    if len(raw) != count:
        raise PgError(
            e.PROTOCOL_VIOLATION,
            f"bind message has {len(raw)} result formats but query has {count} columns",
        )
    return list(raw)


class _Connection:
    """One client connection, from the startup packet to Terminate."""

    def __init__(
        self, server: PgWireServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.settings = server.settings
        self.reader = reader
        self.writer = writer
        self.pid = server.new_pid()
        self.secret = secrets.randbits(32)
        self.user = ""
        self.application_name = ""
        self.tx = "I"
        self.statements: dict[str, _Prepared] = {}
        self.portals: dict[str, _Portal] = {}
        self.session: BackendSession | None = None
        self.timeout_s = self.settings.statement_timeout_s
        self.skip_until_sync = False
        self.tls = False
        self._out: list[bytes] = []
        self._out_bytes = 0
        self.peer = writer.get_extra_info("peername")

    # -- output --------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_bytes += len(data)

    async def flush(self) -> None:
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
            self._out_bytes = 0
        await self.writer.drain()

    async def maybe_flush(self) -> None:
        if self._out_bytes >= _FLUSH_BYTES:
            await self.flush()

    def send_error(self, error: PgError) -> None:
        self.send(
            p.error_response(
                error.sqlstate,
                error.message,
                severity=error.severity,
                detail=error.detail,
                hint=error.hint,
            )
        )

    async def fatal(self, code: str, text: str) -> None:
        self.send(p.error_response(code, text, severity="FATAL"))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.flush()

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.server.pool, fn, *args)

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        registered = False
        try:
            try:
                ready = await asyncio.wait_for(self.startup(), self.settings.startup_timeout_s)
            except TimeoutError:
                await self.fatal(e.PROTOCOL_VIOLATION, "startup took too long")
                return
            if not ready:
                return
            self.server.register(self)
            registered = True
            await self.loop()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        except p.ProtocolError as exc:
            await self.fatal(e.PROTOCOL_VIOLATION, str(exc))
        except asyncio.CancelledError:
            await self.fatal(e.ADMIN_SHUTDOWN, "terminating connection due to server shutdown")
            raise
        finally:
            if registered:
                self.server.unregister(self)
            for portal in self.portals.values():
                portal.close()
            self.portals.clear()
            if self.session is not None:
                session = self.session
                self.session = None
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        self.server.pool, session.close
                    )
                except RuntimeError:  # the pool is already shut down: close inline
                    session.close()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def startup(self) -> bool:
        """Negotiate TLS, read the StartupMessage, authenticate; True when ready for queries."""
        limit = self.settings.max_message_bytes
        while True:
            code, body = await p.read_startup(self.reader, limit)
            if code == p.SSL_REQUEST:
                if self.tls or self.server.ssl_context is None:
                    self.writer.write(b"N")
                    await self.writer.drain()
                    continue
                self.writer.write(b"S")
                await self.writer.drain()
                await self.writer.start_tls(self.server.ssl_context)
                self.tls = True
                continue
            if code == p.GSSENC_REQUEST:
                self.writer.write(b"N")
                await self.writer.drain()
                continue
            if code == p.CANCEL_REQUEST:
                if len(body) >= 8:
                    pid, secret = struct.unpack_from("!iI", body)
                    await self.server.cancel(pid, secret)
                return False
            major, minor = code >> 16, code & 0xFFFF
            if major != 3:
                await self.fatal(
                    e.FEATURE_NOT_SUPPORTED,
                    f"unsupported frontend protocol {major}.{minor}: server supports 3.0",
                )
                return False
            params = p.parse_startup_parameters(body)
            unknown_options = [k for k in params if k.startswith("_pq_.")]
            if minor > 0 or unknown_options:
                self.send(p.negotiate_protocol_version(0, unknown_options))
            break
        if self.settings.require_tls and not self.tls:
            await self.fatal(
                e.INVALID_AUTHORIZATION, "TLS is required: connect with sslmode=require"
            )
            return False
        self.user = params.get("user", "")
        self.application_name = params.get("application_name", "")
        if not self.user:
            await self.fatal(e.INVALID_AUTHORIZATION, "no PostgreSQL user name specified")
            return False
        if self.server.connection_count >= self.settings.max_connections:
            await self.fatal(e.TOO_MANY_CONNECTIONS, "sorry, too many clients already")
            return False
        if not await self.authenticate():
            return False
        self.session = await self.blocking(self.server.backend.open_session, self.user)
        self.send(p.auth_ok())
        statuses = {
            "server_version": SERVER_VERSION,
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY",
            "IntervalStyle": "postgres",
            "TimeZone": "UTC",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
            "is_superuser": "off",
            "session_authorization": self.user,
            "application_name": self.application_name,
            "default_transaction_read_only": "on",
            "in_hot_standby": "off",
        }
        for name, value in statuses.items():
            self.send(p.parameter_status(name, value))
        self.send(p.backend_key_data(self.pid, self.secret))
        self.send(p.ready_for_query("I"))
        await self.flush()
        return True

    async def _password_message(self) -> bytes:
        await self.flush()
        kind, payload = await p.read_frame(self.reader, 64 * 1024)
        if kind != b"p":
            raise p.ProtocolError(f"expected a password message, got {kind!r}")
        return payload

    async def authenticate(self) -> bool:
        server = self.server
        if not self.settings.users:
            return True
        secret = self.settings.users.get(self.user)
        method = self.settings.auth_method
        ok = False
        try:
            if method == "scram-sha-256":
                self.send(p.auth_sasl([SCRAM_MECHANISM]))
                first = p.Payload(await self._password_message())
                mechanism = first.cstring()
                if mechanism != SCRAM_MECHANISM:
                    raise AuthFailedError(f"unsupported SASL mechanism {mechanism}")
                size = first.int32()
                exchange = ScramExchange(server.verifier(self.user))
                self.send(p.auth_sasl_continue(exchange.server_first(first.take(size))))
                final = await self._password_message()
                self.send(p.auth_sasl_final(exchange.server_final(final)))
                ok = True
            elif method == "md5":
                salt = secrets.token_bytes(4)
                self.send(p.auth_md5(salt))
                answer = p.Payload(await self._password_message()).cstring()
                ok = check_md5(self.user, secret, salt, answer)
            else:
                self.send(p.auth_cleartext())
                answer = p.Payload(await self._password_message()).cstring()
                ok = check_cleartext(secret, answer)
        except AuthFailedError:
            ok = False
        if not ok:
            log.info(
                "pgwire: password authentication failed for user %r from %s", self.user, self.peer
            )
            await self.fatal(
                e.INVALID_PASSWORD, f'password authentication failed for user "{self.user}"'
            )
        return ok

    # -- message loop --------------------------------------------------------------------------

    async def loop(self) -> None:
        limit = self.settings.max_message_bytes
        handlers: dict[bytes, Callable[[p.Payload], Any]] = {
            b"P": self.on_parse,
            b"B": self.on_bind,
            b"D": self.on_describe,
            b"E": self.on_execute,
            b"C": self.on_close,
        }
        while True:
            kind, payload = await p.read_frame(self.reader, limit)
            if kind == b"X":
                return
            if kind == b"Q":
                await self.simple_query(p.Payload(payload).cstring())
                continue
            if kind == b"S":
                self.skip_until_sync = False
                if self.tx == "I":
                    self.close_portals()
                self.send(p.ready_for_query(self.tx))
                await self.flush()
                continue
            if kind == b"H":
                await self.flush()
                continue
            if self.skip_until_sync:
                continue
            handler = handlers.get(kind)
            try:
                if handler is None:
                    if kind in (b"d", b"c", b"f"):
                        raise PgError(e.PROTOCOL_VIOLATION, "unexpected COPY data")
                    if kind == b"F":
                        raise PgError(e.FEATURE_NOT_SUPPORTED, "function calls are not supported")
                    raise p.ProtocolError(f"invalid frontend message type {kind!r}")
                await handler(p.Payload(payload))
            except _CONNECTION_ENDING:
                raise
            except Exception as exc:
                self.send_error(_as_pg_error(exc))
                self.skip_until_sync = True
                if self.tx == "T":
                    self.tx = "E"
            await self.maybe_flush()

    def close_portals(self) -> None:
        for portal in self.portals.values():
            portal.close()
        self.portals.clear()

    # -- statements ---------------------------------------------------------------------------

    def pg_settings(self) -> dict[str, str]:
        values = dict(_STATIC_SETTINGS)
        values["application_name"] = self.application_name
        values["statement_timeout"] = f"{round(self.timeout_s * 1000)}ms"
        values["session_authorization"] = self.user
        return values

    def prepare(self, text: str, param_oids: Sequence[int]) -> _Prepared:
        pieces = split_statements(text)
        if not pieces:
            return _Prepared(empty=True, param_oids=list(param_oids))
        if len(pieces) > 1:
            raise PgError(
                e.SYNTAX_ERROR, "cannot insert multiple commands into a prepared statement"
            )
        return self.prepare_one(pieces[0], param_oids)

    def prepare_one(self, piece: str, param_oids: Sequence[int] = ()) -> _Prepared:
        command = parse_session_command(piece)
        if command is not None and not (
            command.verb == "SHOW"
            and command.name not in self.pg_settings()
            and command.name != "all"
        ):
            return _Prepared(command=command)
        sql = rewrite_for_duckdb(piece, self.pg_settings(), VERSION_TEXT)
        self.check_allowed(sql)
        count = max(max_param_index(piece), len(param_oids))
        oids = list(param_oids) + [0] * (count - len(param_oids))
        casts = cast_params(piece)
        for index, type_name in casts.items():
            if 0 < index <= count and oids[index - 1] == 0:
                oids[index - 1] = oid_for_cast(type_name)
        overrides = _OID_OVERRIDES if _ASYNCPG_TYPE_QUERY_MARK in piece else {}
        return _Prepared(sql=sql, param_oids=oids, overrides=dict(overrides))

    def check_allowed(self, sql: str) -> None:
        assert self.session is not None
        kinds = self.session.statement_types(sql)
        if len(kinds) != 1:
            raise PgError(e.SYNTAX_ERROR, f"expected one statement, found {len(kinds)}")
        kind = kinds[0]
        if kind in _ALLOWED_TYPES:
            return
        if kind in _UNSUPPORTED_TYPES:
            raise PgError(
                e.FEATURE_NOT_SUPPORTED,
                f"{kind} statements are not supported by this endpoint; use the extended "
                "query protocol for prepared statements",
            )
        verb = kind.replace("_", " ")
        if kind in ("VARIABLE_SET", "SET"):
            verb = "SET of a DuckDB setting"
        raise PgError(
            e.INSUFFICIENT_PRIVILEGE,
            f"permission denied: {verb} is not allowed; this endpoint is read-only "
            "(SELECT, WITH, EXPLAIN, DESCRIBE, SHOW and SUMMARIZE only)",
        )

    # -- session commands ---------------------------------------------------------------------

    def run_command(self, command: SessionCommand) -> tuple[str, list[str], list[list[str]]]:
        """Apply a session command; (tag, column names, text rows)."""
        verb = command.verb
        if self.tx == "E" and verb not in ("ROLLBACK", "COMMIT", "ROLLBACK TO"):
            raise PgError(
                e.IN_FAILED_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            )
        if verb == "BEGIN":
            if self.tx == "T":
                self.send(p.notice_response("25001", "there is already a transaction in progress"))
            self.tx = "T"
            return "BEGIN", [], []
        if verb == "COMMIT":
            tag = "ROLLBACK" if self.tx == "E" else "COMMIT"
            if self.tx == "I":
                self.send(p.notice_response("25P01", "there is no transaction in progress"))
            self.tx = "I"
            return tag, [], []
        if verb == "ROLLBACK":
            if self.tx == "I":
                self.send(p.notice_response("25P01", "there is no transaction in progress"))
            self.tx = "I"
            return "ROLLBACK", [], []
        if verb == "ROLLBACK TO":
            if self.tx == "E":
                self.tx = "T"
            return "ROLLBACK", [], []
        if verb in ("SAVEPOINT", "RELEASE"):
            return verb, [], []
        if verb == "SET":
            self.apply_set(command.name, command.value)
            return "SET", [], []
        if verb == "RESET":
            if command.name in ("statement_timeout", "all"):
                self.timeout_s = self.settings.statement_timeout_s
            return "RESET", [], []
        if verb == "SHOW":
            values = self.pg_settings()
            if command.name == "all":
                return "SHOW", ["name", "setting"], [[k, v] for k, v in sorted(values.items())]
            return "SHOW", [command.name], [[values[command.name]]]
        if verb == "DISCARD":
            self.close_portals()
            self.statements.clear()
            self.timeout_s = self.settings.statement_timeout_s
            return "DISCARD " + (command.name.upper() or "ALL"), [], []
        if verb == "DEALLOCATE":
            if command.name.lower() == "all":
                self.statements.clear()
                return "DEALLOCATE ALL", [], []
            if command.name not in self.statements:
                raise PgError(
                    e.INVALID_SQL_STATEMENT_NAME,
                    f'prepared statement "{command.name}" does not exist',
                )
            del self.statements[command.name]
            return "DEALLOCATE", [], []
        raise PgError(e.FEATURE_NOT_SUPPORTED, f"{verb} is not supported by this endpoint")

    def apply_set(self, name: str, value: str) -> None:
        if name not in _NOOP_SETTINGS:
            raise PgError(
                e.INSUFFICIENT_PRIVILEGE,
                f"permission denied: SET {name} is not allowed; DuckDB settings are fixed by "
                "the collector and this endpoint is read-only",
            )
        low = value.strip().lower()
        if name == "timezone" and low not in _UTC_NAMES:
            raise PgError(
                e.INVALID_PARAMETER_VALUE,
                f"TimeZone {value!r} is not supported: this endpoint works in UTC",
            )
        if name in ("client_encoding", "names") and low not in _GOOD_ENCODINGS:
            raise PgError(e.FEATURE_NOT_SUPPORTED, f"client encoding {value!r} is not supported")
        if name == "application_name":
            self.application_name = value
            self.send(p.parameter_status("application_name", value))
        if name == "statement_timeout":
            self.timeout_s = self.parse_timeout(value)

    def parse_timeout(self, value: str) -> float:
        text = value.strip().lower()
        if text in ("default", ""):
            return self.settings.statement_timeout_s
        units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
        number, unit = text, "ms"
        for suffix in sorted(units, key=len, reverse=True):
            if text.endswith(suffix):
                number, unit = text[: -len(suffix)].strip(), suffix
                break
        try:
            seconds = float(number) * units[unit]
        except ValueError:
            raise PgError(
                e.INVALID_PARAMETER_VALUE, f"invalid value for statement_timeout: {value!r}"
            ) from None
        if seconds <= 0:
            return self.settings.statement_timeout_s
        return min(seconds, self.settings.statement_timeout_s)

    # -- simple query protocol ----------------------------------------------------------------

    async def simple_query(self, text: str) -> None:
        pieces = split_statements(text)
        if not pieces:
            self.send(p.empty_query_response())
        for piece in pieces:
            try:
                stmt = self.prepare_one(piece)
                if stmt.command is not None:
                    tag, names, rows = self.run_command(stmt.command)
                    self.send_command_rows(names, rows)
                    self.send(p.command_complete(tag))
                    continue
                if self.tx == "E":
                    raise PgError(
                        e.IN_FAILED_TRANSACTION,
                        "current transaction is aborted, commands ignored until end of "
                        "transaction block",
                    )
                portal = _Portal(stmt, [], [])
                try:
                    await self.start_portal(portal)
                    self.send_row_description(portal)
                    await self.stream(portal, 0)
                finally:
                    portal.close()
            except _CONNECTION_ENDING:
                raise
            except Exception as exc:
                self.send_error(_as_pg_error(exc))
                if self.tx == "T":
                    self.tx = "E"
                break
        self.send(p.ready_for_query(self.tx))
        await self.flush()

    def send_command_rows(self, names: list[str], rows: list[list[str]]) -> None:
        if not names:
            return
        fields = [p.FieldDescription(n, TEXT.oid, TEXT.size) for n in names]
        self.send(p.row_description(fields))
        for row in rows:
            self.send(text_row(list(row)))

    # -- execution ----------------------------------------------------------------------------

    async def start_portal(self, portal: _Portal) -> None:
        if portal.result is not None or portal.done:
            return
        assert self.session is not None
        result = await self.blocking(
            self.session.run, portal.stmt.sql, portal.params, self.timeout_s
        )
        portal.result = result
        described = portal.stmt.columns
        columns = list(result.columns)
        if described is not None and len(described) == len(columns):
            # The client decodes with the types it was told at Describe time.
            columns = described
        portal.types = _column_types(portal.stmt, columns)
        portal.formats = _resolve_formats(portal.raw_formats, len(columns))

    def send_row_description(self, portal: _Portal) -> None:
        assert portal.result is not None
        columns = portal.stmt.columns or list(portal.result.columns)
        fields = [
            p.FieldDescription(c.name, ct.oid, ct.size, fmt)
            for c, ct, fmt in zip(columns, portal.types, portal.formats, strict=True)
        ]
        self.send(p.row_description(fields))

    async def stream(self, portal: _Portal, max_rows: int) -> bool:
        """Send up to `max_rows` rows (0 = all); True when the portal is suspended.

        The next batch is fetched and encoded on a worker thread while the current one is
        written, so DuckDB, the encoder and the socket work at the same time.
        """
        result = portal.result
        if result is None:
            self.send(p.command_complete(f"SELECT {portal.rows_sent}"))
            return False
        row_limit = self.settings.row_limit
        batch_rows = self.settings.batch_rows
        sent_now = 0
        exhausted = False

        def next_size() -> int:
            want = batch_rows if max_rows == 0 else min(batch_rows, max_rows - sent_now)
            return min(want, row_limit - portal.rows_sent)

        def start(size: int) -> asyncio.Future[tuple[bytes | memoryview | None, int]]:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(
                self.server.pool, _fetch_encoded, result, size, portal.types, portal.formats
            )
            # A prefetch abandoned by a dropped client must not log "never retrieved".
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            return future

        size = next_size()
        pending = start(size) if size > 0 else None
        while pending is not None:
            chunk, count = await pending
            pending = None
            if chunk is None:
                exhausted = True
                break
            portal.rows_sent += count
            sent_now += count
            size = next_size()
            if size > 0:
                pending = start(size)
            await self.flush()
            self.writer.write(chunk)
            await self.writer.drain()
        truncated = False
        if not exhausted:
            if portal.rows_sent < row_limit:
                self.send(p.portal_suspended())
                return True
            truncated = await self.blocking(result.fetch, 1) is not None
        portal.done = True
        portal.close()
        if truncated:
            self.send(
                p.notice_response(
                    "01000",
                    f"result cut to the first {row_limit} rows (pgwire row_limit); add a LIMIT "
                    "or aggregate",
                )
            )
        self.send(p.command_complete(f"SELECT {portal.rows_sent}"))
        return False

    # -- extended query protocol --------------------------------------------------------------

    async def on_parse(self, msg: p.Payload) -> None:
        name = msg.cstring()
        text = msg.cstring()
        count = msg.int16()
        oids = [msg.uint32() for _ in range(count)]
        if name and name in self.statements:
            raise PgError(e.DUPLICATE_PSTATEMENT, f'prepared statement "{name}" already exists')
        self.statements[name] = self.prepare(text, oids)
        self.send(p.parse_complete())

    async def on_bind(self, msg: p.Payload) -> None:
        portal_name = msg.cstring()
        stmt_name = msg.cstring()
        formats = [msg.int16() for _ in range(msg.int16())]
        raw_values: list[bytes | None] = []
        for _ in range(msg.int16()):
            size = msg.int32()
            raw_values.append(None if size < 0 else msg.take(size))
        result_formats = [msg.int16() for _ in range(msg.int16())]
        stmt = self.statements.get(stmt_name)
        if stmt is None:
            raise PgError(
                e.INVALID_SQL_STATEMENT_NAME, f'prepared statement "{stmt_name}" does not exist'
            )
        if portal_name and portal_name in self.portals:
            raise PgError(e.DUPLICATE_CURSOR, f'portal "{portal_name}" already exists')
        if len(raw_values) != len(stmt.param_oids):
            raise PgError(
                e.PROTOCOL_VIOLATION,
                f"bind message supplies {len(raw_values)} parameters, but prepared statement "
                f'"{stmt_name}" requires {len(stmt.param_oids)}',
            )
        if self.tx == "E" and stmt.command is None:
            raise PgError(
                e.IN_FAILED_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            )
        param_formats = _resolve_formats(formats, len(raw_values)) if raw_values else []
        values = [
            decode(oid, fmt, raw)
            for oid, fmt, raw in zip(stmt.param_oids, param_formats, raw_values, strict=True)
        ]
        old = self.portals.pop(portal_name, None)
        if old is not None:
            old.close()
        self.portals[portal_name] = _Portal(stmt, values, result_formats)
        self.send(p.bind_complete())

    async def on_describe(self, msg: p.Payload) -> None:
        target = msg.byte()
        name = msg.cstring()
        if target == b"S":
            stmt = self.statements.get(name)
            if stmt is None:
                raise PgError(
                    e.INVALID_SQL_STATEMENT_NAME, f'prepared statement "{name}" does not exist'
                )
            self.send(p.parameter_description([oid or TEXT.oid for oid in stmt.param_oids]))
            if stmt.command is not None:
                self.describe_command(stmt.command)
                return
            if stmt.empty:
                self.send(p.no_data())
                return
            if stmt.columns is None:
                stmt.columns = await self.describe_statement(stmt)
            fields = [
                p.FieldDescription(c.name, ct.oid, ct.size)
                for c, ct in zip(stmt.columns, _column_types(stmt, stmt.columns), strict=True)
            ]
            self.send(p.row_description(fields) if fields else p.no_data())
            return
        if target != b"P":
            raise PgError(e.PROTOCOL_VIOLATION, f"invalid DESCRIBE message subtype {target!r}")
        portal = self.portals.get(name)
        if portal is None:
            raise PgError(e.INVALID_CURSOR_NAME, f'portal "{name}" does not exist')
        if portal.stmt.command is not None:
            self.describe_command(portal.stmt.command)
            return
        if portal.stmt.empty:
            self.send(p.no_data())
            return
        await self.start_portal(portal)
        self.send_row_description(portal)

    def describe_command(self, command: SessionCommand) -> None:
        if command.verb == "SHOW":
            names = ["name", "setting"] if command.name == "all" else [command.name]
            self.send(p.row_description([p.FieldDescription(n, TEXT.oid, -1) for n in names]))
        else:
            self.send(p.no_data())

    async def describe_statement(self, stmt: _Prepared) -> list[Column]:
        assert self.session is not None
        literal = {
            i + 1: f"CAST(NULL AS {duckdb_type_for_oid(oid or TEXT.oid)})"
            for i, oid in enumerate(stmt.param_oids)
        }
        sql = substitute_params(stmt.sql, literal)
        return await self.blocking(self.session.describe, sql)

    async def on_execute(self, msg: p.Payload) -> None:
        name = msg.cstring()
        max_rows = msg.int32()
        portal = self.portals.get(name)
        if portal is None:
            raise PgError(e.INVALID_CURSOR_NAME, f'portal "{name}" does not exist')
        stmt = portal.stmt
        if stmt.empty:
            self.send(p.empty_query_response())
            return
        if stmt.command is not None:
            tag, _names, rows = self.run_command(stmt.command)
            for row in rows:
                self.send(text_row(list(row)))
            self.send(p.command_complete(tag))
            return
        if self.tx == "E":
            raise PgError(
                e.IN_FAILED_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            )
        await self.start_portal(portal)
        await self.stream(portal, max(0, max_rows))

    async def on_close(self, msg: p.Payload) -> None:
        target = msg.byte()
        name = msg.cstring()
        if target == b"S":
            self.statements.pop(name, None)
        elif target == b"P":
            portal = self.portals.pop(name, None)
            if portal is not None:
                portal.close()
        else:
            raise PgError(e.PROTOCOL_VIOLATION, f"invalid CLOSE message subtype {target!r}")
        self.send(p.close_complete())


def _fetch_encoded(
    result: QueryResult, max_rows: int, types: Sequence[ColumnType], formats: Sequence[int]
) -> tuple[bytes | memoryview | None, int]:
    """Fetch up to `max_rows` rows and encode them as DataRows (runs on a worker thread)."""
    batch = result.fetch(max_rows)
    if batch is None:
        return None, 0
    try:
        return data_rows(batch.columns, types, formats), batch.num_rows
    except Exception as exc:
        log.exception("pgwire: cannot encode a result batch")
        raise PgError(e.INTERNAL_ERROR, f"cannot encode result: {exc}") from None


class PgWireServer:
    """The endpoint: `await start()`, serve until `await stop()`."""

    def __init__(self, backend: QueryBackend, settings: PgWireSettings | None = None) -> None:
        self.backend = backend
        self.settings = settings or PgWireSettings()
        self.pool = ThreadPoolExecutor(
            max_workers=self.settings.worker_threads, thread_name_prefix="pgwire"
        )
        self.ssl_context = self._ssl_context()
        self._verifiers: dict[str, ScramVerifier] = {}
        if self.settings.auth_method == "scram-sha-256":
            for user, secret in self.settings.users.items():
                self._verifiers[user] = (
                    ScramVerifier.parse(secret)
                    if is_verifier(secret)
                    else ScramVerifier.from_password(secret)
                )
        self._server: asyncio.Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        self.port = 0
        self.connections_total = 0

    def _ssl_context(self) -> ssl.SSLContext | None:
        cert, key = self.settings.tls_cert_file, self.settings.tls_key_file
        if not cert or not key:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        return context

    def verifier(self, user: str) -> ScramVerifier | None:
        return self._verifiers.get(user)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def new_pid(self) -> int:
        while True:
            pid = secrets.randbelow(2**31 - 2) + 1
            if pid not in self._connections:
                return pid

    def register(self, conn: _Connection) -> None:
        self._connections[conn.pid] = conn
        self.connections_total += 1

    def unregister(self, conn: _Connection) -> None:
        if self._connections.get(conn.pid) is conn:
            del self._connections[conn.pid]

    async def cancel(self, pid: int, secret: int) -> None:
        """Handle a CancelRequest: interrupt the running statement of that connection."""
        conn = self._connections.get(pid)
        if conn is None or conn.session is None:
            return
        if not hmac.compare_digest(struct.pack("!I", conn.secret), struct.pack("!I", secret)):
            return
        session = conn.session
        await asyncio.get_running_loop().run_in_executor(None, session.cancel)

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Listen on `host:port` (defaults from the settings); return the bound port."""
        bind = self.settings.host if host is None else host
        self.settings.validate(bind)
        listen_port = self.settings.port if port is None else port
        self._server = await asyncio.start_server(
            self._accept, bind, listen_port, limit=self.settings.max_message_bytes, backlog=256
        )
        sockets = self._server.sockets
        self.port = int(sockets[0].getsockname()[1]) if sockets else listen_port
        mode = "trust" if not self.settings.users else self.settings.auth_method
        log.info(
            "pgwire: listening on %s:%d (auth %s, tls %s)",
            bind,
            self.port,
            mode,
            "on" if self.ssl_context else "off",
        )
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopped:
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await _Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            pass  # stop() ended it; the client was told why
        except Exception:
            log.exception("pgwire: connection failed")
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def stop(self) -> None:
        """Stop listening, end every connection (their statements are interrupted); safe twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            if conn.session is not None:
                conn.session.cancel()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        self.pool.shutdown(wait=False, cancel_futures=True)
