"""No NVML on the node: the sampler says so in one log line and the agent goes on.

Each case runs in a fresh interpreter, since the test process has the fake library loaded.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

SCRIPT = textwrap.dedent("""
    import logging, sys, threading
    logging.basicConfig(level=logging.DEBUG, stream=sys.stdout,
                        format="LOG|%(name)s|%(levelname)s|%(message)s")
    MODE = sys.argv[1]
    if MODE == "no-binding":
        sys.modules["pynvml"] = None  # the nvidia-ml-py package is not installed
    elif MODE == "patched":
        import pynvml
        def _missing(name, *args, **kwargs):
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        pynvml.CDLL = _missing  # as dlopen answers on a node without the NVIDIA driver
    from agent.gpu.nvml_sampler import NvmlSampler
    sampler = NvmlSampler()
    sampler.start()
    sampler.start()
    print("AVAILABLE", sampler.available)
    print("REASON", sampler.unavailable_reason)
    print("RECORDS", len(sampler.sample_once()), sampler.output.qsize())
    sampler.stop()
    sampler.stop()
    print("THREADS", threading.active_count())
""")


def run(mode: str) -> list[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD", "FAKE_NVML_SCENARIO")
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def check_unavailable(lines: list[str], reason_part: str) -> None:
    mine = [line for line in lines if line.startswith("LOG|infersight.agent.gpu|")]
    assert len(mine) == 1, lines
    assert "|WARNING|GPU telemetry off" in mine[0]
    assert reason_part in mine[0]
    assert "AVAILABLE False" in lines
    assert any(line.startswith("REASON ") and reason_part in line for line in lines)
    assert "RECORDS 0 0" in lines
    assert "THREADS 1" in lines  # no sampler thread was left behind


def test_library_missing_is_one_log_line() -> None:
    # genuinely absent where this machine has no NVIDIA driver; simulated at dlopen otherwise
    mode = "patched" if ctypes.util.find_library("nvidia-ml") else "real"
    check_unavailable(run(mode), "NVML Shared Library Not Found")


def test_library_missing_simulated_at_dlopen() -> None:
    check_unavailable(run("patched"), "NVML Shared Library Not Found")


def test_binding_not_installed_is_one_log_line() -> None:
    check_unavailable(run("no-binding"), "nvidia-ml-py package is not installed")


def test_importing_the_package_loads_no_nvml() -> None:
    code = (
        "import sys, agent.gpu, agent.gpu.nvml_sampler, agent.gpu.energy, "
        "agent.gpu.metrics, agent.gpu.attribution; print('pynvml' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
