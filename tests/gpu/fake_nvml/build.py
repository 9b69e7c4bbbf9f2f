"""Compile the fake NVML library and load it in place of the real one.

Takes in: `fake_nvml.c` beside this file and a writable directory.
Gives out: `<dir>/libnvidia-ml.so.1` (soname `libnvidia-ml.so.1`), and a loader that maps it
into this process so that pynvml's own `CDLL("libnvidia-ml.so.1")` resolves to it (the dynamic
loader matches an already loaded object by soname), plus ctypes handles on the test-only
controls (`fake_nvml_set_time`, `fake_nvml_calls`, `fake_nvml_refcount`).
It must not be used when a real NVIDIA library should be tested: once loaded, it wins.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "fake_nvml.c"
LIBRARY_NAME = "libnvidia-ml.so.1"


def build_fake_nvml(out_dir: Path) -> Path:
    """Compile the fake into `out_dir` and return the library path. Needs gcc."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the fake NVML library (apt-get install gcc)")
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / LIBRARY_NAME
    cmd = [
        gcc,
        "-shared",
        "-fPIC",
        "-O2",
        "-std=c11",
        "-Wall",
        "-Wextra",
        f"-Wl,-soname,{LIBRARY_NAME}",
        "-o",
        str(lib),
        str(SOURCE),
        "-lm",
        "-lpthread",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return lib


class FakeNvml:
    """The loaded fake library with its test-only controls."""

    def __init__(self, lib_path: Path) -> None:
        self.path = lib_path
        self.lib = ctypes.CDLL(str(lib_path), mode=ctypes.RTLD_GLOBAL)
        self.lib.fake_nvml_set_time.argtypes = [ctypes.c_double]
        self.lib.fake_nvml_set_time.restype = None
        self.lib.fake_nvml_get_time.restype = ctypes.c_double
        self.lib.fake_nvml_calls.argtypes = [ctypes.c_char_p]
        self.lib.fake_nvml_calls.restype = ctypes.c_ulonglong
        self.lib.fake_nvml_refcount.restype = ctypes.c_int

    def set_time(self, t_s: float) -> None:
        """Freeze scenario time at `t_s` seconds; a negative value lets it run on its own."""
        self.lib.fake_nvml_set_time(t_s)

    def time_s(self) -> float:
        return float(self.lib.fake_nvml_get_time())

    def refcount(self) -> int:
        """nvmlInit calls not yet matched by nvmlShutdown (0: the next init reads the scenario)."""
        return int(self.lib.fake_nvml_refcount())

    def calls(self, function: str) -> int:
        """How many times an NVML entry point was called since the library was loaded."""
        return int(self.lib.fake_nvml_calls(function.encode()))
