"""A GPU with a known power and utilization curve, and the exact energy each request used.

Takes in: requests (start, end, tokens) on one GPU, the idle power, joules per token, a sample
period and phase.
Gives out: what a sampler would read (`EnergySample`s: exact energy counter, instantaneous
power, utilization averaged over the period before each read, as NVML reports it), the
piecewise-constant power curve (to script the fake NVML library with), and the truth per
request.

The physics assumed: while requests run, the GPU draws its idle power plus `j_per_token` times
the total token rate; each request is responsible for the share of the power equal to its share
of the token rate. Utilization while busy is `min(1, util_base + util_per_tps * token rate)`.
The truth is integrated exactly over the breakpoints, independently of the sample grid.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from agent.gpu.energy import EnergySample

NS = 1_000_000_000


@dataclass(frozen=True)
class Req:
    call_id: str
    start_s: float
    end_s: float
    tokens: int

    @property
    def rate(self) -> float:
        return self.tokens / (self.end_s - self.start_s)


@dataclass
class Segment:
    start_s: float
    end_s: float
    active: list[Req]
    power_w: float
    util: float


@dataclass
class GroundTruth:
    reqs: list[Req]
    idle_w: float = 60.0
    j_per_token: float = 0.25
    util_base: float = 0.35
    util_per_tps: float = 0.0004
    t_end_s: float = 30.0

    def segments(self) -> list[Segment]:
        points = sorted(
            {0.0, self.t_end_s, *(r.start_s for r in self.reqs), *(r.end_s for r in self.reqs)}
        )
        out: list[Segment] = []
        for a, b in itertools.pairwise(points):
            mid = (a + b) / 2
            active = [r for r in self.reqs if r.start_s <= mid < r.end_s]
            rate = sum(r.rate for r in active)
            power = self.idle_w + self.j_per_token * rate
            util = min(1.0, self.util_base + self.util_per_tps * rate) if active else 0.0
            out.append(Segment(a, b, active, power, util))
        return out

    def _integral(self, a: float, b: float, attr: str) -> float:
        total = 0.0
        for seg in self.segments():
            lo, hi = max(a, seg.start_s), min(b, seg.end_s)
            if hi > lo:
                total += getattr(seg, attr) * (hi - lo)
        return total

    def energy_j(self, a: float, b: float) -> float:
        return self._integral(a, b, "power_w")

    def truth(self) -> dict[str, tuple[float, float]]:
        """call id -> (true energy J, true GPU seconds) over the whole timeline."""
        out = {r.call_id: (0.0, 0.0) for r in self.reqs}
        for seg in self.segments():
            rate = sum(r.rate for r in seg.active)
            for r in seg.active:
                share = r.rate / rate
                dt = seg.end_s - seg.start_s
                e, s = out[r.call_id]
                out[r.call_id] = (e + seg.power_w * share * dt, s + seg.util * share * dt)
        return out

    def idle_truth_j(self) -> float:
        return sum((s.end_s - s.start_s) * s.power_w for s in self.segments() if not s.active)

    def read_times(self, period_s: float, phase_s: float) -> list[float]:
        times: list[float] = []
        t = phase_s
        while t <= self.t_end_s - period_s + 1e-9:
            times.append(t)
            t += period_s
        return times

    def samples(
        self, period_s: float, phase_s: float = 0.0371, counter_origin_j: float = 123_456.0
    ) -> list[EnergySample]:
        out: list[EnergySample] = []
        for t in self.read_times(period_s, phase_s):
            power = next(s.power_w for s in self.segments() if s.start_s <= t < s.end_s)
            util = self._integral(max(0.0, t - period_s), t, "util") / min(period_s, t or period_s)
            out.append(
                EnergySample(
                    round(t * NS), counter_origin_j + self.energy_j(0.0, t), power, util * 100.0
                )
            )
        return out
