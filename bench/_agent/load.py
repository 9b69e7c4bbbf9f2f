"""Closed-loop chat load on the loopback model server: worker processes in, call records out.

Takes the server's port, the number of workers and the share of streaming calls; gives, when
stopped, every call's (start mono_ns, end mono_ns, streamed, ok). Each worker is its own process
with one keep-alive HTTP/1.1 connection (stdlib `http.client`, so the client's own cost stays
small and steady) making one call at a time: non-streaming chat calls and streaming ones with
`stream_options.include_usage`, interleaved. The clocks are CLOCK_MONOTONIC, shared by every
process, so the caller can cut the records into phases afterwards. Must not: talk to anything
but 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import struct
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path

_RECORD = struct.Struct("<qqBB")


@dataclass(frozen=True, slots=True)
class Call:
    """One call as its client saw it."""

    start_mono_ns: int
    end_mono_ns: int
    streamed: bool
    ok: bool


def _body(worker: int, seq: int, streamed: bool) -> bytes:
    body: dict[str, object] = {
        "model": "bench-model",
        "messages": [
            {"role": "system", "content": "You answer in one sentence."},
            {"role": "user", "content": f"worker {worker} question {seq}: what is a KV cache?"},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
    }
    if streamed:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def _worker(worker: int, port: int, stream_every: int, stop: Event, out: str) -> None:
    records = bytearray()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    seq = 0
    while not stop.is_set():
        streamed = stream_every > 0 and seq % stream_every == 0
        body = _body(worker, seq, streamed)
        start_ns = time.monotonic_ns()
        ok = False
        try:
            conn.request("POST", "/v1/chat/completions", body, headers)
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        records += _RECORD.pack(start_ns, time.monotonic_ns(), streamed, ok)
        seq += 1
    conn.close()
    Path(out).write_bytes(bytes(records))


class LoadPool:
    """`workers` client processes running until `stop()`."""

    def __init__(self, port: int, workers: int, stream_every: int) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="infersight-agent-bench-")
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._files = [str(Path(self._dir.name) / f"w{i}.bin") for i in range(workers)]
        self._procs = [
            ctx.Process(
                target=_worker,
                args=(i, port, stream_every, self._stop, self._files[i]),
                name=f"bench-client-{i}",
                daemon=True,
            )
            for i in range(workers)
        ]

    def start(self) -> None:
        for p in self._procs:
            p.start()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def stop(self) -> list[Call]:
        """Stop every worker and return all their calls, ordered by start."""
        self._stop.set()
        for p in self._procs:
            p.join(60)
        calls: list[Call] = []
        for f in self._files:
            path = Path(f)
            if not path.exists():
                continue
            data = path.read_bytes()
            for start_ns, end_ns, streamed, ok in _RECORD.iter_unpack(data):
                calls.append(Call(start_ns, end_ns, bool(streamed), bool(ok)))
        self._dir.cleanup()
        calls.sort(key=lambda c: c.start_mono_ns)
        return calls
