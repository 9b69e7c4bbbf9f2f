"""Load senders: one process each, pre-encoded OTLP exports out over HTTP or gRPC.

Takes an endpoint, a protocol and a share of the load (template seeds); gives, per timed run,
a `SendResult` (spans acknowledged, requests, retries, errors, the sender's own CPU seconds).
Each sender builds its requests before the run starts, keeps one export in flight (as an OTel
SDK batch exporter does) and stamps fresh ids into each request, so its CPU stays small and the
collector is what the run measures. A refused export (HTTP 429/502/503/504, gRPC UNAVAILABLE or
RESOURCE_EXHAUSTED) is retried after `retry_backoff_s`, the same for every target.
`SenderPool` runs the processes (spawned, so none inherits the parent's threads) and talks to
them over pipes. Must not: re-encode protobuf during a run, or count an export before its answer.
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal
from urllib.parse import urlsplit

from _ingest.load import RequestTemplate, build_templates

Protocol = Literal["http", "grpc"]

GRPC_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_RETRY_HTTP = frozenset((429, 502, 503, 504))
#: Sequence numbers one pool may use; pools take consecutive blocks of the 32-bit space.
_SEQ_BLOCK = 1 << 24
_pools_started = 0
#: Give up on a refused export this long after the run's end (counted as an error).
_RETRY_GRACE_S = 30.0


@dataclass(slots=True)
class SendResult:
    """What one sender did in one run."""

    acked_spans: int = 0
    rejected_spans: int = 0
    requests: int = 0
    retries: int = 0
    errors: int = 0
    first_error: str = ""
    cpu_s: float = 0.0
    last_ack_mono_s: float = 0.0
    export_s: list[float] = field(default_factory=list)


class ExportOutcome:
    """How one export attempt ended."""

    OK = 0
    RETRY = 1
    ERROR = 2


def _rejected_spans(response_body: bytes) -> int:
    if not response_body:
        return 0
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    resp = ExportTraceServiceResponse.FromString(response_body)
    return int(resp.partial_success.rejected_spans)


class HttpExporter:
    """OTLP/HTTP protobuf over one keep-alive connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._path = parts.path or "/v1/traces"
        self._conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
        self._headers = {"Content-Type": "application/x-protobuf"}

    def export(self, body: bytes) -> tuple[int, int, str]:
        """Send one request; return (outcome, rejected spans, error text)."""
        # A server may close an idle keep-alive connection between runs; the first failure on
        # a reused connection is retried at once on a new one, as HTTP clients do.
        for attempt in range(2):
            try:
                self._conn.request("POST", self._path, body, self._headers)
                resp = self._conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._conn.close()
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
                if attempt:
                    return ExportOutcome.RETRY, 0, f"connection: {exc!r}"
        if resp.status == 200:
            return ExportOutcome.OK, _rejected_spans(data), ""
        if resp.status in _RETRY_HTTP:
            return ExportOutcome.RETRY, 0, f"HTTP {resp.status}"
        return ExportOutcome.ERROR, 0, f"HTTP {resp.status}: {data[:200]!r}"

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class GrpcExporter:
    """OTLP/gRPC with the request bytes handed to gRPC as they are (no re-serialization)."""

    def __init__(self, target: str) -> None:
        import grpc

        self._grpc = grpc
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        grpc.channel_ready_future(self._channel).result(timeout=30)
        self._call: Callable[..., bytes] = self._channel.unary_unary(
            GRPC_EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )
        self._retry_codes = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}

    def export(self, body: bytes) -> tuple[int, int, str]:
        """Send one request; return (outcome, rejected spans, error text)."""
        try:
            data = self._call(body, timeout=120)
        except self._grpc.RpcError as exc:
            code = exc.code()
            text = f"gRPC {code.name}: {exc.details()}"
            if code in self._retry_codes:
                return ExportOutcome.RETRY, 0, text
            return ExportOutcome.ERROR, 0, text
        return ExportOutcome.OK, _rejected_spans(data), ""

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


def make_exporter(protocol: Protocol, endpoint: str) -> HttpExporter | GrpcExporter:
    """An exporter for `endpoint` (a URL for HTTP, host:port for gRPC)."""
    return HttpExporter(endpoint) if protocol == "http" else GrpcExporter(endpoint)


