"""Where the collector's time goes: py-spy samples of a process in, shares per function out.

Takes a process id and a duration; records it with `py-spy record --format raw` (collapsed
stacks with thread names, `--nonblocking` so the sampling does not pause the process) and gives
a `ProfileSummary`: the share of samples per thread, per leaf function (self time) and per
function anywhere on the stack (inclusive time), the same for the project's own functions,
for all active threads, and separately for the
samples taken while a thread held the GIL (`--gil`). py-spy is an optional tool: without it
the benchmark runs and says that profiling was skipped.
Must not: profile anything but the process it is given.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>[^)]*)\)(?::\s*(?P<name>.*))?$")
_BOOTSTRAP_FILES = ("threading.py", "concurrent/futures/thread.py")


def py_spy_path() -> str | None:
    """The py-spy executable next to this interpreter or on PATH, if any."""
    from sys import executable

    beside = Path(executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@dataclass(slots=True)
class ProfileSummary:
    """Shares (0..1) of all samples recorded."""

    samples: int = 0
    by_thread: list[tuple[str, float]] = field(default_factory=list)
    self_top: list[tuple[str, float]] = field(default_factory=list)
    inclusive_top: list[tuple[str, float]] = field(default_factory=list)
    project_top: list[tuple[str, float]] = field(default_factory=list)
    """Inclusive shares of the project's own functions (collector/, store/)."""


def _short_file(path: str) -> str:
    # py-spy already shortens paths to their package part ("collector/otlp/values.py").
    if path.startswith(("collector/", "store/")):
        return path
    for marker in ("/site-packages/", "/lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." and "/" in tail else tail
    for marker in ("/collector/", "/store/"):
        if marker in path:
            return marker.strip("/") + "/" + path.rsplit(marker, 1)[1]
    return path.rsplit("/", 1)[-1]


def _frame_label(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match['func']} ({_short_file(match['file'])})"


def _thread_label(frames: list[str], thread_name: str) -> str:
    """Name a thread: its name, plus for other threads the function it was started with."""
    if thread_name == "MainThread":
        return "MainThread (event loop)"
    for frame in frames:
        match = _FRAME.match(frame)
        file = match["file"] if match else ""
        if not any(file.endswith(b) for b in _BOOTSTRAP_FILES):
            return f"{thread_name or 'thread'}: {_frame_label(frame)}"
    return thread_name or "thread"


def summarize_raw(text: str, top: int = 15) -> ProfileSummary:
    """Summarize py-spy's raw (collapsed) output."""
    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    project: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread_name = ""
        if frames and (tm := _THREAD.match(frames[0])):
            thread_name = (tm["name"] or "").strip()
            frames = frames[1:]
        if not frames:
            continue
        total += count
        threads[_thread_label(frames, thread_name)] += count
        labels = [_frame_label(f) for f in frames]
        leaf[labels[-1]] += count
        for label in set(labels):
            inclusive[label] += count
            if label.endswith(".py)") and ("(collector/" in label or "(store/" in label):
                project[label] += count
    if total == 0:
        return ProfileSummary()

    def shares(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, v / total) for k, v in counter.most_common(n)]

    return ProfileSummary(
        samples=total,
        by_thread=shares(threads, 10),
        self_top=shares(leaf, top),
        inclusive_top=shares(inclusive, top),
        project_top=shares(project, top),
    )


def record(
    pid: int, duration_s: int, out_path: Path, *, gil_only: bool, rate_hz: int = 200
) -> subprocess.Popen[bytes]:
    """Start `py-spy record` on `pid` for `duration_s`; the caller waits for the process."""
    exe = py_spy_path()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate_hz),
        "--duration",
        str(duration_s),
        "--format",
        "raw",
        "--threads",
        "--nonblocking",
        "--output",
        str(out_path),
    ]
    if gil_only:
        cmd.append("--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
