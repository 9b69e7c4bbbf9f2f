"""Captures the GenAI unit-test fixtures from the real instrumentation libraries.

Takes nothing but the per-family environments (built here through `envs.py` when missing or
stale); gives `tests/genai/fixtures/<family>-<mode>.json`: for every scenario of
`driver.SCENARIOS`, the spans and log records the family's real instrumentation produced
(in-memory SDK exporters) while the real `openai` client talked to the local test server,
next to what the test server answered (its ground truth). The unit tests in `tests/genai/`
replay these through the normalizer and compare with the ground truth.

Usage: `.venv/bin/python tests/instrumentation/capture_fixtures.py [--family NAME ...]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import envs  # noqa: E402 - a sibling script, importable once its folder is on the path
from driver import MODES  # noqa: E402

FIXTURES = HERE.parent / "genai" / "fixtures"


def capture(family: str, mode: str) -> Path:
    """Run the driver for one family and mode in its environment; returns the fixture path."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    out = FIXTURES / f"{family}-{mode}.json"
    subprocess.run(
        [
            str(envs.env_python(family)),
            str(HERE / "driver.py"),
            "--family",
            family,
            "--mode",
            mode,
            "--exporter",
            "memory",
            "--dump",
            str(out),
        ],
        check=True,
        cwd=envs.ROOT,
        stdout=subprocess.DEVNULL,
        timeout=300,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", action="append", choices=sorted(MODES))
    args = parser.parse_args(argv)
    for family in args.family or sorted(MODES):
        envs.build(family)
        for mode in MODES[family]:
            print(f"{family} {mode}: {capture(family, mode)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
