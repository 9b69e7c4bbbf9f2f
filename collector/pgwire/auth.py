"""Password checks for the PostgreSQL endpoint: SCRAM-SHA-256 (RFC 5802/7677), MD5, cleartext.

Takes the configured users (user name -> password, or a PostgreSQL-style SCRAM verifier
`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`) and the client's messages; gives
yes/no answers plus the server's SCRAM messages. Secrets are compared in constant time, and an
unknown user runs the same exchange against a throw-away verifier so replies do not reveal
which user names exist. Channel binding (SCRAM-SHA-256-PLUS) is not offered.
Must not: log or keep a password or proof beyond the exchange.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass

SCRAM_MECHANISM = "SCRAM-SHA-256"
SCRAM_ITERATIONS = 4096


class AuthFailedError(Exception):
    """The client's credentials or its SCRAM messages were not acceptable."""


@dataclass(frozen=True, slots=True)
class ScramVerifier:
    """What the server keeps for a SCRAM user: salt, iterations and the two derived keys."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(
        cls, password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
    ) -> ScramVerifier:
        salt = salt or secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        return cls(salt, iterations, hashlib.sha256(client_key).digest(), server_key)

    @classmethod
    def parse(cls, text: str) -> ScramVerifier:
        """Read the `SCRAM-SHA-256$iter:salt$stored:server` form PostgreSQL stores."""
        try:
            mech, params, keys = text.split("$")
            iterations, salt = params.split(":")
            stored, server = keys.split(":")
            if mech != SCRAM_MECHANISM:
                raise ValueError(mech)
            return cls(
                base64.b64decode(salt),
                int(iterations),
                base64.b64decode(stored),
                base64.b64decode(server),
            )
        except ValueError as exc:
            raise ValueError("not a SCRAM-SHA-256 verifier") from exc

    def to_text(self) -> str:
        b64 = base64.b64encode
        return (
            f"{SCRAM_MECHANISM}${self.iterations}:{b64(self.salt).decode()}$"
            f"{b64(self.stored_key).decode()}:{b64(self.server_key).decode()}"
        )


def _saslprep(password: str) -> bytes:
    # PostgreSQL falls back to the raw bytes when SASLprep would reject the string; for the
    # printable passwords people configure, NFKC normalisation is what SASLprep amounts to.
    return unicodedata.normalize("NFKC", password).encode("utf-8")


def is_verifier(secret: str) -> bool:
    """Whether a configured secret is a stored SCRAM verifier rather than a password."""
    return secret.startswith(SCRAM_MECHANISM + "$")


def _parse_attributes(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        if len(part) >= 2 and part[1] == "=":
            out.setdefault(part[0], part[2:])
    return out


class ScramExchange:
    """The server side of one SCRAM-SHA-256 exchange."""

    def __init__(self, verifier: ScramVerifier | None) -> None:
        # An unknown user gets a random verifier: the exchange runs and fails at the proof.
        self._known = verifier is not None
        self._verifier = verifier or ScramVerifier.from_password(
            secrets.token_hex(16), iterations=SCRAM_ITERATIONS
        )
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._gs2_header = ""

    def server_first(self, client_first: bytes) -> bytes:
        """Answer the client-first-message (`n,,n=,r=<nonce>`)."""
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AuthFailedError("malformed SCRAM message") from exc
        if not text or text[0] not in "ny":
            raise AuthFailedError("channel binding is not supported by this server")
        first_comma = text.find(",")
        second_comma = text.find(",", first_comma + 1)
        if first_comma < 0 or second_comma < 0:
            raise AuthFailedError("malformed SCRAM message")
        self._gs2_header = text[: second_comma + 1]
        self._client_first_bare = text[second_comma + 1 :]
        client_nonce = _parse_attributes(self._client_first_bare).get("r", "")
        if not client_nonce:
            raise AuthFailedError("malformed SCRAM message: no nonce")
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        salt = base64.b64encode(self._verifier.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self._verifier.iterations}"
        return self._server_first.encode()

    def server_final(self, client_final: bytes) -> bytes:
        """Check the client-final-message; return the server-final-message (`v=...`)."""
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AuthFailedError("malformed SCRAM message") from exc
        proof_at = text.rfind(",p=")
        if proof_at < 0:
            raise AuthFailedError("malformed SCRAM message: no proof")
        without_proof = text[:proof_at]
        attrs = _parse_attributes(text)
        if attrs.get("r") != self._nonce:
            raise AuthFailedError("SCRAM nonce mismatch")
        binding = base64.b64decode(attrs.get("c", ""))
        if binding != self._gs2_header.encode():
            raise AuthFailedError("SCRAM channel binding mismatch")
        try:
            proof = base64.b64decode(attrs["p"], validate=True)
        except (KeyError, ValueError) as exc:
            raise AuthFailedError("malformed SCRAM proof") from exc
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(self._verifier.stored_key, auth_message, "sha256")
        if len(proof) != len(signature):
            raise AuthFailedError("password authentication failed")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), self._verifier.stored_key)
        if not (ok and self._known):
            raise AuthFailedError("password authentication failed")
        server_signature = hmac.digest(self._verifier.server_key, auth_message, "sha256")
        return b"v=" + base64.b64encode(server_signature)


def md5_response(user: str, password: str, salt: bytes) -> str:
    """What a client sends for MD5 auth: `md5` + md5(md5(password + user) + salt)."""
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def check_md5(user: str, password: str | None, salt: bytes, response: str) -> bool:
    """Constant-time check of an MD5 password response."""
    expected = md5_response(user, password or secrets.token_hex(16), salt)
    return hmac.compare_digest(expected.encode(), response.encode()) and password is not None


def check_cleartext(password: str | None, response: str) -> bool:
    """Constant-time check of a cleartext password."""
    expected = password if password is not None else secrets.token_hex(16)
    return hmac.compare_digest(expected.encode(), response.encode()) and password is not None
