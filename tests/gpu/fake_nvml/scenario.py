"""Scenario files for the fake NVML library, written from Python objects.

Takes in: `Scenario` objects built by tests and benchmarks.
Gives out: the line-based text that `fake_nvml.c` reads at `nvmlInit` from the file named by
`FAKE_NVML_SCENARIO`.

Format, one directive per line (`#` starts a comment):

    driver_version <text>
    init_error <nvml return code>           nvmlInit fails with it
    gpu <uuid> <name ...>                   a physical GPU; indexes follow the order of lines
    mig <uuid> <gi id> <ci id> <name ...>   a MIG device of the last `gpu`
    mig_mode 0|1 ; max_mig <n> ; memory_total_bytes <n> ; power_limit_mw <n> ; energy_start_mj <n>
    lost_at <t_s>                           from then on every call answers GPU_IS_LOST
    unsupported <api ...> / supported <api ...> / error <api> <code>
    at <t_s> <field> <value>                piecewise-constant value from t_s on (ascending t_s)
    proc <pid> <start_s> <end_s|inf> <mem bytes> <sm %> <mem %>
    event <t_s> <device uuid> <type mask> <data>

apis: utilization memory power power_limit energy temperature clocks clock_reasons pcie ecc
processes process_util events mig_mode name.
fields: gpu_util mem_util mem_used power_mw temp_c sm_clock mem_clock clock_reasons pcie_tx_kbs
pcie_rx_kbs ecc_corrected ecc_uncorrected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

XID_EVENT = 0x8
DOUBLE_BIT_ECC_EVENT = 0x2


@dataclass
class FakeProc:
    pid: int
    start_s: float = 0.0
    end_s: float = math.inf
    mem_bytes: int = 1 << 30
    sm_pct: int = 50
    mem_pct: int = 10


@dataclass
class FakeDevice:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    mig_of: FakeDevice | None = None
    gi_id: int = 0
    ci_id: int = 0
    mig_mode: int = 0
    memory_total_bytes: int | None = None
    power_limit_mw: int | None = None
    energy_start_mj: int | None = None
    lost_at_s: float | None = None
    unsupported: list[str] = field(default_factory=list)
    supported: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[float, str, int]] = field(default_factory=list)
    procs: list[FakeProc] = field(default_factory=list)

    def at(self, t_s: float, name: str, value: int) -> FakeDevice:
        self.timeline.append((t_s, name, value))
        return self


@dataclass
class FakeEvent:
    t_s: float
    device_uuid: str
    type_mask: int
    data: int


@dataclass
class Scenario:
    devices: list[FakeDevice] = field(default_factory=list)
    events: list[FakeEvent] = field(default_factory=list)
    driver_version: str = "550.54.15"
    init_error: int | None = None

    def render(self) -> str:
        out = [f"driver_version {self.driver_version}"]
        if self.init_error is not None:
            out.append(f"init_error {self.init_error}")
        for d in self.devices:
            if d.mig_of is None:
                out.append(f"gpu {d.uuid} {d.name}")
            else:
                out.append(f"mig {d.uuid} {d.gi_id} {d.ci_id} {d.name}")
            out.append(f"mig_mode {d.mig_mode}")
            for key, value in (
                ("memory_total_bytes", d.memory_total_bytes),
                ("power_limit_mw", d.power_limit_mw),
                ("energy_start_mj", d.energy_start_mj),
                ("lost_at", d.lost_at_s),
            ):
                if value is not None:
                    out.append(f"{key} {value}")
            if d.unsupported:
                out.append("unsupported " + " ".join(d.unsupported))
            if d.supported:
                out.append("supported " + " ".join(d.supported))
            for api, code in d.errors.items():
                out.append(f"error {api} {code}")
            for t_s, name, value in sorted(d.timeline, key=lambda p: p[0]):
                out.append(f"at {t_s!r} {name} {int(value)}")
            for p in d.procs:
                end = "inf" if math.isinf(p.end_s) else repr(p.end_s)
                out.append(f"proc {p.pid} {p.start_s!r} {end} {p.mem_bytes} {p.sm_pct} {p.mem_pct}")
        for e in sorted(self.events, key=lambda e: e.t_s):
            out.append(f"event {e.t_s!r} {e.device_uuid} {e.type_mask} {e.data}")
        return "\n".join(out) + "\n"

    def write(self, path: Path) -> Path:
        path.write_text(self.render())
        return path
