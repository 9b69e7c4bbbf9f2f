"""The agent's completeness accounting: what it saw, what it made of it, and what it lost.

Takes in: the agent's own counters (`AgentCounters`, bumped by the processing thread), and
callables that read the capture's, the span exporter's, the Kubernetes resolver's, the OTLP
relay's and node-local pairing's counters at collection time. Gives out: one list of readings
(`SelfMetrics.readings()`) served two ways, so the two can never disagree: Prometheus text on
`/metrics` (`serve()`, port 9464 by default, `infersight_agent_*`) and OTLP observable
instruments on the agent's meter (`register()`, `infersight.agent.*`, shipped to the collector
with the GenAI metrics).

Every exchange the agent handles ends in exactly one `infersight.agent.exchanges` outcome:
`llm` (a recognised LLM call, exported as a span), `not_llm`, `parse_error` (a parser accepted
it and then failed) or `filtered` (outside the namespace filter). Losses before that are the
capture's: records the kernel ring buffer dropped, events the bounded queue dropped, exchanges
nobody consumed; plus truncated exchanges, requests whose response never came, and HTTP/2
connections (not decoded).

The relay's books, per signal in items (spans, data points, log records): `accepted` (in the
buffer or held for pairing, answered 200), `relayed` (the collector took them), `refused_full`
(answered 503 / UNAVAILABLE: the buffer was full, the sender retries), `rejected` (the collector
refused them one by one) and `failed` (retries exhausted, a permanent error, or undelivered at
stop). Accepted = relayed + rejected + failed + what is still buffered or held.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.capture.pipeline import CaptureStats
from agent.k8s.resolver import ResolverStats
from agent.pair.node import NodePairingStats

OUTCOMES: Final = ("llm", "not_llm", "parse_error", "filtered")


class AgentCounters:
    """Counts kept by the agent's processing thread (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exchanges: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()
        self._truncated_calls = 0
        self._spans = 0
        self._parse_failures: Counter[str] = Counter()

    def exchange(self, outcome: str) -> None:
        """One exchange handled, with its outcome (one of `OUTCOMES`)."""
        with self._lock:
            self._exchanges[outcome] += 1

    def call(self, role: str, *, truncated: bool) -> None:
        """One LLM call exported as a span from the given side (`client` or `server`)."""
        with self._lock:
            self._calls[role] += 1
            self._spans += 1
            if truncated:
                self._truncated_calls += 1

    def parse_failure(self, parser: str) -> None:
        with self._lock:
            self._parse_failures[parser] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "exchanges": {o: self._exchanges.get(o, 0) for o in OUTCOMES},
                "calls": dict(self._calls),
                "truncated_calls": self._truncated_calls,
                "spans": self._spans,
                "parse_failures": dict(self._parse_failures),
            }


@dataclass(frozen=True)
class Reading:
    """One value of one self-metric."""

    name: str  # OTel name, `infersight.agent.*`
    kind: str  # "counter" or "gauge"
    unit: str
    description: str
    value: float
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def prometheus_name(self) -> str:
        return self.name.replace(".", "_")


@dataclass(frozen=True)
class _Spec:
    kind: str
    unit: str
    description: str


