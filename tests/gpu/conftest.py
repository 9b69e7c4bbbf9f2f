"""Fixtures for the GPU tests: the fake NVML library, compiled once per session.

The fake is loaded into the test process by path; pynvml's own `CDLL("libnvidia-ml.so.1")`
then resolves to it, so the real binding code runs unchanged. Tests that need the real library
or no library at all run the sampler in a subprocess instead.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.gpu.nvml_sampler import GpuSamplerConfig, NvmlSampler
from tests.gpu.fake_nvml.build import LIBRARY_NAME, FakeNvml, build_fake_nvml
from tests.gpu.fake_nvml.scenario import Scenario

#: the wall clock the tests give the sampler: scenario time 0 is this unix time
BASE_UNIX_NS = 1_750_000_000 * 1_000_000_000


def _fake_already_loaded() -> Path | None:
    """The fake NVML library already mapped into this process, if any.

    Two copies of a library with the same soname cannot both be in play (pynvml binds to the
    first), so a second test folder using these fixtures must reuse the first copy.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        path = fields[5] if len(fields) == 6 else ""
        if path.endswith("/" + LIBRARY_NAME):
            lib = ctypes.CDLL(path)  # a handle on the loaded object, not a second copy
            if hasattr(lib, "fake_nvml_set_time"):
                return Path(path)
    return None


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fake_already_loaded() or build_fake_nvml(tmp_path_factory.mktemp("fake_nvml"))


@pytest.fixture(scope="session")
def fake_nvml(fake_nvml_lib: Path) -> FakeNvml:
    return FakeNvml(fake_nvml_lib)


@pytest.fixture
def use_scenario(
    fake_nvml: FakeNvml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Scenario], Path]:
    """Write a scenario, point the fake at it and freeze scenario time at 0."""

    def use(scenario: Scenario) -> Path:
        # a sampler left open by an earlier test would keep the previous scenario loaded
        assert fake_nvml.refcount() == 0, "an earlier test left NVML initialised"
        path = scenario.write(tmp_path / "scenario.txt")
        monkeypatch.setenv("FAKE_NVML_SCENARIO", str(path))
        fake_nvml.set_time(0.0)
        return path

    return use


@pytest.fixture
def make_sampler(fake_nvml: FakeNvml) -> Iterator[Callable[..., NvmlSampler]]:
    """Samplers on scenario time (unix clock = BASE + scenario time), stopped afterwards."""
    made: list[NvmlSampler] = []

    def make(config: GpuSamplerConfig | None = None, **kwargs: object) -> NvmlSampler:
        sampler = NvmlSampler(
            config,
            clock_unix_ns=lambda: BASE_UNIX_NS + round(fake_nvml.time_s() * 1e9),
            clock_mono_s=fake_nvml.time_s,
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(sampler)
        return sampler

    yield make
    for sampler in made:
        sampler.stop()
    fake_nvml.set_time(-1.0)
