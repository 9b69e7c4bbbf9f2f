"""Settings of the PostgreSQL wire endpoint, with their defaults and the checks made at start.

Takes plain values (from the collector's configuration or a test); gives a frozen
`PgWireSettings`. `validate()` raises `ValueError` naming the setting when a combination is
unsafe, e.g. no passwords configured (trust mode) on an address other than loopback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

AUTH_METHODS = ("scram-sha-256", "md5", "password")


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class PgWireSettings:
    """Everything the endpoint reads at start.

    users: user name -> password, or a stored `SCRAM-SHA-256$...` verifier. Empty means trust
        mode (any user name, no password), which is refused off loopback unless
        `allow_trust_off_loopback` is set.
    auth_method: `scram-sha-256` (default), `md5` or `password` (cleartext; use with TLS only).
        MD5 and cleartext need plain passwords, not verifiers.
    tls_cert_file / tls_key_file: PEM files; when set, SSLRequest is answered with TLS.
    require_tls: refuse clients that do not ask for TLS (needs the files above).
    statement_timeout_s: the longest a statement may run; clients may lower it per session with
        `SET statement_timeout`, never raise it.
    row_limit: rows one statement returns at most; past it the result is cut with a warning.
    max_connections: concurrent client connections; more are refused with SQLSTATE 53300.
    worker_threads: threads that run DuckDB queries and encode rows.
    batch_rows: rows fetched from DuckDB and encoded per batch.
    """

    host: str = "127.0.0.1"
    port: int = 5433
    users: Mapping[str, str] = field(default_factory=dict)
    auth_method: str = "scram-sha-256"
    allow_trust_off_loopback: bool = False
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    require_tls: bool = False
    statement_timeout_s: float = 30.0
    row_limit: int = 1_000_000
    max_connections: int = 64
    worker_threads: int = 8
    batch_rows: int = 32_768
    startup_timeout_s: float = 15.0
    max_message_bytes: int = 64 * 1024 * 1024
    database_name: str = "infersight"

    def validate(self, host: str | None = None) -> None:
        """Raise ValueError, naming the setting, for an unusable or unsafe combination."""
        bind = self.host if host is None else host
        if self.auth_method not in AUTH_METHODS:
            raise ValueError(f"pgwire.auth_method must be one of {', '.join(AUTH_METHODS)}")
        if not self.users and not is_loopback(bind) and not self.allow_trust_off_loopback:
            raise ValueError(
                f"pgwire: no users configured (trust mode) while listening on {bind}; set "
                "pgwire.users, bind pgwire.host to 127.0.0.1, or set "
                "pgwire.allow_trust_off_loopback"
            )
        if self.auth_method in ("md5", "password"):
            for user, secret in self.users.items():
                if secret.startswith("SCRAM-SHA-256$"):
                    raise ValueError(
                        f"pgwire.users.{user}: a SCRAM verifier cannot be used with "
                        f"auth_method {self.auth_method}; give the password"
                    )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("pgwire.tls_cert_file and pgwire.tls_key_file go together")
        if self.require_tls and not self.tls_cert_file:
            raise ValueError("pgwire.require_tls needs pgwire.tls_cert_file and tls_key_file")
        if self.statement_timeout_s <= 0:
            raise ValueError("pgwire.statement_timeout_s must be positive")
        if self.row_limit < 1:
            raise ValueError("pgwire.row_limit must be at least 1")
        if self.max_connections < 1 or self.worker_threads < 1 or self.batch_rows < 1:
            raise ValueError(
                "pgwire.max_connections, worker_threads and batch_rows must be positive"
            )
