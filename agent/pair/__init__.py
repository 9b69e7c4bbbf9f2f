"""Pairing: an SDK GenAI span and the eBPF capture of the same LLM call become one record.

Pure rules in `agent.pair.rules`; the agent applies them to spans of its node, the collector
(`collector.pairing`) to spans that reach it directly.
"""

from agent.pair.rules import (
    METHODS,
    CallRecord,
    Pair,
    PairingResult,
    PairingSettings,
    match_calls,
)

__all__ = ["METHODS", "CallRecord", "Pair", "PairingResult", "PairingSettings", "match_calls"]
