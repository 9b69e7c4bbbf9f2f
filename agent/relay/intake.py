"""What the relay does with one accepted OTLP export, whatever transport brought it.

Takes in: the signal, the parsed `Export*ServiceRequest` and the sender's TCP peer. Gives out:
the request, with Kubernetes attributes added (`agent.relay.enrich`), serialized again and
queued for the collector (`agent.relay.buffer`), its GenAI client spans first handed to
node-local pairing (`agent.pair.node`) when it runs; or `BufferFullError` when the buffer cannot
take it, in which case nothing of it was kept (the receiver answers 503 / UNAVAILABLE and the
sender retries). Counts accepted and refused items in `RelayStats`.
Blocking (it may read procfs to find the sender): receivers call it off their event loop.
"""

from __future__ import annotations

import time
from typing import Any

from agent.pair.node import NodePairing, SenderOrigin
from agent.relay.buffer import Outgoing, RelayBuffer, RelayStats
from agent.relay.enrich import Enricher, Peer


class BufferFullError(Exception):
    """The relay's buffer has no room for this export now."""


def count_items(signal: str, request: Any) -> int:
    """Spans, metric data points or log records in an export."""
    if signal == "traces":
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    points = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    points += len(getattr(metric, kind).data_points)
    return points


class Intake:
    """Enrich, pair, queue (see the module docstring)."""

    def __init__(
        self,
        buffer: RelayBuffer,
        stats: RelayStats,
        enricher: Enricher,
        pairing: NodePairing | None = None,
    ) -> None:
        self.buffer = buffer
        self.stats = stats
        self.enricher = enricher
        self.pairing = pairing

    def accept(self, signal: str, request: Any, peer: Peer | None) -> int:
        """Queue one export; returns its item count. Raises `BufferFullError`."""
        items = count_items(signal, request)
        origins = self.enricher.enrich(request, peer)
        payload = request.SerializeToString()
        # Checked on the whole export before pairing takes anything out of it: a refused
        # export leaves nothing behind.
        if not self.buffer.has_room(len(payload)):
            self._refuse(signal, items)
        held = 0
        if self.pairing is not None and signal == "traces":
            now = time.time_ns()
            held = self.pairing.take_from(
                request, [SenderOrigin(o.pid, o.pod) for o in origins], now
            )
            if held:
                payload = request.SerializeToString()
        if items - held > 0 and not self.buffer.offer(Outgoing(signal, payload, items - held)):
            if held:
                # the held spans were accepted: the rest must go too, past the bound
                self.buffer.put(Outgoing(signal, payload, items - held))
            else:
                self._refuse(signal, items)
        self.stats.items(signal, "accepted", items)
        self.stats.request("accepted")
        return items

    def _refuse(self, signal: str, items: int) -> None:
        self.stats.items(signal, "refused_full", items)
        self.stats.request("refused_full")
        raise BufferFullError(f"the relay's buffer is full ({self.buffer.max_bytes} bytes)")

    def forward_released(self, request: Any, spans: int) -> None:
        """Queue spans node-local pairing held and now lets go (accepted earlier, so they are
        queued whatever the bound)."""
        self.buffer.put(Outgoing("traces", request.SerializeToString(), spans))