SPECS: Final[dict[str, _Spec]] = {
    "infersight.agent.exchanges": _Spec(
        "counter", "{exchange}", "HTTP exchanges handled by the agent, by outcome."
    ),
    "infersight.agent.llm_calls": _Spec(
        "counter", "{call}", "LLM calls exported as spans, by side (client or server)."
    ),
    "infersight.agent.llm_calls.truncated": _Spec(
        "counter", "{call}", "Exported LLM calls of which part was not captured."
    ),
    "infersight.agent.parse_errors": _Spec(
        "counter", "{exchange}", "Exchanges a provider parser accepted and then failed on."
    ),
    "infersight.agent.capture.up": _Spec(
        "gauge", "1", "1 while the eBPF capture runs, 0 when it could not start."
    ),
    "infersight.agent.capture.exchanges": _Spec(
        "counter", "{exchange}", "HTTP exchanges reassembled by the capture."
    ),
    "infersight.agent.capture.exchanges.truncated": _Spec(
        "counter", "{exchange}", "Reassembled exchanges with bytes missing."
    ),
    "infersight.agent.capture.responses_missing": _Spec(
        "counter", "{exchange}", "Requests whose response was never seen."
    ),
    "infersight.agent.capture.http2_connections": _Spec(
        "counter", "{connection}", "HTTP/2 connections seen (not decoded)."
    ),
    "infersight.agent.capture.dropped": _Spec(
        "counter",
        "{item}",
        "Items lost by stage: kernel (ring buffer records), queue (events), output "
        "(exchanges), sink_error (exchanges the agent failed on).",
    ),
    "infersight.agent.capture.events": _Spec(
        "counter", "{event}", "Kernel events received by the capture thread."
    ),
    "infersight.agent.capture.bytes_lost": _Spec(
        "counter", "By", "Payload bytes that moved but were not copied (size caps, faults)."
    ),
    "infersight.agent.capture.stream_losses": _Spec(
        "counter",
        "{record}",
        "Records that followed lost ones on their stream; request/response pairing restarted.",
    ),
    "infersight.agent.capture.queue_depth": _Spec(
        "gauge", "{event}", "Events waiting between the capture and processing threads."
    ),
    "infersight.agent.capture.open_connections": _Spec(
        "gauge", "{connection}", "Connections the capture tracks now."
    ),
    "infersight.agent.spans": _Spec(
        "counter", "{span}", "Spans by stage: emitted, exported, export_failed."
    ),
    "infersight.agent.k8s.lookups": _Spec(
        "counter", "{lookup}", "Pod lookups of containerised processes: hit or miss."
    ),
    "infersight.agent.k8s.pod_list_errors": _Spec(
        "counter", "{error}", "Failed reads of the node's pod list."
    ),
    "infersight.agent.relay.up": _Spec(
        "gauge", "1", "1 while the node's OTLP endpoint (the relay) runs."
    ),
    "infersight.agent.relay.items": _Spec(
        "counter",
        "{item}",
        "Relayed OTLP items by signal and outcome: accepted, relayed, refused_full (answered "
        "503/UNAVAILABLE, the sender retries), rejected (by the collector), failed.",
    ),
    "infersight.agent.relay.requests": _Spec(
        "counter", "{request}", "OTLP exports received, by answer: accepted, refused_full, invalid."
    ),
    "infersight.agent.relay.retries": _Spec(
        "counter", "{attempt}", "Delivery attempts to the collector after a failed one."
    ),
    "infersight.agent.relay.buffer.bytes": _Spec(
        "gauge", "By", "Bytes of accepted exports waiting for (or being sent to) the collector."
    ),
    "infersight.agent.relay.buffer.requests": _Spec(
        "gauge", "{request}", "Exports waiting for (or being sent to) the collector."
    ),
    "infersight.agent.pairing.pairs": _Spec(
        "counter", "{pair}", "SDK spans paired on the node with a capture, by method."
    ),
    "infersight.agent.pairing.retries": _Spec(
        "counter",
        "{attempt}",
        "Failed attempts folded on the node into the paired call that retried them, by method.",
    ),
    "infersight.agent.pairing.unpaired": _Spec(
        "counter", "{record}", "SDK spans and captures that went on unpaired after the hold."
    ),
    "infersight.agent.pairing.overflow": _Spec(
        "counter", "{record}", "SDK spans and captures not held because the hold was full."
    ),
    "infersight.agent.pairing.held": _Spec(
        "gauge", "{record}", "SDK spans and captures waiting for their partner now."
    ),
}

#: What the relay reading callable returns: its counters' snapshot, buffered bytes, requests.
RelayReading = tuple[dict[str, Any], int, int]


