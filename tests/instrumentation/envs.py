"""Builds one virtual environment per GenAI instrumentation family under `.testenvs/<family>/`.

Takes the pinned `requirements-<family>.txt` files beside this module; gives
`.testenvs/<family>/bin/python` with that family's real instrumentation, the `openai` client
and the OTel SDK with its OTLP exporters installed. The four families pin OpenTelemetry
differently, so they cannot share one environment. Idempotent: an environment whose stamp
(hash of its requirement file and of the interpreter version) is unchanged is left alone;
a changed one is rebuilt from scratch so no stale package survives.

Usage: `python tests/instrumentation/envs.py [--family NAME ...] [--force]`.
Must not: touch the project's own `.venv`.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ENVS_DIR = ROOT / ".testenvs"
#: One environment each; `openai-v2-legacy` holds the official instrumentation's last release
#: with the legacy (default, pre-opt-in) output.
FAMILIES: tuple[str, ...] = (
    "openai-v2",
    "openai-v2-legacy",
    "openllmetry",
    "openlit",
    "openinference",
)
_STAMP = ".requirements.sha256"


def requirements_file(family: str) -> Path:
    """The pinned requirement file of `family`."""
    return HERE / f"requirements-{family}.txt"


def env_dir(family: str) -> Path:
    """Where the environment of `family` lives."""
    return ENVS_DIR / family


def env_python(family: str) -> Path:
    """The interpreter of the environment of `family` (may not exist yet)."""
    return env_dir(family) / "bin" / "python"


def _stamp_for(family: str) -> str:
    digest = hashlib.sha256(requirements_file(family).read_bytes())
    # A new interpreter version needs new wheels even when the pins did not move.
    digest.update(sys.version.encode())
    return digest.hexdigest()


def is_current(family: str) -> bool:
    """True when the environment of `family` exists and was built from today's pins."""
    stamp = env_dir(family) / _STAMP
    return (
        env_python(family).exists()
        and stamp.exists()
        and stamp.read_text().strip() == _stamp_for(family)
    )


def build(family: str, force: bool = False) -> bool:
    """Create or rebuild the environment of `family`; returns True when it was (re)built."""
    if not force and is_current(family):
        return False
    target = env_dir(family)
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(target)], check=True)
    pip = [str(env_python(family)), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-r", str(requirements_file(family))], check=True)
    (target / _STAMP).write_text(_stamp_for(family) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--family",
        action="append",
        choices=FAMILIES,
        help="build only this family (repeatable); default: all",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when unchanged")
    args = parser.parse_args(argv)
    failed = []
    for family in args.family or FAMILIES:
        try:
            built = build(family, force=args.force)
        except subprocess.CalledProcessError as exc:
            print(f"{family}: build failed ({exc})", file=sys.stderr)
            failed.append(family)
            continue
        print(f"{family}: {'built' if built else 'up to date'} ({env_dir(family)})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
