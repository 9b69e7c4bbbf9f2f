"""CPU cost of the GPU sampler: per tick, and per second at 1 s and 100 ms periods.

Takes in: nothing (options: --gpus, --procs, --repeats, --ticks-1s, --ticks-100ms).
Gives out: printed medians. The NVML library is the fake one from tests/gpu/fake_nvml (compiled
with gcc into a temporary directory), playing 8 GPUs with 50 compute processes spread over them;
the real pynvml binding and the real sampler run unchanged, so the figures are the agent's own
Python cost plus a negligible C cost (a real driver's own time inside NVML calls is not included).
Target: under 1% of one core at the default 1 s period.

Run: .venv/bin/python bench/gpu_sampler.py
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.gpu.nvml_sampler import GpuSamplerConfig, NvmlSampler  # noqa: E402
from tests.gpu.fake_nvml.build import FakeNvml, build_fake_nvml  # noqa: E402
from tests.gpu.fake_nvml.scenario import FakeDevice, FakeEvent, FakeProc, Scenario  # noqa: E402


def scenario(gpus: int, procs: int) -> Scenario:
    devices = []
    for g in range(gpus):
        dev = FakeDevice(f"GPU-{g:08x}-0000-4000-8000-000000000000", energy_start_mj=10**9)
        for step in range(0, 600, 3):  # a power and utilization curve that keeps changing
            dev.at(float(step), "power_mw", 100_000 + 50_000 * ((step + g) % 7))
            dev.at(float(step), "gpu_util", (step * 7 + g * 13) % 101)
        devices.append(dev)
    for p in range(procs):
        devices[p % gpus].procs.append(
            FakeProc(10_000 + p, mem_bytes=(1 + p % 9) << 30, sm_pct=p % 100, mem_pct=p % 30)
        )
    events = [FakeEvent(float(t), devices[0].uuid, 0x8, 13) for t in range(5, 600, 60)]
    return Scenario(devices, events)


def per_tick_ms(sampler: NvmlSampler, ticks: int, processes: bool) -> float:
    costs = []
    for _ in range(ticks):
        start = time.process_time()
        sampler.sample_once(processes=processes)
        costs.append((time.process_time() - start) * 1e3)
        sampler.drain()
    return statistics.median(costs)


def thread_cost(period_s: float, ticks: int, repeats: int) -> tuple[float, float, int]:
    """Median CPU ms per wall second and per tick of the sampling thread; total ticks seen."""
    per_second, per_tick = [], []
    seen = 0
    for _ in range(repeats):
        sampler = NvmlSampler(
            GpuSamplerConfig(period_s=period_s, process_period_s=5.0, queue_size=1_000_000)
        )
        assert sampler.open()
        wall0, cpu0 = time.monotonic(), time.process_time()
        sampler.start()
        time.sleep(period_s * ticks - period_s / 2)
        sampler.stop()
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        per_second.append(cpu / wall * 1e3)
        per_tick.append(cpu / max(sampler.ticks, 1) * 1e3)
        seen += sampler.ticks
    return statistics.median(per_second), statistics.median(per_tick), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--procs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ticks-1s", type=int, default=10)
    parser.add_argument("--ticks-100ms", type=int, default=50)
    args = parser.parse_args()
    # the scenario's XID events would otherwise print warnings into the figures
    logging.getLogger("infersight.agent.gpu").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeNvml(build_fake_nvml(Path(tmp)))
        os.environ["FAKE_NVML_SCENARIO"] = str(
            scenario(args.gpus, args.procs).write(Path(tmp) / "scenario.txt")
        )
        fake.set_time(-1.0)

        direct = NvmlSampler(GpuSamplerConfig())
        assert direct.open()
        per_tick_ms(direct, 20, False)  # warm caches and pynvml's function lookups
        device_tick = per_tick_ms(direct, 200, False)
        process_tick = per_tick_ms(direct, 50, True)
        direct.stop()

        at_1s = thread_cost(1.0, args.ticks_1s, args.repeats)
        at_100ms = thread_cost(0.1, args.ticks_100ms, args.repeats)

    print(
        f"GPU sampler CPU cost: {args.gpus} fake GPUs, {args.procs} compute processes "
        f"(fake NVML, real pynvml binding), medians"
    )
    print(f"  one tick, device readings only        {device_tick:8.3f} ms CPU")
    print(
        f"  one tick with the process listing     {process_tick:8.3f} ms CPU "
        f"(every process_period_s = 5 s)"
    )
    for label, (per_s, per_tick, seen) in (("1 s", at_1s), ("100 ms", at_100ms)):
        print(
            f"  thread at {label:>6} period: {per_s:7.3f} ms CPU per second "
            f"= {per_s / 10:6.3f}% of one core; {per_tick:6.3f} ms per tick "
            f"({seen} ticks in {args.repeats} runs)"
        )
    share = at_1s[0] / 10
    print(f"  target < 1% of one core at 1 s: {'met' if share < 1.0 else 'MISSED'} ({share:.3f}%)")


if __name__ == "__main__":
    main()