class SelfMetrics:
    """Reads every counter and serves the readings to Prometheus and OTLP."""

    def __init__(
        self,
        counters: AgentCounters,
        *,
        capture_stats: Callable[[], CaptureStats | None] = lambda: None,
        span_export: Callable[[], tuple[int, int]] | None = None,
        resolver_stats: Callable[[], ResolverStats | None] = lambda: None,
        relay: Callable[[], RelayReading | None] = lambda: None,
        pairing_stats: Callable[[], NodePairingStats | None] = lambda: None,
    ) -> None:
        self.counters = counters
        self._capture_stats = capture_stats
        self._span_export = span_export
        self._resolver_stats = resolver_stats
        self._relay = relay
        self._pairing_stats = pairing_stats
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def readings(self) -> list[Reading]:
        """Every self-metric value now."""
        out: list[Reading] = []

        def add(name: str, value: float, **attrs: str) -> None:
            spec = SPECS[name]
            out.append(Reading(name, spec.kind, spec.unit, spec.description, float(value), attrs))

        snap = self.counters.snapshot()
        for outcome, n in snap["exchanges"].items():
            add("infersight.agent.exchanges", n, outcome=outcome)
        for role in ("client", "server"):
            add("infersight.agent.llm_calls", snap["calls"].get(role, 0), role=role)
        add("infersight.agent.llm_calls.truncated", snap["truncated_calls"])
        for parser, n in sorted(snap["parse_failures"].items()):
            add("infersight.agent.parse_errors", n, parser=parser)
        stats = self._capture_stats()
        add("infersight.agent.capture.up", 1 if stats is not None else 0)
        if stats is not None:
            add("infersight.agent.capture.exchanges", stats.exchanges_seen)
            add("infersight.agent.capture.exchanges.truncated", stats.exchanges_truncated)
            add("infersight.agent.capture.responses_missing", stats.responses_missing)
            add("infersight.agent.capture.http2_connections", stats.http2_seen)
            add("infersight.agent.capture.dropped", stats.kernel_drops, stage="kernel")
            add("infersight.agent.capture.dropped", stats.queue_drops, stage="queue")
            add("infersight.agent.capture.dropped", stats.output_drops, stage="output")
            add("infersight.agent.capture.dropped", stats.sink_errors, stage="sink_error")
            add("infersight.agent.capture.events", stats.events_received)
            add("infersight.agent.capture.bytes_lost", stats.bytes_lost)
            add("infersight.agent.capture.stream_losses", stats.stream_losses)
            add("infersight.agent.capture.queue_depth", stats.queue_depth)
            add("infersight.agent.capture.open_connections", stats.open_connections)
        add("infersight.agent.spans", snap["spans"], stage="emitted")
        if self._span_export is not None:
            exported, failed = self._span_export()
            add("infersight.agent.spans", exported, stage="exported")
            add("infersight.agent.spans", failed, stage="export_failed")
        rs = self._resolver_stats()
        if rs is not None:
            add("infersight.agent.k8s.lookups", rs.pod_hits, outcome="hit")
            add("infersight.agent.k8s.lookups", rs.pod_misses, outcome="miss")
            add("infersight.agent.k8s.pod_list_errors", rs.refresh_errors)
        relay = self._relay()
        add("infersight.agent.relay.up", 1 if relay is not None else 0)
        if relay is not None:
            snap_relay, buffered_bytes, buffered_requests = relay
            for (signal, outcome), n in snap_relay["items"].items():
                add("infersight.agent.relay.items", n, signal=signal, outcome=outcome)
            for outcome, n in snap_relay["requests"].items():
                add("infersight.agent.relay.requests", n, outcome=outcome)
            add("infersight.agent.relay.retries", snap_relay["retries"])
            add("infersight.agent.relay.buffer.bytes", buffered_bytes)
            add("infersight.agent.relay.buffer.requests", buffered_requests)
        ps = self._pairing_stats()
        if ps is not None:
            for method, n in ps.pairs.items():
                add("infersight.agent.pairing.pairs", n, method=method)
            for method, n in ps.retries.items():
                add("infersight.agent.pairing.retries", n, method=method)
            for side, n in ps.unpaired.items():
                add("infersight.agent.pairing.unpaired", n, side=side)
            for side, n in ps.overflow.items():
                add("infersight.agent.pairing.overflow", n, side=side)
            for side, n in ps.held.items():
                add("infersight.agent.pairing.held", n, side=side)
        return out

    # -- OTLP ------------------------------------------------------------------------------

    def register(self, meter: Meter) -> None:
        """Create one observable instrument per self-metric on `meter`."""
        for name, spec in SPECS.items():
            callback = self._callback(name)
            if spec.kind == "counter":
                meter.create_observable_counter(name, [callback], spec.unit, spec.description)
            else:
                meter.create_observable_gauge(name, [callback], spec.unit, spec.description)

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(r.value, dict(r.attributes)) for r in self.readings() if r.name == name
            ]

        return observe

    # -- Prometheus ------------------------------------------------------------------------

    def collector(self) -> Collector:
        """A prometheus_client collector over the same readings."""
        return _PromCollector(self)

    def serve(self, host: str, port: int) -> int:
        """Serve `/metrics` on host:port from a background thread; returns the bound port."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector())
        server, thread = start_http_server(port, addr=host, registry=registry)
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])
        return self.port

    def stop(self) -> None:
        """Stop serving (safe twice)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class _PromCollector(Collector):
    def __init__(self, metrics: SelfMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        by_name: dict[str, list[Reading]] = {}
        for r in self._metrics.readings():
            by_name.setdefault(r.name, []).append(r)
        for name, readings in by_name.items():
            spec = SPECS[name]
            labels = sorted({k for r in readings for k in r.attributes})
            family: CounterMetricFamily | GaugeMetricFamily
            prom = name.replace(".", "_")
            if spec.kind == "counter":
                family = CounterMetricFamily(prom, spec.description, labels=labels)
            else:
                family = GaugeMetricFamily(prom, spec.description, labels=labels)
            for r in readings:
                family.add_metric([r.attributes.get(k, "") for k in labels], r.value)
            yield family