def _run(
    index: int,
    exporter: HttpExporter | GrpcExporter,
    templates: list[RequestTemplate],
    seq: int,
    start_mono_s: float,
    stop_mono_s: float,
    max_requests: int,
    retry_backoff_s: float,
) -> tuple[SendResult, int]:
    result = SendResult()
    cpu0 = time.process_time()
    delay = start_mono_s - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    sent = 0
    while sent < max_requests and time.monotonic() < stop_mono_s:
        sent += 1
        template = templates[seq % len(templates)]
        body = template.stamp(index, seq)
        seq += 1
        while True:
            sent_mono = time.monotonic()
            outcome, rejected, error = exporter.export(body)
            now = time.monotonic()
            if outcome == ExportOutcome.OK:
                result.requests += 1
                result.acked_spans += template.spans - rejected
                result.rejected_spans += rejected
                result.last_ack_mono_s = now
                result.export_s.append(now - sent_mono)
                break
            if outcome == ExportOutcome.RETRY and now < stop_mono_s + _RETRY_GRACE_S:
                result.retries += 1
                time.sleep(retry_backoff_s)
                continue
            result.errors += 1
            result.first_error = result.first_error or error
            break
    result.cpu_s = time.process_time() - cpu0
    return result, seq


def sender_main(
    conn: Connection,
    index: int,
    protocol: Protocol,
    endpoint: str,
    seeds: list[int],
    spans_per_request: int,
    retry_backoff_s: float,
    first_seq: int,
) -> None:
    """Body of one sender process: build the requests, then serve run commands."""
    templates = [t for s in seeds for t in build_templates(s, 1, spans_per_request)]
    exporter = make_exporter(protocol, endpoint)
    conn.send(("ready", sum(len(t.body) for t in templates) // len(templates)))
    seq = first_seq
    try:
        while True:
            command = conn.recv()
            if command[0] == "stop":
                break
            _, start_mono_s, stop_mono_s, max_requests = command
            result, seq = _run(
                index,
                exporter,
                templates,
                seq,
                start_mono_s,
                stop_mono_s,
                max_requests,
                retry_backoff_s,
            )
            conn.send(("done", result))
    finally:
        exporter.close()


class SenderPool:
    """N sender processes pointed at one endpoint."""

    def __init__(
        self,
        protocol: Protocol,
        endpoint: str,
        senders: int,
        seeds_per_sender: int,
        spans_per_request: int,
        retry_backoff_s: float,
    ) -> None:
        # Each pool numbers its exports from its own block, so two pools aimed at one server
        # never send the same ids (Phoenix would keep only the first span with a given id).
        global _pools_started
        first_seq = _pools_started * _SEQ_BLOCK
        _pools_started += 1
        ctx = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[Any] = []
        for i in range(senders):
            parent, child = ctx.Pipe()
            seeds = [1000 * (i + 1) + k for k in range(seeds_per_sender)]
            proc = ctx.Process(
                target=sender_main,
                args=(
                    child,
                    i,
                    protocol,
                    endpoint,
                    seeds,
                    spans_per_request,
                    retry_backoff_s,
                    first_seq,
                ),
                name=f"bench-sender-{i}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._pipes.append(parent)
            self._procs.append(proc)
        self.request_bytes = 0
        for pipe in self._pipes:
            if not pipe.poll(120):
                self.close()
                raise RuntimeError("a sender did not get ready within 120 s")
            tag, size = pipe.recv()
            assert tag == "ready"
            self.request_bytes = size

    @property
    def senders(self) -> int:
        """How many sender processes the pool has."""
        return len(self._pipes)

    def run(
        self, start_mono_s: float, stop_mono_s: float, requests: int | None = None
    ) -> list[SendResult]:
        """Send from every process from `start_mono_s` until `stop_mono_s` or until `requests`
        exports (split evenly between the senders) are acknowledged; return their results."""
        shares = [1 << 62] * len(self._pipes)
        if requests is not None:
            base, extra = divmod(requests, len(self._pipes))
            shares = [base + (1 if i < extra else 0) for i in range(len(self._pipes))]
        for pipe, share in zip(self._pipes, shares, strict=True):
            pipe.send(("run", start_mono_s, stop_mono_s, share))
        results: list[SendResult] = []
        for pipe in self._pipes:
            tag, result = pipe.recv()
            assert tag == "done"
            results.append(result)
        return results

    def close(self) -> None:
        """Stop every process (safe twice)."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        self._pipes.clear()
        self._procs.clear()


def seeds_for(senders: int, seeds_per_sender: int) -> list[int]:
    """Every template seed the senders of a pool use (the raw ceiling replays the same)."""
    return [1000 * (i + 1) + k for i in range(senders) for k in range(seeds_per_sender)]
