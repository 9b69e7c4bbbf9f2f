"""CPU accounting from /proc: how much CPU a process used, and how busy the whole machine was.

Takes process ids; gives CPU seconds (user + system, all threads) of a process and of the
machine as a whole, so a run can say how much CPU the system under test spent per stored span
and how much the machine's other tenants took meanwhile (figures on a shared machine are only
as good as that second number).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            text = f.read()
    except OSError:
        return 0.0
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def child_pids(pid: int) -> list[int]:
    """The live child processes of `pid`."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return out


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and every live process below it (a collector's
    decoding workers work for it; a worker that ended between two readings is missed)."""
    total = 0.0
    todo = [pid]
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += process_cpu_s(p)
        todo.extend(child_pids(p))
    return total


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent not idle since boot."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = f.readline().split()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    del idle, iowait
    return (user + nice + system + irq + softirq + steal) * _TICK_S


@dataclass(slots=True)
class CpuSnapshot:
    """Counters at one instant."""

    target_s: float
    machine_s: float
    self_s: float

    @classmethod
    def take(cls, target_pid: int | None) -> CpuSnapshot:
        """Read the counters now (`target_s` is the target and its child processes, `self_s`
        this benchmark process, all threads)."""
        return cls(
            target_s=tree_cpu_s(target_pid) if target_pid else 0.0,
            machine_s=machine_busy_s(),
            self_s=process_cpu_s(os.getpid()),
        )
