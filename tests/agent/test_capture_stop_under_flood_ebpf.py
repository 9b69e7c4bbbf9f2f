"""Stopping the real capture while the kernel writes faster than it is read.

A flood: writer processes sending small pieces of bytes over loopback TCP as fast as they can,
to a reader process, on a port the capture is told to watch, so the ring buffer stays full.
libbpf's poll keeps consuming for as long as records keep coming, and bcc frees its objects
from an exit hook whatever thread is still polling them; before the fix, the capture thread
never came back from its poll under such a flood: stop() gave up after its timeout, the
kernel counters (refreshed between polls) stayed at zero drops, and at exit bcc freed the ring
buffer under the still-polling thread (SIGSEGV: one stop of the first three tried).

- In process: the kernel's drops are reported while the flood lasts, and `stop()` returns in
  a few seconds with the capture thread finished.
- `infersight agent` as a process, three times: flooded until it reports kernel drops, then
  SIGTERM; it must exit 0, flushed, within 20 s, without leaving a thread polling.

Needs root and bcc (`.ci/ebpf-setup.sh`); skips with the reason otherwise.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.capture.bcc_binding import bcc_unavailable_reason
from agent.capture.config import CaptureConfig
from agent.capture.pipeline import CaptureService
from tests.agent.processes import AgentProcess
from tests.conftest import REPO, CollectorProcess, free_port, start_collector

_REASON = bcc_unavailable_reason()
pytestmark = [
    pytest.mark.ebpf,
    pytest.mark.slow,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(180),
]

ROUNDS = 3
WRITERS = 2
INFERSIGHT = REPO / ".venv" / "bin" / "infersight"
KERNEL_DROPS = 'infersight_agent_capture_dropped_total{stage="kernel"}'

_FLOOD = """
import socket, sys, threading
mode, port = sys.argv[1], int(sys.argv[2])
if mode == "reader":
    srv = socket.socket()
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    print("listening", flush=True)
    def drain(c):
        while c.recv(1 << 16):
            pass
    while True:
        c, _ = srv.accept()
        threading.Thread(target=drain, args=(c,), daemon=True).start()
else:
    c = socket.create_connection(("127.0.0.1", port))
    piece = bytes(range(64))
    while True:
        c.send(piece)
"""


class Flood:
    """A reader process and writer processes on one loopback port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader = subprocess.Popen(
            [sys.executable, "-c", _FLOOD, "reader", str(port)], stdout=subprocess.PIPE, text=True
        )
        assert self.reader.stdout is not None
        assert self.reader.stdout.readline().strip() == "listening"
        self.writers: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.writers = [
            subprocess.Popen([sys.executable, "-c", _FLOOD, "writer", str(self.port)])
            for _ in range(WRITERS)
        ]

    def pause(self) -> None:
        for w in self.writers:
            w.kill()
            w.wait()
        self.writers = []

    def stop(self) -> None:
        self.pause()
        self.reader.kill()
        self.reader.wait()


@pytest.fixture
def flood() -> Iterator[Flood]:
    f = Flood(free_port())
    try:
        yield f
    finally:
        f.stop()


def _wait(pred: object, timeout_s: float) -> bool:
    assert callable(pred)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return bool(pred())


def test_in_process_stop_returns_while_flooded(
    flood: Flood, caplog: pytest.LogCaptureFixture
) -> None:
    service = CaptureService(
        CaptureConfig(filter_ports=frozenset({flood.port}), ring_buffer_bytes=1 << 20, tls=False),
        sink=lambda ex: None,
    )
    service.start()
    try:
        flood.start()
        # Counters are refreshed between polls: they move only if polls return under the flood.
        reported = _wait(lambda: service.stats().kernel_drops > 0, 10)
    finally:
        with caplog.at_level(logging.WARNING, logger="agent.capture"):
            t0 = time.monotonic()
            service.stop()
            took_s = time.monotonic() - t0
        flood.pause()
    stats = service.stats()
    print(
        f"\nflooded capture: {stats.events_received} events received, {stats.kernel_drops} "
        f"records dropped in the kernel, {stats.queue_drops} in the queue; stop() took "
        f"{took_s:.1f} s"
    )
    assert took_s < 8, took_s
    assert "still polling" not in caplog.text
    assert stats.events_received > 0
    assert reported, "no kernel drops reported while the ring buffer was full"


def test_agent_exits_cleanly_on_sigterm_while_flooded(flood: Flood, tmp_path: Path) -> None:
    collector: CollectorProcess = start_collector(tmp_path / "s.duckdb", tmp_path / "c.log")
    try:
        for round_ in range(ROUNDS):
            log = tmp_path / f"agent-{round_}.log"
            agent = AgentProcess.start(
                ["--collector", collector.otlp_http, "--port", str(flood.port), "--no-gpu"],
                log,
                free_port(),
                env={"INFERSIGHT_K8S_MODE": "off", "INFERSIGHT_ENGINES_ENABLED": "false"},
                command=[str(INFERSIGHT)],
            )
            try:
                agent.wait_for_metric("infersight_agent_capture_up", 1.0)
                flood.start()
                reported = _wait(lambda a=agent: a.metrics().get(KERNEL_DROPS, 0) > 0, 10)
                drops = agent.metrics().get(KERNEL_DROPS, 0)
                t0 = time.monotonic()
                agent.proc.send_signal(signal.SIGTERM)
                rc = agent.proc.wait(60)
                took_s = time.monotonic() - t0
            finally:
                flood.pause()
                agent.stop()
            text = log.read_text()
            print(f"round {round_}: {drops:.0f} kernel drops, exit {rc} after {took_s:.1f} s")
            assert rc == 0, text[-3000:]
            assert "spans and metrics flushed" in text
            assert "still polling" not in text
            assert took_s < 20, took_s
            assert reported, "the agent never reported the flood's kernel drops"
    finally:
        collector.stop()
