"""The raw ceiling: the same export requests decoded and stored in one process, no network.

Takes a DuckDB path and the template seeds the senders use; gives, per timed run, a
`CeilingResult` (spans stored, seconds from the first decode to the last commit, CPU seconds).
Each request is parsed with protobuf and decoded with the collector's own `decode_traces`; the
Arrow tables are then stored in one of two ways:
  - "writer": handed to the store's `StoreWriter` (its thread groups them into commits), the
    collector's own path, with the decoding thread running ahead as far as the queue allows;
  - "direct": `group` decoded requests inserted with register + INSERT in one transaction on
    the decoding thread itself, so decoding and inserting never compete for the GIL.
The run ends with the last commit. The work runs in its own spawned process, so it gets the
same kind of fresh interpreter a collector does.
Must not: skip any step the collector performs between the request bytes and the commit.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import pyarrow as pa

from _ingest.cpu import CpuSnapshot
from _ingest.load import RequestTemplate, build_template
from store.writer import QueueFullError, StoreWriter

#: Sender number stamped into the ceiling's ids (load senders use small numbers).
_CEILING_SENDER = 0xF0


@dataclass(slots=True)
class CeilingResult:
    """One timed run of the in-process decode-and-store loop."""

    mode: str
    spans: int
    elapsed_s: float
    cpu_s: float
    stored_after: int
    others_cores: float = 0.0


def _run_writer(
    templates: list[RequestTemplate],
    seq: int,
    duration_s: float,
    writer: StoreWriter,
    decode: Callable[[bytes], Any],
) -> tuple[int, int]:
    """Decode on this thread, store on the writer thread, as the collector does."""
    pending: deque[Future[int]] = deque()
    spans = 0
    stop = time.monotonic() + duration_s
    while time.monotonic() < stop:
        template = templates[seq % len(templates)]
        decoded = decode(template.stamp(_CEILING_SENDER, seq))
        seq += 1
        while True:
            try:
                pending.append(writer.submit(decoded.tables))
                break
            except QueueFullError:
                pending.popleft().result()
        spans += decoded.accepted
        while pending and pending[0].done():
            pending.popleft().result()
    for future in pending:
        future.result()
    return spans, seq


def _run_direct(
    templates: list[RequestTemplate],
    seq: int,
    duration_s: float,
    con: Any,
    decode: Callable[[bytes], Any],
    group: int,
) -> tuple[int, int]:
    """Decode `group` requests, then insert them in one transaction, all on this thread."""
    spans = 0
    stop = time.monotonic() + duration_s
    while time.monotonic() < stop:
        by_table: dict[str, list[pa.Table]] = {}
        for _ in range(group):
            template = templates[seq % len(templates)]
            decoded = decode(template.stamp(_CEILING_SENDER, seq))
            seq += 1
            spans += decoded.accepted
            for name, table in decoded.tables.items():
                by_table.setdefault(name, []).append(table)
        con.execute("BEGIN TRANSACTION")
        for name, parts in by_table.items():
            con.register("_bench_batch", pa.concat_tables(parts))
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _bench_batch")
            con.unregister("_bench_batch")
        con.execute("COMMIT")
    return spans, seq


def ceiling_main(
    conn: Connection, db_path: str, seeds: list[int], spans_per_request: int, group: int
) -> None:
    """Body of the ceiling process: build, open the store, then serve run commands."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from collector.otlp.decode_traces import decode_traces
    from collector.otlp.limits import ReceiverLimits
    from store.database import Database

    templates = [build_template(s, spans_per_request) for s in seeds]
    db = Database(db_path)
    writer = StoreWriter(db)
    writer.start()
    limits = ReceiverLimits()
    direct = db.cursor()
    reader = db.cursor()

    def decode(body: bytes) -> Any:
        return decode_traces(ExportTraceServiceRequest.FromString(body), limits, time.time_ns())

    conn.send(("ready",))
    seq = 0
    while True:
        command = conn.recv()
        if command[0] == "stop":
            break
        _, mode, duration_s = command
        cpu0 = time.process_time()
        start = time.monotonic()
        if mode == "writer":
            spans, seq = _run_writer(templates, seq, float(duration_s), writer, decode)
        else:
            spans, seq = _run_direct(templates, seq, float(duration_s), direct, decode, group)
        elapsed = time.monotonic() - start
        row = reader.execute("SELECT count(*) FROM spans").fetchone()
        conn.send(
            (
                "done",
                CeilingResult(
                    mode, spans, elapsed, time.process_time() - cpu0, int(row[0]) if row else 0
                ),
            )
        )
    writer.stop()
    direct.close()
    reader.close()
    db.close()


