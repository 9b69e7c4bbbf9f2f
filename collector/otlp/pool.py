"""Decoding OTLP exports in worker processes, beside the process that receives and stores them.

Takes binary protobuf export bodies with their signal and receive time; gives, per body, the
`Decoded` result (accepted and rejected counts, reasons, Arrow tables) and the count of spans
whose GenAI normalization raised. Each worker parses the body with protobuf, runs the same
decoder the receiving process would (`Signal.decode`), and hands the tables back as Arrow IPC
streams, which the receiving process maps without copying them again.

Why: decoding is Python and holds a GIL for its whole length. In the receiving process it
competes with the store writer, which needs the same GIL between the stretches DuckDB runs
without it, so every commit waits for decoding and the collector uses little more than one core.
Workers have their own GILs; the receiving process is left to move bytes and commit.

Errors surface as `ExportError` with the kind the in-process path would give: `invalid` for a
body that is not the export it claims to be (the same messages as `ingest.parse_protobuf`),
`internal` when a decoder raised, `unavailable` when a worker died (the pool is rebuilt and
the client told to retry).
Must not: leave worker processes behind when the collector stops or is killed, or let work
queue up without bound (at most two exports per worker are handed over at a time; the others
wait, bodies in hand, as they would for the event loop).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal as signals
import threading
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import pyarrow as pa
from google.protobuf.message import Message

from collector.otlp.counters import ReceiverCounters
from collector.otlp.ingest import SIGNALS, ErrorKind, ExportError, Signal, parse_protobuf, store
from collector.otlp.limits import ReceiverLimits
from collector.otlp.values import Decoded, DecodeStats
from store.writer import StoreWriter

log = logging.getLogger(__name__)

#: Exports handed to the worker processes at a time, per worker: one being decoded and one
#: waiting, so a worker never idles between two exports.
_IN_FLIGHT_PER_WORKER = 2
#: How often a worker checks that the collector that started it is still alive.
_PARENT_CHECK_S = 1.0
_KINDS: dict[str, ErrorKind] = {
    "invalid": "invalid",
    "too_large": "too_large",
    "unavailable": "unavailable",
    "internal": "internal",
}


@dataclass(slots=True)
class PooledResult:
    """What a worker sends back for one export."""

    error_kind: str | None = None
    error_message: str = ""
    error_detail: str = ""
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    normalize_errors: int = 0
    tables: dict[str, bytes] = field(default_factory=dict)
    """Arrow IPC streams by store table name."""


# -- worker side ----------------------------------------------------------------------------

_worker_limits = ReceiverLimits()


def _watch_parent(parent_pid: int) -> None:
    # A collector killed with SIGKILL cannot stop its workers; they notice being re-parented.
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_CHECK_S)
    os._exit(0)


def _init_worker(limits: ReceiverLimits, parent_pid: int) -> None:
    global _worker_limits
    _worker_limits = limits
    # The collector decides when its workers stop (and they notice when it is gone): a Ctrl-C
    # or a SIGTERM sent to the whole process group must not kill them under in-flight exports.
    signals.signal(signals.SIGINT, signals.SIG_IGN)
    signals.signal(signals.SIGTERM, signals.SIG_IGN)
    # Everything alive now (modules, constant tables) lives as long as the worker: keep the
    # worker's cyclic garbage collector from walking it again on every full collection.
    gc.freeze()
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True
    ).start()


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _ready() -> int:
    return os.getpid()


def decode_in_worker(signal_name: str, body: bytes, received_unix_ns: int) -> PooledResult:
    """Parse and decode one export (runs in a worker process; public for tests)."""
    signal = SIGNALS[signal_name]
    try:
        request = parse_protobuf(signal, body)
    except ExportError as exc:
        return PooledResult(error_kind=exc.kind, error_message=exc.message)
    stats = DecodeStats()
    try:
        decoded = signal.decode(request, _worker_limits, received_unix_ns, stats)
        tables = {name: _ipc_bytes(table) for name, table in decoded.tables.items()}
    except Exception as exc:
        return PooledResult(
            error_kind="internal",
            error_message=f"could not decode the export: {exc}",
            error_detail=traceback.format_exc(),
            normalize_errors=stats.normalize_errors,
        )
    return PooledResult(
        accepted=decoded.accepted,
        rejected=decoded.rejected,
        reasons=decoded.reasons,
        normalize_errors=stats.normalize_errors,
        tables=tables,
    )


# -- receiving side -------------------------------------------------------------------------


def _tables(streams: dict[str, bytes]) -> dict[str, pa.Table]:
    return {name: pa.ipc.open_stream(data).read_all() for name, data in streams.items()}


class DecodePool:
    """Worker processes that decode exports for the receivers of one collector."""

    def __init__(self, workers: int, limits: ReceiverLimits) -> None:
        if workers < 1:
            raise ValueError("a decode pool needs at least one worker")
        self.workers = workers
        self.limits = limits
        # Spawned, not forked: the collector runs gRPC and DuckDB threads, which a fork would
        # copy in whatever state they happen to be.
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._stopped = False
        self.restarts = 0

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._context,
            initializer=_init_worker,
            initargs=(self.limits, os.getpid()),
        )

    def start(self) -> list[Future[int]]:
        """Start every worker now rather than on the first export; returns one future per
        worker that resolves when a worker has imported the decoders."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the decode pool is stopped")
            if self._executor is None:
                self._executor = self._new_executor()
            executor = self._executor
        return [executor.submit(_ready) for _ in range(self.workers)]

    def worker_pids(self) -> list[int]:
        """Process ids of the workers running now (for self-checks and tests)."""
        with self._lock:
            executor = self._executor
        if executor is None:
            return []
        processes = getattr(executor, "_processes", None) or {}
        return sorted(int(pid) for pid in processes)

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._stopped:
                raise ExportError("unavailable", "the collector is shutting down; retry later")
            if self._executor is None:
                self._executor = self._new_executor()
            return self._executor

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is not broken or self._stopped:
                return
            self._executor = self._new_executor()
            self.restarts += 1
        broken.shutdown(wait=False, cancel_futures=True)
        log.warning("a decoding process died; started a new pool of %d", self.workers)

    async def decode(
        self, signal: Signal, body: bytes, received_unix_ns: int, counters: ReceiverCounters
    ) -> Decoded:
        """Decode one binary export in a worker (see the module docstring for the errors)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers * _IN_FLIGHT_PER_WORKER)
        async with self._slots:
            executor = self._current()
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(
                    executor, decode_in_worker, signal.name, body, received_unix_ns
                )
            except BrokenProcessPool:
                self._replace(executor)
                raise ExportError("unavailable", "a decoding process failed; retry later") from None
            except RuntimeError as exc:  # submitted while the pool was being shut down
                raise ExportError(
                    "unavailable", f"cannot decode now ({exc}); retry later"
                ) from None
        if result.normalize_errors:
            counters.normalize_errors.inc(result.normalize_errors)
        if result.error_kind is not None:
            if result.error_kind == "internal":
                log.error(
                    "decoding an OTLP %s export failed in a worker:\n%s",
                    signal.name,
                    result.error_detail,
                )
            raise ExportError(_KINDS.get(result.error_kind, "internal"), result.error_message)
        return Decoded(
            tables=_tables(result.tables),
            accepted=result.accepted,
            rejected=result.rejected,
            reasons=result.reasons,
        )

    def stop(self) -> None:
        """Stop the workers (after the exports they hold are decoded). Safe to call twice."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


async def export_pooled(
    signal: Signal,
    body: bytes,
    *,
    pool: DecodePool,
    writer: StoreWriter,
    counters: ReceiverCounters,
    transport: str,
) -> Message:
    """`ingest.export` for a binary body decoded by `pool`: decode, store, return the response
    to send after the commit."""
    decoded = await pool.decode(signal, body, time.time_ns(), counters)
    return await store(signal, decoded, writer=writer, counters=counters, transport=transport)
