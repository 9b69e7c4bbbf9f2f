"""Shared fixtures: free loopback ports, a fresh store, a collector process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
INFERSIGHT = [sys.executable, "-m", "collector.cli"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class CollectorProcess:
    """A collector running as a child process on loopback."""

    proc: subprocess.Popen[bytes]
    db: Path
    grpc_port: int
    http_port: int
    api_port: int
    log: Path
    pg_port: int = 0

    @property
    def otlp_http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def sql(self, query: str, params: list[Any] | None = None) -> list[list[Any]]:
        resp = httpx.post(
            f"{self.api}/api/v1/sql", json={"sql": query, "params": params or []}, timeout=60
        )
        assert resp.status_code == 200, resp.text
        rows: list[list[Any]] = resp.json()["rows"]
        return rows

    def calls_settled(self, timeout_s: float = 30) -> int:
        """Wait until `llm_calls` has caught up with `spans` (its refresh runs about once a
        second) and stays so for two refresh intervals; returns the number of calls."""
        deadline = time.monotonic() + timeout_s
        last: tuple[Any, ...] = ()
        steady = 0
        while time.monotonic() < deadline:
            row = self.sql(
                "SELECT (SELECT max(received_time) FROM spans),"
                " (SELECT spans_watermark FROM call_rows_state), (SELECT count(*) FROM llm_calls)"
            )[0]
            caught_up = row[0] is None or row[0] == row[1]
            steady = steady + 1 if caught_up and tuple(row) == last else 0
            if steady >= 2:
                return int(row[2])
            last = tuple(row)
            time.sleep(0.5)
        raise TimeoutError(f"llm_calls did not catch up with spans: {last}")

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.api}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"collector not ready: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def start_collector(
    db: Path,
    log: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    ports: tuple[int, int, int] | None = None,
) -> CollectorProcess:
    """Start `infersight collector` on free loopback ports and wait until it is ready."""
    grpc_port, http_port, api_port = ports or (free_port(), free_port(), free_port())
    pg_port = free_port()
    cmd = [
        *INFERSIGHT,
        "collector",
        "--db",
        str(db),
        "--host",
        "127.0.0.1",
        "--otlp-grpc-port",
        str(grpc_port),
        "--otlp-http-port",
        str(http_port),
        "--api-port",
        str(api_port),
        "--pg-port",
        str(pg_port),
        *extra,
    ]
    handle = log.open("ab")
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    cp = CollectorProcess(proc, db, grpc_port, http_port, api_port, log, pg_port)
    cp.wait_ready()
    return cp


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A running collector with a fresh database, stopped cleanly afterwards."""
    cp = start_collector(tmp_path / "store.duckdb", tmp_path / "collector.log")
    yield cp
    cp.stop()