class CeilingProcess:
    """The ceiling loop in a spawned process."""

    def __init__(self, db_path: str, seeds: list[int], spans_per_request: int, group: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc: Any = ctx.Process(
            target=ceiling_main,
            args=(child, db_path, seeds, spans_per_request, group),
            name="bench-ceiling",
            daemon=True,
        )
        self._proc.start()
        child.close()
        if not self._pipe.poll(180):
            self.close()
            raise RuntimeError("the ceiling process did not get ready within 180 s")
        self._pipe.recv()

    def run(self, mode: str, duration_s: float) -> CeilingResult:
        """Decode and store for `duration_s` ("writer" or "direct"), until the last commit."""
        cpu0 = CpuSnapshot.take(None)
        t0 = time.monotonic()
        self._pipe.send(("run", mode, duration_s))
        tag, result = self._pipe.recv()
        cpu1 = CpuSnapshot.take(None)
        assert tag == "done"
        assert isinstance(result, CeilingResult)
        others = (cpu1.machine_s - cpu0.machine_s) - result.cpu_s - (cpu1.self_s - cpu0.self_s)
        result.others_cores = max(others, 0.0) / (time.monotonic() - t0)
        return result

    def close(self) -> None:
        """Stop the process (safe twice)."""
        with contextlib.suppress(OSError):
            self._pipe.send(("stop",))
        self._proc.join(60)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)


def _gil_check_main(
    conn: Connection, db_path: str, seeds: list[int], spans_per_request: int, duration_s: float
) -> None:
    """Commit time of the StoreWriter alone and beside a thread that keeps the GIL busy."""
    import sys
    import threading

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from collector.otlp.decode_traces import decode_traces
    from collector.otlp.limits import ReceiverLimits
    from store.database import Database

    limits = ReceiverLimits()
    batches = [
        decode_traces(
            ExportTraceServiceRequest.FromString(build_template(s, spans_per_request).body),
            limits,
            time.time_ns(),
        ).tables
        for s in seeds
    ]
    db = Database(db_path)
    writer = StoreWriter(db)
    writer.start()

    def spin(stop: threading.Event) -> None:
        # Stands in for the event loop decoding exports: pure Python, never blocking.
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x += i * i

    rows: list[tuple[float, bool, float]] = []
    for interval_s in (0.005, 0.0005):
        sys.setswitchinterval(interval_s)
        for busy in (False, True):
            stop = threading.Event()
            spinner = threading.Thread(target=spin, args=(stop,), daemon=True)
            if busy:
                spinner.start()
            commits0, seconds0 = writer.stats.commits, writer.stats.commit_seconds_total
            end = time.monotonic() + duration_s
            k = 0
            while time.monotonic() < end:
                # Four exports per commit, about what the collector groups under load.
                group = [writer.submit(batches[(k + j) % len(batches)]) for j in range(4)]
                for future in group:
                    future.result()
                k += 4
            stop.set()
            if busy:
                spinner.join()
            commits = writer.stats.commits - commits0
            seconds = writer.stats.commit_seconds_total - seconds0
            rows.append((interval_s, busy, seconds / max(commits, 1)))
    writer.stop()
    db.close()
    conn.send(("done", rows))


def gil_check(
    db_path: str, seeds: list[int], spans_per_request: int, duration_s: float
) -> list[tuple[float, bool, float]]:
    """(switch interval s, busy thread?, seconds per commit) for each combination."""
    ctx = multiprocessing.get_context("spawn")
    pipe, child = ctx.Pipe()
    proc: Any = ctx.Process(
        target=_gil_check_main,
        args=(child, db_path, seeds, spans_per_request, duration_s),
        name="bench-gil-check",
        daemon=True,
    )
    proc.start()
    child.close()
    try:
        tag, rows = pipe.recv()
        assert tag == "done"
        return list(rows)
    finally:
        proc.join(30)
