"""Fixtures for the PostgreSQL endpoint: a real store, a real writer, a real server on loopback.

The store is a DuckDB file in a temporary folder, seeded through `StoreWriter` with spans whose
values the tests know, while a background thread keeps inserting other spans (service
`background`) through the same writer, as the collector does. The server runs on its own event
loop thread, so synchronous clients (psycopg, psql, the Go program) and asyncpg can all talk to it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from collector.call_table import CallTableStage
from collector.pgwire import DuckDBBackend, PgWireServer, PgWireSettings, install_shims
from store.database import Database
from store.schema import SPANS
from store.writer import StoreWriter

USER = "grafana"
PASSWORD = "s3cret-pass"
SEED_SPANS = 240
SEED_START = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
MODELS = ("gpt-4o", "llama-3")

# A query whose run time is far beyond every timeout used here, and which DuckDB interrupts
# promptly (the nested loop checks for interrupts).
SLOW_SQL = "SELECT count(*) FROM range(200000) a, range(200000) b WHERE a.range + b.range = 7"


def seed_spans() -> pa.Table:
    """The spans every test can count on: 240, one a minute from 2026-01-02T00:00Z."""
    n = SEED_SPANS
    cols: dict[str, pa.Array] = {f.name: pa.nulls(n, f.type) for f in SPANS}
    starts = [SEED_START + dt.timedelta(minutes=i) for i in range(n)]
    cols["trace_id"] = pa.array([f"{i:032x}" for i in range(n)])
    cols["span_id"] = pa.array([f"{i:016x}" for i in range(n)])
    cols["service_name"] = pa.array(["checkout"] * n)
    cols["name"] = pa.array([f"chat {MODELS[i % 2]}" for i in range(n)])
    cols["kind"] = pa.array(["client"] * n)
    cols["start_time"] = pa.array(starts, pa.timestamp("ns", tz="UTC"))
    cols["end_time"] = pa.array(
        [s + dt.timedelta(milliseconds=100 * (i + 1)) for i, s in enumerate(starts)],
        pa.timestamp("ns", tz="UTC"),
    )
    cols["duration_s"] = pa.array([0.1 * (i + 1) for i in range(n)])
    cols["status_code"] = pa.array(["error" if i % 10 == 0 else "ok" for i in range(n)])
    cols["attributes"] = pa.array([f'{{"i": {i}}}' for i in range(n)])
    cols["gen_ai_operation_name"] = pa.array(["chat"] * n)
    cols["gen_ai_provider_name"] = pa.array(["openai"] * n)
    cols["gen_ai_request_model"] = pa.array([MODELS[i % 2] for i in range(n)])
    cols["gen_ai_usage_input_tokens"] = pa.array(list(range(n)), pa.int64())
    cols["gen_ai_usage_output_tokens"] = pa.array([2 * i for i in range(n)], pa.int64())
    cols["gen_ai_response_finish_reasons"] = pa.array(
        [["stop"] if i % 3 else ["length", "stop"] for i in range(n)], pa.list_(pa.string())
    )
    cols["gen_ai_request_stream"] = pa.array([i % 2 == 0 for i in range(n)])
    cols["source"] = pa.array(["sdk"] * n)
    cols["received_time"] = pa.array([dt.datetime.now(dt.UTC)] * n, pa.timestamp("ns", tz="UTC"))
    return pa.table(cols, schema=SPANS)


def background_spans(batch: int, count: int) -> pa.Table:
    cols: dict[str, pa.Array] = {f.name: pa.nulls(count, f.type) for f in SPANS}
    now = dt.datetime.now(dt.UTC)
    cols["trace_id"] = pa.array([f"b{batch:07x}{i:024x}" for i in range(count)])
    cols["span_id"] = pa.array([f"{batch:08x}{i:08x}" for i in range(count)])
    cols["service_name"] = pa.array(["background"] * count)
    cols["name"] = pa.array(["chat gpt-4o"] * count)
    cols["start_time"] = pa.array([now] * count, pa.timestamp("ns", tz="UTC"))
    cols["duration_s"] = pa.array([0.5] * count)
    cols["gen_ai_operation_name"] = pa.array(["chat"] * count)
    cols["gen_ai_request_model"] = pa.array(["gpt-4o"] * count)
    return pa.table(cols, schema=SPANS)


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """A private CA and a server certificate for localhost / 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "infersight test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    return files


