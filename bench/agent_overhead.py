"""Agent overhead: what running `infersight agent` costs the LLM traffic it watches.

Takes options (`--quick`, `--pairs`, `--phase-s`, `--workers`, `--profile`, see `--help`);
gives a report on stdout and the raw figures in `bench/results/agent_overhead-<utc>.json`
(and `agent_overhead-latest.json`). Exits 0 when the run completed, whether or not the targets
were met (the report says which were).

Load: `--workers` client processes (default 8), each with one keep-alive connection making
chat calls one at a time, half of them streamed, against the stdlib OpenAI-compatible server
(`tests.support.openai_server`) on loopback. The load runs without pause for the whole run;
the agent, capturing the server's port on both sides and exporting OTLP/HTTP to a real
collector on loopback, is started and stopped between phases, so phases alternate
detached / attached (D A D A ... D) and every attached phase sits between two detached ones.
Only the steady part of each phase is measured: the agent's start (compiling its BPF programs)
and its stop happen between windows.

Per phase: calls/s (calls completed in the window), p50 and p99 latency (calls started in it),
the CPU the machine's other tenants used meanwhile. Per attached phase: the agent's CPU seconds
(/proc/<pid>/stat, all threads) per 1,000 calls, its peak RSS (VmHWM), its drop counters, and
completeness: client and server spans in the collector whose start falls in the window, against
the calls the clients started in it. With `--bpf-stats` the kernel's own accounting of the BPF
programs' run time is switched on for the run (and restored), which is the part of the overhead
paid inside the traced processes' syscalls. With `--profile` py-spy samples the agent during one
extra attached phase and the report lists where its time goes.
Must not: send anything off loopback or leave a process it started running.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _agent.load import Call, LoadPool
from _agent.procs import (
    REPO,
    AgentProcess,
    Collector,
    ModelServer,
    bpf_prog_run_ns,
    largest_mappings,
    machine_busy_s,
    process_cpu_s,
    status_kib,
)

RESULTS = REPO / "bench" / "results"
TARGET_THROUGHPUT_LOSS_PCT = 2.0
TARGET_P99_INCREASE_PCT = 2.0
TARGET_RSS_MB = 150.0


@dataclass
class Phase:
    """One measured window."""

    attached: bool
    start_mono_ns: int
    end_mono_ns: int
    machine_busy_s: float = 0.0
    ours_cpu_s: float = 0.0
    calls: int = 0
    errors: int = 0
    calls_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p50_stream_ms: float = 0.0
    p50_plain_ms: float = 0.0
    others_cores: float = 0.0
    agent_cpu_s: float = 0.0
    agent_vmhwm_mb: float = 0.0
    agent_vmrss_mb: float = 0.0
    agent_top_mappings: list[tuple[str, float]] = field(default_factory=list)
    agent_start_s: float = 0.0
    bpf_run_s: float = 0.0
    bpf_runs: int = 0
    calls_started: int = 0
    spans_client: int = 0
    spans_server: int = 0
    agent_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.end_mono_ns - self.start_mono_ns) / 1e9


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _fill_latency(phase: Phase, calls: list[Call]) -> None:
    w0, w1 = phase.start_mono_ns, phase.end_mono_ns
    ended = [c for c in calls if w0 <= c.end_mono_ns < w1]
    started = [c for c in calls if w0 <= c.start_mono_ns < w1]
    phase.calls = len(ended)
    phase.errors = sum(1 for c in ended if not c.ok)
    phase.calls_per_s = len(ended) / phase.seconds
    phase.calls_started = len(started)
    lat = [(c.end_mono_ns - c.start_mono_ns) / 1e6 for c in started]
    phase.p50_ms = _pct(lat, 0.5)
    phase.p99_ms = _pct(lat, 0.99)
    phase.p50_stream_ms = _pct(
        [(c.end_mono_ns - c.start_mono_ns) / 1e6 for c in started if c.streamed], 0.5
    )
    phase.p50_plain_ms = _pct(
        [(c.end_mono_ns - c.start_mono_ns) / 1e6 for c in started if not c.streamed], 0.5
    )


class Run:
    """The processes of one benchmark run and its phases."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.collector = Collector.start(workdir / "store.duckdb", workdir / "collector.log")
        self.server = ModelServer.start(args.first_chunk_delay_ms, args.chunk_interval_ms)
        self.pool = LoadPool(self.server.port, args.workers, stream_every=2)
        self.phases: list[Phase] = []
        self.unix_minus_mono_ns = time.time_ns() - time.monotonic_ns()
        self.agent_log = workdir / "agent.log"
        self.profile_text = ""

    def _ours_cpu_s(self, agent: AgentProcess | None) -> float:
        pids = [self.collector.proc.pid, self.server.proc.pid, os.getpid(), *self.pool.pids]
        if agent is not None:
            pids.append(agent.proc.pid)
        return sum(process_cpu_s(p) for p in pids)

    def _window(self, attached: bool, agent: AgentProcess | None, seconds: float) -> Phase:
        busy0, ours0 = machine_busy_s(), self._ours_cpu_s(agent)
        agent0 = process_cpu_s(agent.proc.pid) if agent else 0.0
        bpf0 = bpf_prog_run_ns(agent.proc.pid) if agent else (0, 0)
        start = time.monotonic_ns()
        time.sleep(seconds)
        end = time.monotonic_ns()
        phase = Phase(attached, start, end)
        phase.machine_busy_s = machine_busy_s() - busy0
        phase.ours_cpu_s = self._ours_cpu_s(agent) - ours0
        phase.others_cores = max(0.0, phase.machine_busy_s - phase.ours_cpu_s) / phase.seconds
        if agent is not None:
            phase.agent_cpu_s = process_cpu_s(agent.proc.pid) - agent0
            phase.agent_vmhwm_mb = status_kib(agent.proc.pid, "VmHWM") / 1024
            phase.agent_vmrss_mb = status_kib(agent.proc.pid, "VmRSS") / 1024
            phase.agent_top_mappings = largest_mappings(agent.proc.pid)
            bpf1 = bpf_prog_run_ns(agent.proc.pid)
            phase.bpf_run_s = (bpf1[0] - bpf0[0]) / 1e9
            phase.bpf_runs = bpf1[1] - bpf0[1]
        return phase

    def run(self) -> list[Call]:
        a = self.args
        self.pool.start()
        time.sleep(a.warmup_s)
        for i in range(a.pairs):
            self.phases.append(self._window(False, None, a.phase_s))
            self.server.reset()
            self.phases.append(self._attached(a.phase_s, profile=False))
            print(f"  pair {i + 1}/{a.pairs} done", flush=True)
        time.sleep(a.settle_s)
        self.phases.append(self._window(False, None, a.phase_s))
        if a.profile:
            self._attached(a.phase_s, profile=True)
        return self.pool.stop()

    def _attached(self, seconds: float, profile: bool) -> Phase:
        agent = AgentProcess.start(
            f"http://127.0.0.1:{self.collector.otlp_http_port}", self.server.port, self.agent_log
        )
        try:
            start_s = agent.wait_capturing(self.agent_log)
            time.sleep(self.args.settle_s)
            spy: subprocess.Popen[bytes] | None = None
            raw = self.workdir / "pyspy.txt"
            if profile:
                spy = _start_pyspy(agent.proc.pid, seconds, raw)
            phase = self._window(True, agent, seconds)
            phase.agent_start_s = start_s
            try:
                phase.agent_metrics = {
                    k: v
                    for k, v in agent.metrics().items()
                    if k.startswith(
                        ("infersight_agent_llm_calls", "infersight_agent_capture_dropped")
                    )
                    or k.startswith("infersight_agent_exchanges")
                }
            except Exception as exc:  # the report says so; the run goes on
                print(f"  could not read agent metrics: {exc}", flush=True)
            if spy is not None:
                spy.wait(seconds + 60)
                self.profile_text = summarize_pyspy(raw)
        finally:
            code = agent.stop()
            if code != 0:
                kept = RESULTS / "agent_overhead-agent.log"
                RESULTS.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.agent_log, kept)
                print(f"  agent exited with {code}; its log: {kept}", flush=True)
        time.sleep(self.args.settle_s)
        return phase

    def completeness(self, calls: list[Call]) -> None:
        """Count each attached window's spans in the collector once they have all arrived."""
        previous, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = self.collector.sql("SELECT count(*) FROM spans WHERE source = 'ebpf'")[0][0]
            if now != previous:
                previous, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since > 3:
                break
            time.sleep(0.5)
        for phase in self.phases:
            if not phase.attached:
                continue
            t0 = (phase.start_mono_ns + self.unix_minus_mono_ns) / 1e9
            t1 = (phase.end_mono_ns + self.unix_minus_mono_ns) / 1e9
            rows = self.collector.sql(
                "SELECT kind, count(*) FROM spans WHERE source = 'ebpf' "
                "AND gen_ai_operation_name = 'chat' "
                "AND start_time >= to_timestamp(?) AND start_time < to_timestamp(?) GROUP BY kind",
                [t0, t1],
            )
            counts = {str(k): int(n) for k, n in rows}
            phase.spans_client = counts.get("client", 0)
            phase.spans_server = counts.get("server", 0)

    def close(self) -> None:
        self.server.stop()
        self.collector.stop()


