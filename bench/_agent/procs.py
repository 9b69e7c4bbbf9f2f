"""The processes the agent-overhead benchmark runs, and what /proc says about them.

Takes ports, paths and command options; gives running processes: the collector
(`infersight collector` on loopback with a scratch DuckDB file), the OpenAI-compatible loopback
model server (`tests.support.openai_server`), and the agent (`infersight agent`, started and
stopped once per attached phase), plus readings of a process's CPU seconds, peak RSS and the
run time of the BPF programs it holds. Must not: reach anything but loopback, or end any
process it did not start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid`, all its threads (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return 0.0
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent not idle since boot."""
    parts = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    return (user + nice + system + irq + softirq + steal) * _TICK_S


def status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS), 0 when absent."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def largest_mappings(pid: int, top: int = 6) -> list[tuple[str, float]]:
    """The mappings of `pid` holding the most resident memory: (file or kind, MB) by name."""
    sizes: dict[str, int] = {}
    name = "?"
    try:
        text = Path(f"/proc/{pid}/smaps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and not head[0].endswith(":"):
            name = Path(head[5]).name if len(head) > 5 else "[anonymous]"
        elif head[0] == "Rss:":
            sizes[name] = sizes.get(name, 0) + int(head[1])
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return [(n, kib / 1024) for n, kib in ranked]


def bpf_prog_run_ns(pid: int) -> tuple[int, int]:
    """Summed (run_time_ns, run_cnt) of the BPF programs `pid` holds open.

    The kernel fills these only while `kernel.bpf_stats_enabled` is 1; the time is spent in the
    traced processes' own syscalls and uprobes, so it is overhead the agent's CPU does not show.
    """
    total_ns = count = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return 0, 0
    for fd in fds:
        try:
            if os.readlink(fd) != "anon_inode:bpf-prog":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text(encoding="ascii")
        except OSError:
            continue
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key == "run_time_ns":
                total_ns += int(value)
            elif key == "run_cnt":
                count += int(value)
    return total_ns, count


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


@dataclass
class Collector:
    """`infersight collector` on loopback."""

    proc: subprocess.Popen[bytes]
    otlp_http_port: int
    api_port: int
    log: Path

    @classmethod
    def start(cls, db: Path, log: Path, timeout_s: float = 60) -> Collector:
        grpc_port, http_port, api_port, pg_port = (free_port() for _ in range(4))
        cmd = [
            str(Path(sys.executable).with_name("infersight")),
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
        ]
        with log.open("ab") as handle:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        c = cls(proc, http_port, api_port, log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"collector exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=1).status_code == 200:
                    return c
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        c.stop()
        raise TimeoutError("collector not ready")

    def sql(self, query: str, params: list[Any] | None = None) -> list[list[Any]]:
        resp = httpx.post(
            f"http://127.0.0.1:{self.api_port}/api/v1/sql",
            json={"sql": query, "params": params or []},
            timeout=60,
        )
        resp.raise_for_status()
        rows: list[list[Any]] = resp.json()["rows"]
        return rows

    def stop(self) -> int:
        return _stop(self.proc, 60)


@dataclass
class ModelServer:
    """The stdlib OpenAI-compatible server as its own process."""

    proc: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, first_chunk_delay_ms: float, chunk_interval_ms: float) -> ModelServer:
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("server.py")),
                "--port",
                str(port),
                "--first-chunk-delay-ms",
                str(first_chunk_delay_ms),
                "--chunk-interval-ms",
                str(chunk_interval_ms),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if "listening" not in line:
            _stop(proc, 5)
            raise RuntimeError(f"model server did not start: {line}")
        return cls(proc, port)

    def reset(self) -> None:
        """Forget the server's ground-truth records (they grow with every call)."""
        httpx.post(f"http://127.0.0.1:{self.port}/_test/reset", timeout=10)

    def stop(self) -> int:
        return _stop(self.proc, 10)


@dataclass
class AgentProcess:
    """`infersight agent` capturing the model server's port and exporting to the collector."""

    proc: subprocess.Popen[bytes]
    metrics_port: int
    started_mono_ns: int

    @classmethod
    def start(cls, collector_url: str, service_port: int, log: Path) -> AgentProcess:
        metrics_port = free_port()
        with log.open("ab") as handle:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "collector.cli",
                    "agent",
                    "--collector",
                    collector_url,
                    "--port",
                    str(service_port),
                    "--metrics-port",
                    str(metrics_port),
                    "--no-gpu",
                    "--log-level",
                    "warning",
                ],
                cwd=REPO,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        return cls(proc, metrics_port, time.monotonic_ns())

    def metrics(self) -> dict[str, float]:
        """The agent's `/metrics` samples, keyed by name with labels as written."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    continue
        return out

    def wait_capturing(self, log: Path, timeout_s: float = 180) -> float:
        """Wait until the capture is up; returns the seconds it took from start."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {log.read_text()[-3000:]}")
            try:
                if self.metrics().get("infersight_agent_capture_up") == 1.0:
                    return (time.monotonic_ns() - self.started_mono_ns) / 1e9
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"agent capture never came up: {log.read_text()[-3000:]}")

    def stop(self) -> int:
        return _stop(self.proc, 60)
