"""Collector-side pairing of SDK GenAI spans with eBPF captures (see `collector.pairing.stage`).

`start_pairing(db, registry)` is the one call the collector makes: it starts the periodic pass
with the given settings and registers its metrics; `stop()` on the returned stage
ends it before the store closes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from collector.pairing.metrics import PairingCollector
from collector.pairing.stage import PairingStage, PairingStats, StageSettings
from store.database import Database

__all__ = ["PairingCollector", "PairingStage", "PairingStats", "StageSettings", "start_pairing"]


def start_pairing(
    db: Database,
    registry: CollectorRegistry | None = None,
    settings: StageSettings | None = None,
) -> PairingStage:
    """Start the pairing pass on `db` and expose its metrics on `registry`."""
    stage = PairingStage(db, settings)
    if registry is not None:
        registry.register(PairingCollector(stage))
    stage.start()
    return stage