class ServerThread:
    """A PgWireServer on its own event loop thread, bound to 127.0.0.1 on a free port."""

    def __init__(self, db: Database, settings: PgWireSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = PgWireServer(DuckDBBackend(db, settings.batch_rows), settings)
        future = asyncio.run_coroutine_threadsafe(self.server.start("127.0.0.1", 0), self.loop)
        self.port = future.result(10)

    def stop(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
        future.result(20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def dsn(self, **options: Any) -> str:
        """A libpq connection string for this server (password login, TLS off by default)."""
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": USER,
            "password": PASSWORD,
            "dbname": "traces",
            "sslmode": "disable",
            "connect_timeout": 10,
        }
        values.update(options)
        return " ".join(f"{k}={v}" for k, v in values.items() if v is not None)


@dataclass
class Store:
    db: Database
    writer: StoreWriter
    tls: TlsFiles
    background_batches: int = 0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A seeded store with shims and lockdown, and a writer that keeps inserting."""
    folder = tmp_path_factory.mktemp("pgwire")
    db = Database(folder / "store.duckdb")
    install_shims(db)
    db.lock_down()
    writer = StoreWriter(db)
    writer.start()
    writer.submit({"spans": seed_spans()}).result(30)
    calls = CallTableStage(db)
    calls.run_once()  # llm_calls holds the seeded calls before any test runs
    calls.start()
    state = Store(db, writer, make_tls_files(folder))
    stop = threading.Event()

    def keep_writing() -> None:
        batch = 0
        while not stop.wait(0.05):
            batch += 1
            writer.submit({"spans": background_spans(batch, 5)}).result(30)
            state.background_batches = batch

    thread = threading.Thread(target=keep_writing, name="background-writer", daemon=True)
    thread.start()
    yield state
    stop.set()
    thread.join(30)
    calls.stop()
    writer.stop()
    db.close()


def base_settings(store: Store) -> PgWireSettings:
    return PgWireSettings(
        users={USER: PASSWORD},
        tls_cert_file=str(store.tls.cert),
        tls_key_file=str(store.tls.key),
        statement_timeout_s=5.0,
    )


@pytest.fixture(scope="module")
def server(store: Store) -> Iterator[ServerThread]:
    """The endpoint with SCRAM passwords, TLS available, a 5 s statement timeout."""
    running = ServerThread(store.db, base_settings(store))
    yield running
    running.stop()


@pytest.fixture
def make_server(store: Store) -> Iterator[Any]:
    """Start extra servers with changed settings; all are stopped after the test."""
    started: list[ServerThread] = []

    def make(**changes: Any) -> ServerThread:
        running = ServerThread(store.db, replace(base_settings(store), **changes))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


# The type matrix: one row with a value of every type the endpoint maps, with known values.
TYPE_SQL = """
SELECT
  CAST(-7 AS SMALLINT) AS i2,
  CAST(123456 AS INTEGER) AS i4,
  CAST(9007199254740993 AS BIGINT) AS i8,
  CAST(1.5 AS FLOAT) AS f4,
  CAST(0.1 AS DOUBLE) AS f8,
  CAST('12345.678' AS DECIMAL(18,3)) AS num,
  CAST('170141183460469231731687303715884105727' AS HUGEINT) AS huge,
  true AS b,
  'héllo, "world"' AS txt,
  CAST('\\xDE\\xAD\\xBE\\xEF' AS BLOB) AS bin,
  DATE '2026-01-02' AS d,
  TIMESTAMP '2026-01-02 03:04:05.123456' AS ts,
  TIMESTAMPTZ '2026-01-02 03:04:05.123456+00' AS tstz,
  INTERVAL '3 days 04:05:06.5' AS iv,
  CAST('{"a": [1, 2], "b": null}' AS JSON) AS js,
  {'k': 'v', 'n': 1} AS st,
  MAP {'x': 1} AS mp,
  CAST('6f1c3c1e-2b0a-4c55-9a8e-0d5c9b1a2f3e' AS UUID) AS u,
  CAST(['a', 'b c', NULL, '"q"'] AS VARCHAR[]) AS txt_arr,
  CAST([1, NULL, 3] AS BIGINT[]) AS i8_arr,
  CAST([1.5, 2.25] AS DOUBLE[]) AS f8_arr,
  CAST([1, 2] AS INTEGER[]) AS i4_arr,
  [true, false] AS bool_arr,
  CAST(NULL AS INTEGER) AS nul
"""

TYPE_OIDS = {
    "i2": 21, "i4": 23, "i8": 20, "f4": 700, "f8": 701, "num": 1700, "huge": 1700,
    "b": 16, "txt": 25, "bin": 17, "d": 1082, "ts": 1114, "tstz": 1184, "iv": 1186,
    "js": 114, "st": 114, "mp": 114, "u": 2950, "txt_arr": 1009, "i8_arr": 1016,
    "f8_arr": 1022, "i4_arr": 1007, "bool_arr": 1000, "nul": 23,
}  # fmt: skip
