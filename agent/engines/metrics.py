"""Inference-engine saturation as OpenTelemetry metrics, through the OTel SDK metrics API.

Takes in: an OTel `Meter` and an `EngineMonitor` (or anything with its `snapshot()`).
Gives out: observable gauges of requests running and waiting, KV cache usage, prefix cache hit
ratio, batch and queue size, and observable counters of prefix cache lookups and hits, one
series per engine endpoint and model, with attributes `infersight.engine.name`,
`gen_ai.request.model`, `server.address`, `server.port` and, where known, the pod
(`k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name`), `process.pid` and
`k8s.node.name`. Callbacks read the monitor's latest snapshot and never fetch anything
themselves; a value an engine does not report is left out, never sent as 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from agent.engines import names as n
from agent.engines.exposition import EngineReading
from agent.engines.monitor import EngineState

Attributes = dict[str, str | int]


class _Snapshots(Protocol):
    def snapshot(self) -> list[EngineState]: ...

    def endpoints_known(self) -> int: ...

    @property
    def scrape_errors(self) -> dict[str, int]: ...


class EngineMetrics:
    """Registers the engine instruments on `meter`; their callbacks read `monitor`."""

    def __init__(self, meter: Meter, monitor: _Snapshots, *, node_name: str | None = None) -> None:
        self._monitor = monitor
        self._node_name = node_name

        def gauge(
            name: str, unit: str, description: str, read: Callable[[EngineReading], float | None]
        ) -> None:
            meter.create_observable_gauge(name, [self._callback(read)], unit, description)

        gauge(
            n.REQUESTS_RUNNING,
            "{request}",
            "Requests the engine is processing.",
            lambda r: r.requests_running,
        )
        gauge(
            n.REQUESTS_WAITING,
            "{request}",
            "Requests waiting to be scheduled.",
            lambda r: r.requests_waiting,
        )
        gauge(
            n.KV_CACHE_USAGE,
            "1",
            "Fraction of the KV cache in use.",
            lambda r: r.kv_cache_usage_ratio,
        )
        gauge(
            n.PREFIX_CACHE_HIT_RATIO,
            "1",
            "Fraction of prompt tokens found in the prefix cache (recent interval).",
            lambda r: r.prefix_cache_hit_ratio,
        )
        gauge(n.BATCH_SIZE, "{request}", "Requests in the running batch.", lambda r: r.batch_size)
        gauge(n.QUEUE_SIZE, "{request}", "Requests in the engine's queue.", lambda r: r.queue_size)
        meter.create_observable_counter(
            n.PREFIX_CACHE_QUERIES,
            [self._callback(lambda r: r.prefix_cache_queries_tokens)],
            "{token}",
            "Prompt tokens looked up in the prefix cache since the engine started.",
        )
        meter.create_observable_counter(
            n.PREFIX_CACHE_HITS,
            [self._callback(lambda r: r.prefix_cache_hits_tokens)],
            "{token}",
            "Prompt tokens found in the prefix cache since the engine started.",
        )
        meter.create_observable_counter(
            n.SCRAPE_ERRORS,
            [self._errors_callback],
            "{error}",
            "Failed scrapes of known engine endpoints.",
        )
        meter.create_observable_gauge(
            n.ENDPOINTS,
            [self._endpoints_callback],
            "{endpoint}",
            "Engine endpoints found, by engine.",
        )
        meter.create_observable_gauge(
            n.CANDIDATES,
            [self._candidates_callback],
            "{endpoint}",
            "Endpoints discovery offered for probing.",
        )

    def attributes(self, state: EngineState, reading: EngineReading) -> Attributes:
        """The attributes of one engine series."""
        ep = state.endpoint
        attrs: Attributes = {
            n.ATTR_ENGINE: state.engine,
            n.ATTR_SERVER_ADDRESS: ep.host,
            n.ATTR_SERVER_PORT: ep.port,
        }
        if reading.model:
            attrs[n.ATTR_MODEL] = reading.model
        for key, value in (
            (n.ATTR_K8S_NAMESPACE, ep.namespace),
            (n.ATTR_K8S_POD, ep.pod),
            (n.ATTR_K8S_CONTAINER, ep.container),
            (n.ATTR_K8S_NODE, self._node_name),
        ):
            if value:
                attrs[key] = value
        if ep.pid is not None:
            attrs[n.ATTR_PROCESS_PID] = ep.pid
        return attrs

    def _callback(
        self, read: Callable[[EngineReading], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            out: list[Observation] = []
            for state in self._monitor.snapshot():
                for reading in state.readings:
                    value = read(reading)
                    if value is not None:
                        out.append(Observation(value, self.attributes(state, reading)))
            return out

        return callback

    def _node_attrs(self) -> Attributes:
        return {n.ATTR_K8S_NODE: self._node_name} if self._node_name else {}

    def _errors_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {**self._node_attrs(), n.ATTR_ENGINE: engine})
            for engine, count in sorted(self._monitor.scrape_errors.items())
        ]

    def _endpoints_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        engines: dict[str, int] = {}
        for state in self._monitor.snapshot():
            engines[state.engine] = engines.get(state.engine, 0) + 1
        return [
            Observation(count, {**self._node_attrs(), n.ATTR_ENGINE: engine})
            for engine, count in sorted(engines.items())
        ]

    def _candidates_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._monitor.endpoints_known(), self._node_attrs())]
