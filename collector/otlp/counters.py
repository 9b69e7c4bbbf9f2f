"""Self-metrics of the OTLP receivers: Prometheus counters on a `CollectorRegistry`.

Takes a registry (or uses this module's `REGISTRY`); gives `ReceiverCounters`, one set per
registry, so the HTTP and gRPC receivers built on the same registry share their counters
instead of registering the same names twice.

Exposed series:
- `infersight_otlp_received_total{signal,transport}`: spans / data points / log records
  decoded from well-formed exports, whatever became of them afterwards.
- `infersight_otlp_accepted_total{signal,transport}`: items committed to the store.
- `infersight_otlp_rejected_total{signal,reason}`: items not stored, by reason: one by one
  for breaking a rule (reported to the client in `partial_success`, reasons as in
  `values.REASONS`), or with their whole export when the store pushed back (`queue_full`,
  `shutting_down`, `store_error`; the client is told to retry).
- `infersight_otlp_requests_total{signal,transport,status}`: exports by answer (HTTP status
  code, or gRPC status name).
- `infersight_otlp_normalize_errors_total`: spans whose GenAI normalization raised; they are
  stored without GenAI columns.
"""

from __future__ import annotations

import threading
import weakref

from prometheus_client import CollectorRegistry, Counter

#: The registry used when a receiver is built without one.
REGISTRY = CollectorRegistry(auto_describe=True)

_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, ReceiverCounters] = (
    weakref.WeakKeyDictionary()
)


class ReceiverCounters:
    """The receivers' counters on one registry. Use `counters_for()` to get one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.received = Counter(
            "infersight_otlp_received",
            "Spans, data points and log records decoded from well-formed OTLP exports.",
            ["signal", "transport"],
            registry=registry,
        )
        self.accepted = Counter(
            "infersight_otlp_accepted",
            "OTLP items committed to the store.",
            ["signal", "transport"],
            registry=registry,
        )
        self.rejected = Counter(
            "infersight_otlp_rejected",
            "OTLP items not stored, by reason (rule broken, or the store pushed back).",
            ["signal", "reason"],
            registry=registry,
        )
        self.requests = Counter(
            "infersight_otlp_requests",
            "OTLP export requests, by answer.",
            ["signal", "transport", "status"],
            registry=registry,
        )
        self.normalize_errors = Counter(
            "infersight_otlp_normalize_errors",
            "Spans whose GenAI normalization raised; stored without GenAI columns.",
            registry=registry,
        )


def counters_for(registry: CollectorRegistry | None = None) -> ReceiverCounters:
    """The one `ReceiverCounters` of `registry` (this module's `REGISTRY` when None)."""
    reg = REGISTRY if registry is None else registry
    with _lock:
        found = _by_registry.get(reg)
        if found is None:
            found = ReceiverCounters(reg)
            _by_registry[reg] = found
        return found