def _start_pyspy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("py-spy")
    args = ["record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw"]
    return subprocess.Popen(
        [str(exe), *args, "-o", str(out), "--threads", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarize_pyspy(raw: Path, top: int = 15) -> str:
    """Self and inclusive shares of functions, and shares of threads, from py-spy's raw output."""
    if not raw.exists():
        return "py-spy produced no output"
    total = 0
    self_count: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        try:
            n = int(n_text)
        except ValueError:
            continue
        frames = stack.split(";")
        total += n
        threads[frames[0]] += n
        self_count[frames[-1]] += n
        for f in set(frames[1:]):
            incl[f] += n
    if not total:
        return "py-spy recorded no samples"
    lines = [f"{total} samples (active threads only)", "threads:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in threads.most_common(8)]
    lines.append("self time (leaf frame):")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in self_count.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in incl.most_common(top)]
    return "\n".join(lines)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(phases: list[Phase]) -> dict[str, Any]:
    """Medians per state, ratios, and each attached phase against its two neighbours."""
    det = [p for p in phases if not p.attached]
    att = [p for p in phases if p.attached]
    out: dict[str, Any] = {}
    for label, group in (("detached", det), ("attached", att)):
        out[label] = {
            "calls_per_s": _median([p.calls_per_s for p in group]),
            "p50_ms": _median([p.p50_ms for p in group]),
            "p99_ms": _median([p.p99_ms for p in group]),
            "others_cores": _median([p.others_cores for p in group]),
        }
    d, a = out["detached"], out["attached"]
    out["throughput_loss_pct"] = 100 * (1 - a["calls_per_s"] / d["calls_per_s"])
    out["p50_increase_pct"] = 100 * (a["p50_ms"] / d["p50_ms"] - 1)
    out["p99_increase_pct"] = 100 * (a["p99_ms"] / d["p99_ms"] - 1)
    # Each attached phase against the mean of the detached phases either side cancels a
    # linear drift of the machine over the pair.
    pair_loss, pair_p99 = [], []
    for i, p in enumerate(phases):
        if p.attached and 0 < i < len(phases) - 1:
            before, after = phases[i - 1], phases[i + 1]
            ref_tput = (before.calls_per_s + after.calls_per_s) / 2
            ref_p99 = (before.p99_ms + after.p99_ms) / 2
            pair_loss.append(100 * (1 - p.calls_per_s / ref_tput))
            pair_p99.append(100 * (p.p99_ms / ref_p99 - 1))
    out["bracketed_throughput_loss_pct"] = _median(pair_loss)
    out["bracketed_p99_increase_pct"] = _median(pair_p99)
    out["bracketed_throughput_loss_each_pct"] = pair_loss
    out["bracketed_p99_increase_each_pct"] = pair_p99
    calls = sum(p.calls for p in att)
    captured = sum(p.spans_client for p in att)
    cpu = sum(p.agent_cpu_s for p in att)
    # Per captured call (its client-side span; the server side of the same call is a second).
    out["agent_cpu_s_per_1000_calls"] = 1000 * cpu / captured if captured else float("nan")
    out["agent_cores"] = cpu / sum(p.seconds for p in att) if att else float("nan")
    out["agent_peak_rss_mb"] = max((p.agent_vmhwm_mb for p in att), default=float("nan"))
    out["agent_rss_at_window_end_mb"] = _median([p.agent_vmrss_mb for p in att])
    out["agent_rss_by_mapping_mb"] = att[-1].agent_top_mappings if att else []
    out["agent_start_s"] = _median([p.agent_start_s for p in att])
    bpf = sum(p.bpf_run_s for p in att)
    out["bpf_run_s_per_1000_calls"] = 1000 * bpf / calls if calls and bpf else None
    out["bpf_runs_per_call"] = sum(p.bpf_runs for p in att) / calls if calls and bpf else None
    started = sum(p.calls_started for p in att)
    out["calls_sent_in_attached_windows"] = started
    out["client_spans"] = sum(p.spans_client for p in att)
    out["server_spans"] = sum(p.spans_server for p in att)
    out["completeness_client_pct"] = 100 * out["client_spans"] / started if started else None
    out["completeness_server_pct"] = 100 * out["server_spans"] / started if started else None
    drops: collections.Counter[str] = collections.Counter()
    for p in att:
        for k, v in p.agent_metrics.items():
            if "dropped" in k:
                drops[k] += int(v)
    out["agent_drops"] = dict(drops)
    return out


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(args: argparse.Namespace, phases: list[Phase], s: dict[str, Any]) -> str:
    m = machine()
    lines = [
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, kernel {m['kernel']}, {m['date_utc']}",
        f"load: {args.workers} client processes, keep-alive, half streamed; server first chunk "
        f"after {args.first_chunk_delay_ms:g} ms, {args.chunk_interval_ms:g} ms between chunks; "
        f"{args.pairs} attached phases of {args.phase_s:g} s between detached ones",
        "",
        "phase      calls/s   p50 ms   p99 ms  other tenants (cores)  agent CPU s  spans c/s  sent",
    ]
    for p in phases:
        lines.append(
            f"{'attached' if p.attached else 'detached':9} {p.calls_per_s:8.1f} {p.p50_ms:8.2f} "
            f"{p.p99_ms:8.2f}  {p.others_cores:21.2f}  "
            + (
                f"{p.agent_cpu_s:11.2f}  {p.spans_client}/{p.spans_server}  {p.calls_started}"
                if p.attached
                else ""
            )
        )
    d, a = s["detached"], s["attached"]
    loss, p99 = s["throughput_loss_pct"], s["p99_increase_pct"]
    lines += [
        "",
        f"medians   detached {d['calls_per_s']:.1f} calls/s, p50 {d['p50_ms']:.2f} ms, "
        f"p99 {d['p99_ms']:.2f} ms",
        f"          attached {a['calls_per_s']:.1f} calls/s, p50 {a['p50_ms']:.2f} ms, "
        f"p99 {a['p99_ms']:.2f} ms",
        f"throughput loss  {loss:6.2f} %  (bracketed {s['bracketed_throughput_loss_pct']:.2f} %)"
        f"  target < {TARGET_THROUGHPUT_LOSS_PCT:g} %: "
        f"{_verdict(loss < TARGET_THROUGHPUT_LOSS_PCT)}",
        f"p99 increase     {p99:6.2f} %  (bracketed {s['bracketed_p99_increase_pct']:.2f} %)"
        f"  target < {TARGET_P99_INCREASE_PCT:g} %: {_verdict(p99 < TARGET_P99_INCREASE_PCT)}",
        f"p50 increase     {s['p50_increase_pct']:6.2f} %",
        f"agent peak RSS   {s['agent_peak_rss_mb']:6.1f} MB  target < {TARGET_RSS_MB:g} MB: "
        f"{_verdict(s['agent_peak_rss_mb'] < TARGET_RSS_MB)}; resident at the window's end "
        f"{s['agent_rss_at_window_end_mb']:.1f} MB, most in: "
        + ", ".join(f"{n} {mb:.1f}" for n, mb in s["agent_rss_by_mapping_mb"]),
        f"agent CPU        {s['agent_cpu_s_per_1000_calls']:.2f} s per 1,000 calls "
        f"captured (each call captured on both sides: 2 spans); {s['agent_cores']:.2f} cores busy",
        f"agent start      {s['agent_start_s']:.1f} s to capture (BPF compile and attach)",
    ]
    if s["bpf_run_s_per_1000_calls"] is not None:
        lines.append(
            f"BPF programs     {s['bpf_run_s_per_1000_calls'] * 1000:.1f} ms per 1,000 calls, "
            f"{s['bpf_runs_per_call']:.1f} program runs per call (charged to the traced processes)"
        )
    lines += [
        f"completeness     client {s['client_spans']}/{s['calls_sent_in_attached_windows']} "
        f"({s['completeness_client_pct']:.2f} %), server {s['server_spans']}/"
        f"{s['calls_sent_in_attached_windows']} ({s['completeness_server_pct']:.2f} %)",
        f"agent drops      {s['agent_drops'] or 'none reported'}",
    ]
    return "\n".join(lines)


def _set_bpf_stats(value: str) -> str | None:
    path = Path("/proc/sys/kernel/bpf_stats_enabled")
    try:
        old = path.read_text().strip()
        path.write_text(value)
        return old
    except OSError as exc:
        print(f"note: cannot set kernel.bpf_stats_enabled ({exc}); BPF run time not measured")
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 attached phases of 6 s")
    parser.add_argument("--pairs", type=int, default=None, help="attached phases (default 5)")
    parser.add_argument("--phase-s", type=float, default=None, help="window length (15 s)")
    parser.add_argument("--warmup-s", type=float, default=None)
    parser.add_argument("--settle-s", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--first-chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--chunk-interval-ms", type=float, default=0.0)
    parser.add_argument("--bpf-stats", action="store_true", help="measure BPF program run time")
    parser.add_argument("--profile", action="store_true", help="py-spy the agent (extra phase)")
    args = parser.parse_args(argv)
    args.pairs = args.pairs or (2 if args.quick else 5)
    args.phase_s = args.phase_s or (6.0 if args.quick else 15.0)
    args.warmup_s = args.warmup_s if args.warmup_s is not None else (2.0 if args.quick else 5.0)
    if os.geteuid() != 0:
        print("the agent needs root (eBPF); nothing measured")
        return 1
    old_stats = _set_bpf_stats("1") if args.bpf_stats else None
    workdir = Path(tempfile.mkdtemp(prefix="infersight-agent-overhead-"))
    run: Run | None = None
    try:
        run = Run(args, workdir)
        print(f"running: {args.pairs} attached phases, {args.phase_s:g} s windows", flush=True)
        calls = run.run()
        run.completeness(calls)
        for p in run.phases:
            _fill_latency(p, calls)
        summary = summarize(run.phases)
        text = report(args, run.phases, summary)
        print(text)
        if run.profile_text:
            print("\nwhere the agent's time goes (py-spy, one attached phase):")
            print(run.profile_text)
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        blob = {
            "args": vars(args),
            "machine": machine(),
            "summary": summary,
            "phases": [asdict(p) | {"seconds": p.seconds} for p in run.phases],
            "profile": run.profile_text,
        }
        for name in (f"agent_overhead-{stamp}.json", "agent_overhead-latest.json"):
            (RESULTS / name).write_text(json.dumps(blob, indent=2, default=str))
        print(f"\nraw results: bench/results/agent_overhead-{stamp}.json")
        return 0
    finally:
        if run is not None:
            run.close()
        if old_stats is not None:
            _set_bpf_stats(old_stats)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
