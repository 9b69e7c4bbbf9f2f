"""Processes for the agent's end-to-end tests: the agent itself and the OpenAI-compatible server.

`AgentProcess` runs `python -m collector.cli agent ...` (the real command) with its output in a
log file and reads its Prometheus `/metrics`; `ModelServerProcess` runs
`tests.support.openai_server` (optionally behind TLS, see `tests.agent.tls_model_server`) and
reads its ground truth. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import REPO

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_prometheus(text: str) -> dict[str, float]:
    """`name{labels}` -> value for every sample line of a Prometheus text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


@dataclass
class AgentProcess:
    """`infersight agent` as a child process."""

    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    @classmethod
    def start(
        cls,
        args: list[str],
        log: Path,
        metrics_port: int,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
    ) -> AgentProcess:
        """Start it; `command` replaces `python -m collector.cli` (e.g. the installed
        `infersight` script)."""
        handle = log.open("ab")
        proc = subprocess.Popen(
            [
                *(command or [sys.executable, "-m", "collector.cli"]),
                "agent",
                "--metrics-port",
                str(metrics_port),
                *args,
            ],
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        return cls(proc, log, metrics_port)

    def metrics(self) -> dict[str, float]:
        resp = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        resp.raise_for_status()
        return parse_prometheus(resp.text)

    def wait_for_metric(self, sample: str, value: float, timeout_s: float = 90) -> None:
        """Wait until `/metrics` shows `sample` == value (the capture compiles at start)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.log.read_text()[-4000:]}")
            try:
                if self.metrics().get(sample) == value:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{sample} never became {value}: {self.log.read_text()[-4000:]}")

    def stop(self, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


@dataclass
class ModelServerProcess:
    """The OpenAI-compatible test server as a child process."""

    proc: subprocess.Popen[str]
    port: int
    tls: bool

    @classmethod
    def start(
        cls,
        port: int,
        *,
        first_chunk_delay_ms: float = 40,
        chunk_interval_ms: float = 3,
        id_prefix: str = "",
        cert: Path | None = None,
        key: Path | None = None,
    ) -> ModelServerProcess:
        args = [
            "--port",
            str(port),
            "--first-chunk-delay-ms",
            str(first_chunk_delay_ms),
            "--chunk-interval-ms",
            str(chunk_interval_ms),
            "--id-prefix",
            id_prefix,
        ]
        if cert is not None and key is not None:
            cmd = [
                sys.executable,
                "-m",
                "tests.agent.tls_model_server",
                *args,
                "--cert",
                str(cert),
                "--key",
                str(key),
            ]
        else:
            cmd = [sys.executable, "-m", "tests.support.openai_server", *args]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line
        return cls(proc, port, cert is not None)

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def served(self, verify: Any = True) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.origin}/_test/served", timeout=10, verify=verify)
        resp.raise_for_status()
        rows: list[dict[str, Any]] = resp.json()
        return rows

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
