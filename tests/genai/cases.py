"""Loads the captured instrumentation fixtures of `tests/genai/fixtures/`.

Takes the JSON files written by `tests/instrumentation/capture_fixtures.py`; gives one `Case`
per (fixture file, scenario) with the spans and log records the real library produced and
the test server's ground truth for that call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.genai import values

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass(frozen=True)
class Case:
    family: str
    mode: str
    scenario: str
    spans: list[dict[str, Any]]
    logs: list[dict[str, Any]]
    served: dict[str, Any] | None

    @property
    def id(self) -> str:
        return f"{self.family}-{self.mode}-{self.scenario}"

    @property
    def genai_span(self) -> dict[str, Any] | None:
        """The library's span for this call (the only span: HTTP instrumentation is off)."""
        return self.spans[0] if self.spans else None

    def events(self, span: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
        return [(e["name"], e["attributes"], e["time_unix_ns"]) for e in span["events"]]

    @property
    def expected_finish_reasons(self) -> list[str] | None:
        assert self.served is not None
        return values.finish_reasons(self.served["finish_reasons"])


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(FIXTURES.glob("*.json")):
        doc = json.loads(path.read_text())
        for c in doc["cases"]:
            served = c["served"][0] if c.get("served") else None
            cases.append(
                Case(doc["family"], doc["mode"], c["scenario"], c["spans"], c["logs"], served)
            )
    return cases


CASES = load_cases()
