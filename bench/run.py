"""Run every benchmark in bench/ (what `make bench` calls): module names in, their reports out.

Takes `--only NAME` (repeatable or comma-separated), `--quick`, and after `--` arguments passed
unchanged to every module; gives each benchmark's own output, streamed as it runs, followed by
one summary line per benchmark (exit status and duration). Exits non-zero when any failed.

A benchmark is any `bench/NAME.py` other than this file whose name does not start with `_`
(helper code lives in `_`-prefixed modules and packages). Each runs as its own subprocess with
this interpreter: `python bench/NAME.py [--quick] [ARGS...]`. A benchmark should accept
`--quick` (a run of under two minutes); one whose source never mentions that option is run
in its normal version, with a note. It may print whatever report it likes.
Must not: run a benchmark in this process, or hide a benchmark's failure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Names of the benchmark modules present, in alphabetical order."""
    return sorted(
        p.stem for p in BENCH_DIR.glob("*.py") if p.name != "run.py" and not p.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks one after another."""
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, passthrough = argv[:at], argv[at + 1 :]
    available = discover()
    parser = argparse.ArgumentParser(
        description="Run the benchmarks in bench/ and print their results.",
        epilog=f"benchmarks found: {', '.join(available) or 'none'}. "
        "Arguments after `--` go to every benchmark run.",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this benchmark (repeatable, or comma-separated)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="ask every benchmark for its short version"
    )
    args = parser.parse_args(argv)
    chosen = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in available]
    if unknown:
        parser.error(
            f"no benchmark named {', '.join(unknown)}; available: {', '.join(available) or 'none'}"
        )
    names = chosen or available
    if not names:
        print("no benchmarks found in bench/")
        return 1
    outcomes: list[tuple[str, int, float]] = []
    for name in names:
        path = BENCH_DIR / f"{name}.py"
        cmd = [sys.executable, str(path)]
        if args.quick:
            if "--quick" in path.read_text(encoding="utf-8"):
                cmd.append("--quick")
            else:
                print(f"note: {name} has no --quick option; running its normal version")
        cmd += passthrough
        print(f"\n##### benchmark {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run(cmd, cwd=BENCH_DIR.parent, check=False).returncode
        except KeyboardInterrupt:
            print(f"\n##### benchmark {name} interrupted", flush=True)
            return 130
        outcomes.append((name, code, time.monotonic() - started))
    print("\n##### summary")
    width = max(len(n) for n, _, _ in outcomes)
    for name, code, elapsed_s in outcomes:
        state = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"  {name.ljust(width)}  {state}  {elapsed_s:6.1f} s")
    return 0 if all(code == 0 for _, code, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
