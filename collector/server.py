"""The collector process: configuration in; receivers, writer and API running until a signal.

Takes a `CollectorConfig`; opens the store, starts the single writer, the OTLP/gRPC and
OTLP/HTTP receivers and the API on one asyncio loop, and on SIGTERM/SIGINT stops accepting,
lets in-flight exports reach their commit, flushes the writer, checkpoints and closes the file.
Must not: acknowledge an export it has not committed, or exit with data still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import uvicorn

from agent.pair.rules import PairingSettings
from collector.analytics.cost import load_prices
from collector.analytics.search import load_fts
from collector.api.app import CollectorState, build_api_app
from collector.api.sql import QueryRunner
from collector.call_table import CallTableSettings, start_call_table
from collector.config import CollectorConfig
from collector.gpu.dcgm_exporter import DcgmCollector
from collector.otlp.grpc_server import build_grpc_server
from collector.otlp.http import build_http_app
from collector.otlp.limits import ReceiverLimits
from collector.otlp.pool import DecodePool
from collector.pairing import StageSettings, start_pairing
from collector.pgwire.backend import DuckDBBackend
from collector.pgwire.server import PgWireServer
from collector.pgwire.settings import PgWireSettings
from collector.pgwire.shims import install_shims
from collector.prom.genai import GenAIStoreCollector
from collector.selfmetrics import SelfMetrics
from store.call_rows import CallRowSettings
from store.database import Database, DatabaseTuning
from store.writer import StoreWriter

log = logging.getLogger("infersight.collector")


class StartupError(RuntimeError):
    """The collector cannot start; the message says why and what to change."""


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the collector."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int, what: str, flag: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"cannot listen for {what} on {host}:{port}: {exc.strerror} (change {flag})"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass(slots=True)
class BoundPorts:
    """The ports actually listened on (differ from the configuration when it asked for 0)."""

    otlp_grpc: int = 0
    otlp_http: int = 0
    api: int = 0
    pgwire: int = 0


def receiver_limits(cfg: CollectorConfig) -> ReceiverLimits:
    """The OTLP receiver limits the configuration asks for."""
    return ReceiverLimits(
        max_body_bytes=cfg.otlp.max_body_bytes,
        bearer_token=cfg.otlp.bearer_token,
        retry_after_s=cfg.otlp.retry_after_s,
        max_attributes=cfg.otlp.max_attributes,
        max_value_depth=cfg.otlp.max_value_depth,
        content_in_attributes=cfg.otlp.content_in_attributes,
    )


def pairing_settings(cfg: CollectorConfig) -> StageSettings:
    """The pairing stage settings the configuration asks for."""
    p = cfg.pairing
    return StageSettings(
        interval_s=p.interval_s,
        lookback_s=p.lookback_s,
        rules=PairingSettings(
            window_ns=int(p.window_s * 1e9),
            settle_ns=int(p.settle_s * 1e9),
            min_heuristic_confidence=p.min_heuristic_confidence,
            retry_gap_ns=int(p.retry_gap_s * 1e9),
        ),
        enabled=p.enabled,
    )


def call_table_settings(cfg: CollectorConfig) -> CallTableSettings:
    """The call-table stage settings the configuration asks for."""
    c = cfg.calls
    return CallTableSettings(
        interval_s=c.refresh_interval_s,
        max_busy_share=c.max_busy_share,
        max_interval_s=max(c.max_refresh_interval_s, c.refresh_interval_s),
        rows=CallRowSettings(
            overlap_s=c.overlap_s,
            join_window_s=c.join_window_s,
            pair_lookback_s=cfg.pairing.lookback_s,
        ),
    )


def _stop_pool(pool: DecodePool | None) -> None:
    if pool is not None:
        pool.stop()


class Collector:
    """One collector process."""

    def __init__(self, cfg: CollectorConfig) -> None:
        self.cfg = cfg
        self.ports = BoundPorts()
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """Begin a clean shutdown (signal handlers call this)."""
        self._stop.set()

    async def run(self) -> None:
        """Serve until `request_stop()`; then flush everything acknowledged and close."""
        cfg = self.cfg
        host = cfg.server.host
        http_sock = _bind(host, cfg.server.otlp_http_port, "OTLP/HTTP", "--otlp-http-port")
        api_sock = _bind(host, cfg.server.api_port, "the API", "--api-port")
        self.ports.otlp_http = http_sock.getsockname()[1]
        self.ports.api = api_sock.getsockname()[1]

        try:
            db = Database(
                cfg.store.db,
                DatabaseTuning(
                    checkpoint_threshold=cfg.store.checkpoint_threshold,
                    memory_limit=cfg.store.memory_limit,
                ),
            )
        except duckdb.IOException as exc:
            http_sock.close()
            api_sock.close()
            raise StartupError(
                f"cannot open the store {cfg.store.db}: {exc} (is another collector using it?)"
            ) from None
        load_fts(db)  # LOAD is refused once the database is locked down
        install_shims(db)  # the PostgreSQL catalog shims are created before the lockdown too
        try:
            load_prices(db, cfg.analytics.prices_file)
        except (OSError, ValueError) as exc:
            db.close()
            raise StartupError(f"price table: {exc}") from None
        db.lock_down()
        metrics = SelfMetrics()
        writer = StoreWriter(
            db,
            max_queue_batches=cfg.store.max_queue_batches,
            max_group_rows=cfg.store.max_group_rows,
            on_commit=metrics.observe_commit,
        )
        metrics.watch_writer(writer)
        metrics.registry.register(DcgmCollector(db, freshness_s=cfg.gpu.dcgm_freshness_s))
        metrics.registry.register(GenAIStoreCollector(db))
        writer.start()
        limits = receiver_limits(cfg)
        pool = DecodePool(cfg.otlp.decode_workers, limits) if cfg.otlp.decode_workers else None
        if pool is not None:
            pool.start()  # the workers import the decoders while the rest starts up
        state = CollectorState(
            db=db,
            writer=writer,
            runner=QueryRunner(db, cfg.sql.row_limit, cfg.sql.timeout_s),
            registry=metrics.registry,
        )
        try:
            grpc_server = build_grpc_server(
                writer,
                limits,
                host,
                cfg.server.otlp_grpc_port,
                registry=metrics.registry,
                pool=pool,
            )
        except (OSError, RuntimeError) as exc:
            _stop_pool(pool)
            writer.stop()
            db.close()
            raise StartupError(f"{exc} (change --otlp-grpc-port)") from None
        self.ports.otlp_grpc = grpc_server.bound_port
        otlp_app = build_http_app(writer, limits, registry=metrics.registry, pool=pool)
        api_app = build_api_app(
            state, search_refresh_interval_s=cfg.analytics.search_refresh_interval_s
        )
        level = cfg.server.log_level
        servers = [
            _Server(
                uvicorn.Config(
                    otlp_app,
                    log_level=level,
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=30,
                )
            ),
            _Server(
                uvicorn.Config(
                    api_app,
                    log_level=level,
                    access_log=False,
                    lifespan="off",
                    timeout_graceful_shutdown=5,
                )
            ),
        ]
        try:
            pg_server = await self._start_pgwire(db)
        except StartupError:
            _stop_pool(pool)
            writer.stop()
            db.close()
            raise
        await grpc_server.server.start()
        tasks = [
            asyncio.create_task(servers[0].serve(sockets=[http_sock])),
            asyncio.create_task(servers[1].serve(sockets=[api_sock])),
        ]
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.02)
        pairing = start_pairing(db, metrics.registry, pairing_settings(cfg))
        calls = start_call_table(db, metrics.registry, call_table_settings(cfg))
        state.ready.set()
        log.info(
            "collector ready: OTLP gRPC %s:%d, OTLP HTTP %s:%d, API http://%s:%d, "
            "PostgreSQL %s, store %s",
            host,
            self.ports.otlp_grpc,
            host,
            self.ports.otlp_http,
            host,
            self.ports.api,
            f"{cfg.pgwire.host}:{self.ports.pgwire}" if pg_server is not None else "off",
            cfg.store.db,
        )
        stop_waiter = asyncio.create_task(self._stop.wait())
        await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down: finishing in-flight exports")
        state.ready.clear()
        await grpc_server.server.stop(grace=30)
        if pg_server is not None:
            await pg_server.stop()
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_waiter.cancel()
        pairing.stop()  # before the writer and the store close
        _stop_pool(pool)
        writer.stop()
        calls.stop()  # last: its final pass folds the last spans and pairs into llm_calls
        try:
            db.checkpoint()
        finally:
            db.close()
        log.info("collector stopped; everything acknowledged is stored")

    async def _start_pgwire(self, db: Database) -> PgWireServer | None:
        pg = self.cfg.pgwire
        if not pg.enabled:
            return None
        settings = PgWireSettings(
            host=pg.host,
            port=pg.port,
            users=pg.users,
            auth_method=pg.auth_method,
            tls_cert_file=pg.tls_cert_file,
            tls_key_file=pg.tls_key_file,
            require_tls=pg.require_tls,
            statement_timeout_s=self.cfg.sql.timeout_s,
            row_limit=pg.row_limit,
            max_connections=pg.max_connections,
        )
        try:
            settings.validate()
            server = PgWireServer(DuckDBBackend(db, settings.batch_rows), settings)
            self.ports.pgwire = await server.start()
        except (ValueError, OSError) as exc:
            raise StartupError(f"PostgreSQL endpoint: {exc} (see pgwire.* settings)") from None
        return server


def run_collector(cfg: CollectorConfig) -> None:
    """Run a collector in this process until SIGTERM or SIGINT."""
    collector = Collector(cfg)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, collector.request_stop)
        await collector.run()

    asyncio.run(main())
