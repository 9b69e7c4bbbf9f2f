"""Authentication and transport: SCRAM, MD5, cleartext, trust, TLS, refusals."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket
import struct
from typing import Any

import asyncpg
import psycopg
import pytest

from collector.pgwire.auth import (
    AuthFailedError,
    ScramExchange,
    ScramVerifier,
    check_md5,
    md5_response,
)
from collector.pgwire.settings import PgWireSettings
from tests.pgwire.conftest import PASSWORD, SLOW_SQL, USER, ServerThread


def _client_proof(password: str, salt: bytes, iterations: int, auth_message: bytes) -> bytes:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    return bytes(a ^ b for a, b in zip(client_key, signature, strict=True))


def _scram(verifier: ScramVerifier | None, password: str) -> bytes:
    """Run a whole exchange as a client would; return the server-final message."""
    exchange = ScramExchange(verifier)
    client_first_bare = "n=,r=abcdefghijklmnop"
    server_first = exchange.server_first(("n,," + client_first_bare).encode()).decode()
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    proof = _client_proof(password, base64.b64decode(attrs["s"]), int(attrs["i"]), auth_message)
    final = f"{without_proof},p={base64.b64encode(proof).decode()}"
    return exchange.server_final(final.encode())


def test_scram_exchange_and_stored_verifier() -> None:
    verifier = ScramVerifier.from_password("hunter2")
    assert _scram(verifier, "hunter2").startswith(b"v=")
    stored = ScramVerifier.parse(verifier.to_text())
    assert stored == verifier
    assert _scram(stored, "hunter2").startswith(b"v=")
    with pytest.raises(AuthFailedError):
        _scram(verifier, "hunter3")
    with pytest.raises(AuthFailedError):  # unknown user: same exchange, refused at the end
        _scram(None, "hunter2")
    with pytest.raises(AuthFailedError, match="channel binding"):
        ScramExchange(verifier).server_first(b"p=tls-server-end-point,,n=,r=abc")


def test_md5_check() -> None:
    salt = b"\x01\x02\x03\x04"
    answer = md5_response("alice", "pw", salt)
    assert check_md5("alice", "pw", salt, answer)
    assert not check_md5("alice", "other", salt, answer)
    assert not check_md5("alice", None, salt, answer)


def test_password_logins(server: ServerThread) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT current_user IS NOT NULL").fetchone() == (True,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(server.dsn(password="wrong"))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(server.dsn(user="nobody"))


@pytest.mark.parametrize("method", ["md5", "password"])
def test_md5_and_cleartext_methods(make_server: Any, method: str) -> None:
    other = make_server(auth_method=method)
    with psycopg.connect(other.dsn(sslmode="require"), autocommit=True) as conn:
        assert conn.execute("SELECT 7").fetchone() == (7,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(other.dsn(password="nope", sslmode="require"))


def test_stored_scram_verifier_in_settings(make_server: Any) -> None:
    verifier = ScramVerifier.from_password("from-a-vault").to_text()
    other = make_server(users={"vault": verifier})
    with psycopg.connect(other.dsn(user="vault", password="from-a-vault"), autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_trust_mode_only_on_loopback(make_server: Any) -> None:
    trusting = make_server(users={})
    with psycopg.connect(trusting.dsn(user="anyone", password=None), autocommit=True) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)
    with pytest.raises(ValueError, match="trust mode"):
        PgWireSettings(host="0.0.0.0").validate()
    PgWireSettings(host="0.0.0.0", users={"u": "p"}).validate()
    PgWireSettings(host="0.0.0.0", allow_trust_off_loopback=True).validate()
    with pytest.raises(ValueError, match="SCRAM verifier"):
        PgWireSettings(users={"u": "SCRAM-SHA-256$4096:c2FsdA==$a:b"}, auth_method="md5").validate()


def test_tls_require_and_verify_full(server: ServerThread, store: Any) -> None:
    with psycopg.connect(server.dsn(sslmode="require"), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 'over tls'").fetchone() == ("over tls",)
    verify = server.dsn(
        host="localhost", hostaddr="127.0.0.1", sslmode="verify-full", sslrootcert=store.tls.ca
    )
    with psycopg.connect(verify, autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError):
        # The certificate names localhost and 127.0.0.1, not this host name.
        psycopg.connect(
            server.dsn(host="not-the-server", hostaddr="127.0.0.1", sslmode="verify-full",
                       sslrootcert=store.tls.ca)
        )  # fmt: skip


def test_require_tls_refuses_plaintext(make_server: Any) -> None:
    strict = make_server(require_tls=True)
    with pytest.raises(psycopg.OperationalError, match="TLS is required"):
        psycopg.connect(strict.dsn(sslmode="disable"))
    with psycopg.connect(strict.dsn(sslmode="require"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_no_tls_configured_answers_n(make_server: Any) -> None:
    plain = make_server(tls_cert_file=None, tls_key_file=None)
    with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
        psycopg.connect(plain.dsn(sslmode="require"))
    with psycopg.connect(plain.dsn(sslmode="prefer"), autocommit=True) as conn:
        assert not conn.pgconn.ssl_in_use


def _raw_exchange(port: int, packet: bytes, read: int = 1) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(packet)
        data = b""
        while len(data) < read:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def test_gssenc_refused_and_garbage_startup_closed(server: ServerThread) -> None:
    assert _raw_exchange(server.port, struct.pack("!ii", 8, 80877104)) == b"N"
    # A startup packet claiming an absurd length is answered with a FATAL error and closed.
    answer = _raw_exchange(server.port, struct.pack("!ii", 1_000_000, 196608), read=2)
    assert answer[:1] == b"E"
    assert b"08P01" in answer
    # Protocol 2 is refused with 0A000.
    answer = _raw_exchange(server.port, struct.pack("!ii", 8, 2 << 16), read=2)
    assert answer[:1] == b"E"
    assert b"0A000" in answer


def test_cancel_with_wrong_secret_is_ignored(server: ServerThread) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=server.port, user=USER, password=PASSWORD,
            database="traces", ssl=False,
        )  # fmt: skip
        try:
            await conn.execute("SET statement_timeout = '1500ms'")
            pid = conn.get_server_pid()
            query = asyncio.create_task(conn.fetchval(SLOW_SQL))
            await asyncio.sleep(0.3)
            cancel = struct.pack("!iiiI", 16, 80877102, pid, 12345)
            await asyncio.to_thread(_raw_exchange, server.port, cancel, 0)
            with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
                await query
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    asyncio.run(main())


def _startup_trust(port: int) -> socket.socket:
    """A raw connection past startup on a trust-mode server (ReadyForQuery received)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = struct.pack("!i", 196608) + b"user\x00raw\x00database\x00x\x00\x00"
    sock.sendall(struct.pack("!i", len(body) + 4) + body)
    data = b""
    while not data.endswith(b"Z\x00\x00\x00\x05I"):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return sock


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_malformed_messages_end_only_that_connection(make_server: Any) -> None:
    trusting = make_server(users={})
    with _startup_trust(trusting.port) as sock:
        sock.sendall(b"B" + struct.pack("!i", 6) + b"\x00\x00")  # Bind cut short
        answer = _read_all(sock)
        assert answer[:1] == b"E"
        assert b"FATAL" in answer
        assert b"08P01" in answer
    with _startup_trust(trusting.port) as sock:
        sock.sendall(b"?" + struct.pack("!i", 4))  # no such message type
        assert b"08P01" in _read_all(sock)
    with psycopg.connect(trusting.dsn(user="raw", password=None), autocommit=True) as conn:
        assert conn.execute("SELECT 'still serving'").fetchone() == ("still serving",)
