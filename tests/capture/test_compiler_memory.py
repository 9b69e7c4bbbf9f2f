"""Giving back bcc's compiler memory once the programs are loaded: which mappings may be
dropped (pure), and, with the real programs, that the process really shrinks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.capture.bcc_binding import bcc_unavailable_reason
from agent.capture.compiler_memory import droppable
from tests.conftest import REPO

SMAPS = """\
7f0000000000-7f0000100000 r--p 00000000 fe:01 11 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                1024 kB
Anonymous:             0 kB
7f0000100000-7f0000900000 r-xp 00100000 fe:01 11 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                8192 kB
Anonymous:             0 kB
7f0000900000-7f0000a00000 r--p 00900000 fe:01 11 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                1024 kB
Anonymous:           512 kB
7f0000a00000-7f0000b00000 rw-p 00a00000 fe:01 11 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                1024 kB
Anonymous:          1024 kB
7f0001000000-7f0001400000 r-xp 00000000 fe:01 12 /usr/lib/llvm-14/lib/libclang-cpp.so.14
Rss:                4096 kB
Anonymous:             0 kB
7f0002000000-7f0002100000 r-xp 00000000 fe:01 13 /usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0
Rss:                1024 kB
Anonymous:             0 kB
7f0003000000-7f0003100000 rw-p 00000000 00:00 0
Rss:                1024 kB
Anonymous:          1024 kB
"""


def test_only_clean_read_only_compiler_mappings_are_dropped() -> None:
    # not: relocated read-only data (private copies), writable data, libbcc, anonymous memory
    assert droppable(SMAPS) == [
        (0x7F0000000000, 0x7F0000100000),
        (0x7F0000100000, 0x7F0000900000),
        (0x7F0001000000, 0x7F0001400000),
    ]


_PROBE = """
import json, sys
from agent.capture.bpf_loader import BpfCapture
from agent.capture.config import CaptureConfig
cap = BpfCapture(CaptureConfig())
cap.open(lambda event: None)
r = cap.compiler_memory
cap.close()
print(json.dumps(None if r is None else [r.rss_before_kib, r.rss_after_kib, r.mappings_dropped]))
"""


@pytest.mark.ebpf
@pytest.mark.timeout(120)
@pytest.mark.skipif(bcc_unavailable_reason() is not None, reason=bcc_unavailable_reason() or "")
def test_the_loaded_capture_gives_back_the_compiler_memory() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, timeout=110
    )
    assert out.returncode == 0, out.stderr[-3000:]
    before_kib, after_kib, dropped = json.loads(out.stdout.strip().splitlines()[-1])
    assert dropped >= 2  # LLVM's and clang's code at least
    # LLVM and clang keep about 80 MiB of code resident after a compile
    assert before_kib - after_kib > 40 * 1024, (before_kib, after_kib)


_EARLY_PROBE = """
import dataclasses, json, time
from agent.capture import bpf_loader
from agent.capture.bpf_loader import BpfCapture, compile_early, discard_early
from agent.capture.config import CaptureConfig
cfg = CaptureConfig()
out = {"compiled": compile_early(cfg)}
held = dict(bpf_loader._early)
t = time.monotonic()
cap = BpfCapture(cfg)
cap.open(lambda event: None)
out["open_s"] = time.monotonic() - t
out["took_early"] = [cap._prog is p for p, _ in held.values()] == [True]
out["left"] = len(bpf_loader._early)
cap.close()
# loaded for another configuration: freed when a capture opens with its own programs
compile_early(dataclasses.replace(cfg, max_pieces_per_call=4))
other = BpfCapture(cfg)
other.open(lambda event: None)
out["stale_left"] = len(bpf_loader._early)
other.close()
compile_early(cfg)
discard_early()
out["discarded_left"] = len(bpf_loader._early)
print(json.dumps(out))
"""


@pytest.mark.ebpf
@pytest.mark.timeout(180)
@pytest.mark.skipif(bcc_unavailable_reason() is not None, reason=bcc_unavailable_reason() or "")
def test_programs_compiled_early_are_taken_by_the_capture() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _EARLY_PROBE], cwd=REPO, capture_output=True, text=True, timeout=170
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["compiled"] is True
    assert got["took_early"] is True  # the capture used the loaded programs, no second compile
    assert got["left"] == 0
    assert got["stale_left"] == 0
    assert got["discarded_left"] == 0
