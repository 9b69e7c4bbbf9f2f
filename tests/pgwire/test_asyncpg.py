"""asyncpg against the endpoint: binary results, typed parameters, portals, errors, TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from tests.pgwire.conftest import PASSWORD, SEED_SPANS, TYPE_OIDS, TYPE_SQL, USER, ServerThread

EXPECTED: dict[str, Any] = {
    "i2": -7,
    "i4": 123456,
    "i8": 9007199254740993,
    "f4": 1.5,
    "f8": 0.1,
    "num": Decimal("12345.678"),
    "huge": Decimal("170141183460469231731687303715884105727"),
    "b": True,
    "txt": 'héllo, "world"',
    "bin": b"\xde\xad\xbe\xef",
    "d": dt.date(2026, 1, 2),
    "ts": dt.datetime(2026, 1, 2, 3, 4, 5, 123456),
    "tstz": dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC),
    "iv": dt.timedelta(days=3, hours=4, minutes=5, seconds=6.5),
    "txt_arr": ["a", "b c", None, '"q"'],
    "i8_arr": [1, None, 3],
    "f8_arr": [1.5, 2.25],
    "i4_arr": [1, 2],
    "bool_arr": [True, False],
    "nul": None,
}
# asyncpg hands json back as text; compare parsed.
EXPECTED_JSON = {"js": {"a": [1, 2], "b": None}, "st": {"k": "v", "n": 1}, "mp": {"x": 1}}


async def _connect(server: ServerThread, **kwargs: Any) -> asyncpg.Connection:
    options: dict[str, Any] = {
        "host": "127.0.0.1", "port": server.port, "user": USER, "password": PASSWORD,
        "database": "traces", "ssl": False, "timeout": 10,
    }  # fmt: skip
    options.update(kwargs)
    return await asyncpg.connect(**options)


def test_every_type_decodes_in_binary(server: ServerThread) -> None:
    async def main() -> None:
        conn = await _connect(server)
        try:
            statement = await conn.prepare(TYPE_SQL)
            oids = {a.name: a.type.oid for a in statement.get_attributes()}
            assert oids == TYPE_OIDS
            for _ in range(2):
                row = await statement.fetchrow()
                assert row is not None
                values = dict(row.items())
                for name, expected in EXPECTED.items():
                    assert values[name] == expected, name
                for name, expected in EXPECTED_JSON.items():
                    assert json.loads(values[name]) == expected, name
                assert str(values["u"]) == "6f1c3c1e-2b0a-4c55-9a8e-0d5c9b1a2f3e"
        finally:
            await conn.close()

    asyncio.run(main())


def test_typed_parameters_and_store_rows(server: ServerThread) -> None:
    async def main() -> None:
        conn = await _connect(server)
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM spans WHERE service_name = $1 "
                "AND start_time >= $2::TIMESTAMPTZ AND gen_ai_usage_input_tokens >= $3::BIGINT "
                "AND duration_s > $4::DOUBLE",
                "checkout", dt.datetime(2026, 1, 2, 2, 0, tzinfo=dt.UTC), 200, 1.0,
            )  # fmt: skip
            assert count == SEED_SPANS - 200
            row = await conn.fetchrow(
                "SELECT $1::INTEGER + 1 AS n, $2::UUID AS u, $3::DECIMAL(10,2) AS d, "
                "$4::BIGINT[] AS a, $5::BOOLEAN AS b, $6::DATE AS day",
                41, uuid.UUID(int=7), Decimal("1.50"), [1, None, 2], False, dt.date(2026, 5, 6),
            )  # fmt: skip
            assert row is not None
            assert dict(row.items()) == {
                "n": 42, "u": uuid.UUID(int=7), "d": Decimal("1.50"), "a": [1, None, 2],
                "b": False, "day": dt.date(2026, 5, 6),
            }  # fmt: skip
            models = await conn.fetch(
                "SELECT model, count(*) AS n FROM llm_calls WHERE service_name = 'checkout' "
                "GROUP BY model ORDER BY model"
            )
            assert [(r["model"], r["n"]) for r in models] == [
                ("gpt-4o", SEED_SPANS // 2), ("llama-3", SEED_SPANS // 2),
            ]  # fmt: skip
        finally:
            await conn.close()

    asyncio.run(main())


def test_cursor_portal_is_read_in_chunks(server: ServerThread) -> None:
    async def main() -> None:
        conn = await _connect(server)
        try:
            async with conn.transaction():
                seen = [
                    r["range"]
                    async for r in conn.cursor("SELECT range FROM range(1000)", prefetch=64)
                ]
                assert seen == list(range(1000))
                cursor = await conn.cursor("SELECT range FROM range(10)")
                assert [r["range"] for r in await cursor.fetch(3)] == [0, 1, 2]
                assert [r["range"] for r in await cursor.fetch(4)] == [3, 4, 5, 6]
                assert [r["range"] for r in await cursor.fetch(10)] == [7, 8, 9]
        finally:
            await conn.close()

    asyncio.run(main())


def test_errors_and_recovery(server: ServerThread) -> None:
    async def main() -> None:
        conn = await _connect(server)
        try:
            with pytest.raises(asyncpg.UndefinedTableError):
                await conn.fetch("SELECT * FROM nope")
            with pytest.raises(asyncpg.PostgresSyntaxError):
                await conn.fetch("SELEC 1")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM spans")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM read_text('/etc/passwd')")
            assert await conn.fetchval("SELECT 1 + $1::INTEGER", 1) == 2
            # A failed statement inside a transaction block aborts it until ROLLBACK.
            tx = conn.transaction()
            await tx.start()
            with pytest.raises(asyncpg.UndefinedTableError):
                await conn.fetch("SELECT * FROM nope")
            with pytest.raises(asyncpg.InFailedSQLTransactionError):
                await conn.fetch("SELECT 1")
            await tx.rollback()
            assert await conn.fetchval("SELECT 3") == 3
        finally:
            await conn.close()

    asyncio.run(main())


def test_tls_and_wrong_password(server: ServerThread, store: Any) -> None:
    async def main() -> None:
        context = ssl.create_default_context(cafile=str(store.tls.ca))
        conn = await _connect(server, ssl=context, host="localhost")
        try:
            assert await conn.fetchval("SELECT 'secure'") == "secure"
        finally:
            await conn.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _connect(server, password="wrong")

    asyncio.run(main())
