"""The systems under test, as child processes: the infersight collector and Arize Phoenix.

Takes a scratch directory; gives `Target`s that start a server on free loopback ports, name
their OTLP endpoints, count the spans they have stored (infersight through its SQL API, Phoenix
by reading its SQLite file) and tell whether a given probe span is queryable yet. Also gives
`ensure_phoenix_venv()`, which builds Phoenix's own virtual environment once.
Must not: count spans anywhere but where a user's query would find them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

REPO = Path(__file__).resolve().parents[2]
INFERSIGHT_BIN = REPO / ".venv" / "bin" / "infersight"
PHOENIX_VENV = REPO / "bench" / ".venv-phoenix"
#: The Phoenix release compared against; change it here to compare with another.
PHOENIX_VERSION = "20.26.1"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_get_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except OSError:
        return 0
    finally:
        conn.close()


def _stop_process(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return int(proc.returncode)


#: `check(trace_id_hex, span_id_hex)` answers whether that span is queryable yet.
VisibilityCheck = Callable[[str, str], bool]


class Target(Protocol):
    """What the benchmark needs from a system under test."""

    name: str
    pid: int

    def otlp_endpoint(self, protocol: str) -> str:
        """The URL (HTTP) or host:port (gRPC) exports go to."""
        ...

    def stored_spans(self) -> int:
        """Spans a query would count right now."""
        ...

    def new_checker(self) -> VisibilityCheck:
        """A probe-visibility check with its own connection (for the probe thread)."""
        ...

    def stop(self) -> int:
        """Stop the server; return its exit code."""
        ...


class SqlClient:
    """`POST /api/v1/sql` over one keep-alive connection (one thread at a time)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._conn: http.client.HTTPConnection | None = None

    def query(self, sql: str) -> list[list[object]]:
        """The rows of one read-only statement."""
        body = json.dumps({"sql": sql})
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=60)
            try:
                self._conn.request(
                    "POST", "/api/v1/sql", body, {"Content-Type": "application/json"}
                )
                resp = self._conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
                continue
            if resp.status != 200:
                raise RuntimeError(f"SQL API answered {resp.status}: {data[:300]!r}")
            rows: list[list[object]] = json.loads(data)["rows"]
            return rows
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Drop the connection (a later query opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class InfersightCollector:
    """`infersight collector` on a fresh DuckDB file."""

    name = "infersight"

    def __init__(self, workdir: Path, log_level: str = "warning") -> None:
        self.workdir = workdir
        self.db_path = workdir / "bench.duckdb"
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.api_port = free_port()
        self.log_path = workdir / "collector.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        cmd = [
            str(INFERSIGHT_BIN),
            "collector",
            "--db",
            str(self.db_path),
            "--host",
            "127.0.0.1",
            "--otlp-grpc-port",
            str(self.grpc_port),
            "--otlp-http-port",
            str(self.http_port),
            "--api-port",
            str(self.api_port),
            "--log-level",
            log_level,
        ]
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self._proc.pid
        self._sql = SqlClient(self.api_port)
        deadline = time.monotonic() + 90
        while _http_get_status(self.api_port, "/readyz") != 200:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the collector did not become ready; see {self.log_path}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.1)

    def otlp_endpoint(self, protocol: str) -> str:
        """The URL (HTTP) or host:port (gRPC) exports go to."""
        if protocol == "http":
            return f"http://127.0.0.1:{self.http_port}/v1/traces"
        return f"127.0.0.1:{self.grpc_port}"

    def sql(self, query: str) -> list[list[object]]:
        """Rows of one query through `POST /api/v1/sql`."""
        return self._sql.query(query)

    def stored_spans(self) -> int:
        """Spans a query would count right now."""
        return int(str(self.sql("SELECT count(*) FROM spans")[0][0]))

    def new_checker(self) -> VisibilityCheck:
        """A probe-visibility check with its own connection (for the probe thread)."""
        client = SqlClient(self.api_port)

        def check(trace_id_hex: str, span_id_hex: str) -> bool:
            rows = client.query(
                f"SELECT count(*) FROM spans WHERE trace_id = '{trace_id_hex}' "
                f"AND span_id = '{span_id_hex}'"
            )
            return int(str(rows[0][0])) > 0

        return check

    def writer_metrics(self) -> dict[str, float]:
        """The `infersight_writer_*` and `infersight_pairing_*` samples of `/metrics`
        (name with labels -> value)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=30)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(("infersight_writer_", "infersight_pairing_")):
                key, _, value = line.rpartition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    continue
        return out

    def stop(self) -> int:
        """SIGTERM, wait for the clean shutdown, return the exit code."""
        self._sql.close()
        code = _stop_process(self._proc, 120)
        self._log.close()
        return code


def ensure_phoenix_venv(log: IO[str]) -> Path:
    """Create `bench/.venv-phoenix` with arize-phoenix==PHOENIX_VERSION unless it is there.

    Returns the `phoenix` executable. Idempotent: a venv that already has that version is
    used as it is.
    """
    python = PHOENIX_VENV / "bin" / "python"
    exe = PHOENIX_VENV / "bin" / "phoenix"
    if python.exists() and exe.exists():
        probe = subprocess.run(
            [
                str(python),
                "-c",
                "import importlib.metadata as m; print(m.version('arize-phoenix'))",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == PHOENIX_VERSION:
            return exe
    print(
        f"installing arize-phoenix=={PHOENIX_VERSION} into {PHOENIX_VENV} "
        "(once; takes a few minutes)",
        file=log,
        flush=True,
    )
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(PHOENIX_VENV)], check=True)
    pip_log = PHOENIX_VENV / "pip-install.log"
    with pip_log.open("w") as out:
        done = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                f"arize-phoenix=={PHOENIX_VERSION}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0 or not exe.exists():
        raise RuntimeError(f"installing arize-phoenix failed; see {pip_log}")
    return exe


class PhoenixServer:
    """`phoenix serve` with SQLite (its default store) in a scratch working directory."""

    name = "phoenix"

    def __init__(self, exe: Path, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.db_path = workdir / "phoenix.db"
        self.log_path = workdir / "phoenix.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        env = dict(os.environ)
        env.update(
            PHOENIX_WORKING_DIR=str(workdir),
            PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(self.http_port),
            PHOENIX_GRPC_PORT=str(self.grpc_port),
            PHOENIX_TELEMETRY_ENABLED="false",
            PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
            PHOENIX_LOG_MIGRATIONS="false",
            PHOENIX_LOGGING_LEVEL="warning",
        )
        env.pop("PHOENIX_SQL_DATABASE_URL", None)
        self._proc = subprocess.Popen(
            [str(exe), "serve"], env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir
        )
        self.pid = self._proc.pid
        deadline = time.monotonic() + 180
        while _http_get_status(self.http_port, "/healthz") != 200:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"Phoenix did not become ready; see {self.log_path}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.2)
        self._db = self._connect()

    def otlp_endpoint(self, protocol: str) -> str:
        """The URL (HTTP) or host:port (gRPC) exports go to."""
        if protocol == "http":
            return f"http://127.0.0.1:{self.http_port}/v1/traces"
        return f"127.0.0.1:{self.grpc_port}"

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            f"file:{self.db_path}?mode=ro", uri=True, timeout=10, check_same_thread=False
        )

    @staticmethod
    def _one(db: sqlite3.Connection, query: str, params: tuple[str, ...] = ()) -> int:
        for _ in range(100):
            try:
                row = db.execute(query, params).fetchone()
                return int(row[0]) if row else 0
            except sqlite3.OperationalError:  # locked during Phoenix's own checkpoint
                time.sleep(0.02)
        raise RuntimeError("Phoenix's SQLite file stayed locked")

    def stored_spans(self) -> int:
        """Spans a query would count right now."""
        return self._one(self._db, "SELECT count(*) FROM spans")

    def new_checker(self) -> VisibilityCheck:
        """A probe-visibility check with its own connection (Phoenix keys spans by hex id)."""
        db = self._connect()

        def check(trace_id_hex: str, span_id_hex: str) -> bool:
            return self._one(db, "SELECT count(*) FROM spans WHERE span_id = ?", (span_id_hex,)) > 0

        return check

    def stop(self) -> int:
        """SIGTERM, wait, return the exit code."""
        with contextlib.suppress(AttributeError):
            self._db.close()
        code = _stop_process(self._proc, 60)
        self._log.close()
        return code
