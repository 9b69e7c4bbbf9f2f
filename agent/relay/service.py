"""The node's OTLP endpoint as one service: receivers, buffer, senders, on their own threads.

Takes in: the agent's `relay` settings, where to forward (`ForwardTarget`), the `Enricher`,
and optionally node-local pairing. Gives out: `RelayService` with `start()` (binds the OTLP/gRPC
and OTLP/HTTP ports, raising `OSError` with the reason when it cannot; a port of -1 leaves that
receiver off), `stop_receiving()` (no new exports; the ones being read finish), `stop()`
(delivers what is buffered within the drain time, counts the rest failed; safe twice), the
bound ports, and `RelayStats`. The receivers share one asyncio loop on a thread of their own
(uvicorn for HTTP, `grpc.aio` for gRPC); the intake work runs on a small thread pool; the
senders are plain threads (`agent.relay.sender`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import uvicorn

from agent.pair.node import NodePairing
from agent.relay.buffer import RelayBuffer, RelayStats
from agent.relay.endpoint import ForwardTarget
from agent.relay.enrich import Enricher
from agent.relay.forward import Forwarder, make_forwarder
from agent.relay.grpc_receiver import build_grpc_server
from agent.relay.http_receiver import build_http_app
from agent.relay.intake import Intake
from agent.relay.sender import RelaySenders
from collector.otlp.limits import ReceiverLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """What the relay needs from the `relay` section of the agent's configuration."""

    host: str = "0.0.0.0"
    grpc_port: int = 4317
    http_port: int = 4318
    timeout_s: float = 10.0
    buffer_bytes: int = 64 * 1024 * 1024
    max_body_bytes: int = 20 * 1024 * 1024
    retry_after_s: int = 2
    max_elapsed_s: float = 300.0
    senders: int = 2
    drain_timeout_s: float = 10.0


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (the agent owns SIGTERM/SIGINT)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen for OTLP/HTTP on {host}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    return sock


class RelayService:
    """Receivers, buffer and senders of the node's OTLP endpoint."""

    def __init__(
        self,
        settings: RelaySettings,
        target: ForwardTarget,
        enricher: Enricher,
        *,
        pairing: NodePairing | None = None,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.stats = RelayStats()
        self.buffer = RelayBuffer(settings.buffer_bytes)
        self.intake = Intake(self.buffer, self.stats, enricher, pairing)
        self.limits = ReceiverLimits(
            max_body_bytes=settings.max_body_bytes, retry_after_s=settings.retry_after_s
        )
        self._forwarder = forwarder
        self.senders: RelaySenders | None = None
        self._executor = ThreadPoolExecutor(4, thread_name_prefix="infersight-relay-intake")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_receiving: asyncio.Event | None = None
        self._servers_done = threading.Event()
        self._lock = threading.Lock()
        self._receiving = False
        self._stopped = False
        self.grpc_port: int | None = None
        self.http_port: int | None = None

    # -- start -----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve; raises OSError (nothing left running) when a port cannot be used."""
        s = self.settings
        http_sock = _bind(s.host, s.http_port) if s.http_port >= 0 else None
        if http_sock is not None:
            self.http_port = int(http_sock.getsockname()[1])
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._serve, args=(http_sock, ready), name="infersight-relay", daemon=True
        )
        self._thread.start()
        try:
            ready.result(timeout=30)
        except BaseException:
            self._thread.join(10)
            if http_sock is not None:
                http_sock.close()
            self._executor.shutdown(wait=False)
            raise
        self.senders = RelaySenders(
            self.buffer,
            self._forwarder or make_forwarder(self.target, s.timeout_s),
            self.stats,
            count=s.senders,
            max_elapsed_s=s.max_elapsed_s,
        )
        self.senders.start()
        self._receiving = True

    def _serve(self, http_sock: socket.socket | None, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(http_sock, ready))
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.exception("the relay's receivers stopped")
        finally:
            loop.close()
            self._servers_done.set()

    async def _main(self, http_sock: socket.socket | None, ready: Future[None]) -> None:
        s = self.settings
        self._stop_receiving = asyncio.Event()
        grpc_server = None
        http_server: _Server | None = None
        http_task: asyncio.Task[Any] | None = None
        try:
            if s.grpc_port >= 0:
                grpc_server, self.grpc_port = build_grpc_server(
                    self.intake, self.limits, self.stats, self._executor, s.host, s.grpc_port
                )
                await grpc_server.start()
            if http_sock is not None:
                app = build_http_app(self.intake, self.limits, self.stats, self._executor)
                http_server = _Server(
                    uvicorn.Config(
                        app,
                        log_level="warning",
                        access_log=False,
                        lifespan="off",
                        timeout_graceful_shutdown=10,
                    )
                )
                http_task = asyncio.create_task(http_server.serve(sockets=[http_sock]))
                while not http_server.started and not http_task.done():
                    await asyncio.sleep(0.01)
                if http_task.done():
                    http_task.result()  # raises why it could not serve
            ready.set_result(None)
            await self._stop_receiving.wait()
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=10)
            if http_server is not None and http_task is not None:
                http_server.should_exit = True
                await asyncio.gather(http_task, return_exceptions=True)

    # -- stop ------------------------------------------------------------------------------

    def stop_receiving(self) -> None:
        """Refuse new connections; exports already being read are finished (safe twice)."""
        with self._lock:
            if not self._receiving:
                return
            self._receiving = False
        loop, event = self._loop, self._stop_receiving
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own meanwhile
                loop.call_soon_threadsafe(event.set)
        self._servers_done.wait(15)
        self._executor.shutdown(wait=True)

    def stop(self) -> None:
        """Stop receiving, then deliver what is buffered within the drain time (safe twice)."""
        self.stop_receiving()
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self.senders is not None:
            self.senders.stop(self.settings.drain_timeout_s)
