"""Ingest benchmark: GenAI spans per second STORED by the collector, against two references.

Takes command-line options (see `--help`); gives a table on stdout, a JSON file under
`bench/results/`, and with `--write-docs` the results block of `docs/benchmarks.md`.

What it measures, each over `--repeats` timed runs whose medians are quoted:
  - infersight over OTLP/HTTP (protobuf) and OTLP/gRPC: `infersight collector` on a fresh DuckDB
    file, fed by `--senders` separate processes that send pre-encoded export requests of
    `--spans-per-request` GenAI chat spans, one export in flight each. A run counts as done when
    `SELECT count(*) FROM spans` through the SQL API sees every acknowledged span.
  - export-to-queryable latency: during each run a probe span is exported every
    `--probe-interval-s` and the SQL API is polled until it is found; p50/p95 per run.
  - the raw ceiling: the same requests parsed and decoded with the collector's `decode_traces`
    in one process without any network, stored through `StoreWriter` and, alternately, by
    direct register + INSERT on the decoding thread; the better median is the ceiling.
  - Arize Phoenix (its own venv `bench/.venv-phoenix`, SQLite store, telemetry off) fed the same
    load over OTLP/HTTP and OTLP/gRPC, done when its SQLite file holds every span.
Every target is first warmed up by runs of growing size; the last warm-up's rate sizes the
timed runs so that each lasts about `--duration-s` (a target that queues before storing is
never handed a backlog it would need minutes to work off).
Beside spans/s, each run reports the CPU the target spent per stored span and the CPUs the
machine's other tenants kept busy, so figures from a shared machine can be judged.
With `--profile` an extra run per infersight protocol is recorded with py-spy and the shares
of time per thread and function are printed; `--gil-check` times StoreWriter commits alone and
beside a thread that keeps the GIL busy.
Must not: report a figure measured before the spans could be queried.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _ingest import profile as pyspy
from _ingest.measure import RunResult, calibrate, timed_run
from _ingest.report import (
    TargetResult,
    machine,
    markdown_block,
    percentile,
    summarize,
    text_report,
    write_docs,
)
from _ingest.senders import Protocol, SenderPool, seeds_for
from _ingest.targets import (
    PHOENIX_VERSION,
    REPO,
    InfersightCollector,
    PhoenixServer,
    Target,
    ensure_phoenix_venv,
)

ALL_TARGETS = ("infersight-http", "infersight-grpc", "ceiling", "phoenix-http", "phoenix-grpc")
LABELS = {
    "infersight-http": "infersight OTLP/HTTP",
    "infersight-grpc": "infersight OTLP/gRPC",
    "ceiling": "raw ceiling",
    "ceiling-writer": "raw ceiling: decode + StoreWriter",
    "ceiling-direct": "raw ceiling: decode + direct INSERT",
    "phoenix-http": f"Phoenix {PHOENIX_VERSION} OTLP/HTTP",
    "phoenix-grpc": f"Phoenix {PHOENIX_VERSION} OTLP/gRPC",
}
RESULTS_DIR = REPO / "bench" / "results"
DOCS_PATH = REPO / "docs" / "benchmarks.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options; `--quick` changes the defaults of the others."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--quick", action="store_true", help="short runs, Phoenix over HTTP only (under 2 minutes)"
    )
    p.add_argument(
        "--targets", default=None, help=f"comma-separated subset of {','.join(ALL_TARGETS)}"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per target (median)")
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="approximate length of one timed run [10; quick 2]",
    )
    p.add_argument("--senders", type=int, default=8, help="sender processes")
    p.add_argument("--spans-per-request", type=int, default=100)
    p.add_argument(
        "--templates-per-sender",
        type=int,
        default=4,
        help="distinct pre-encoded requests per sender (ids are re-stamped per send)",
    )
    p.add_argument(
        "--ceiling-group",
        type=int,
        default=16,
        help="requests per transaction in the ceiling's direct-INSERT mode",
    )
    p.add_argument("--probe-interval-s", type=float, default=0.25)
    p.add_argument(
        "--retry-backoff-s",
        type=float,
        default=0.1,
        help="wait before resending an export the target refused (503/UNAVAILABLE)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="record the collector with py-spy during one extra run per protocol",
    )
    p.add_argument(
        "--gil-check",
        action="store_true",
        help="also time StoreWriter commits alone and beside a thread keeping the GIL busy",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help=f"replace the results block of {DOCS_PATH.relative_to(REPO)}",
    )
    p.add_argument("--keep-scratch", action="store_true", help="keep databases and logs")
    args = p.parse_args(argv)
    if args.duration_s is None:
        args.duration_s = 2.0 if args.quick else 10.0
    if args.targets is None:
        chosen = [t for t in ALL_TARGETS if not (args.quick and t == "phoenix-grpc")]
    else:
        chosen = [t.strip() for t in args.targets.split(",") if t.strip()]
        unknown = set(chosen) - set(ALL_TARGETS)
        if unknown:
            p.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(ALL_TARGETS)}")
    args.target_list = chosen
    return args


def _say(text: str) -> None:
    print(text, flush=True)


def _run_line(label: str, i: int, n: int, r: RunResult) -> str:
    p50 = percentile(r.probe_delays_s, 50)
    p95 = percentile(r.probe_delays_s, 95)
    probes = (
        f", probes p50 {p50 * 1000:.0f} ms p95 {p95 * 1000:.0f} ms (n={len(r.probe_delays_s)})"
        if p50 is not None and p95 is not None
        else ""
    )
    extra = ""
    if r.retries or r.errors or not r.complete:
        extra = (
            f" [retries {r.retries}, errors {r.errors}"
            f"{', NOT all stored' if not r.complete else ''}"
            f"{', ' + r.first_error if r.first_error else ''}]"
        )
    return (
        f"  {label} run {i}/{n}: {r.spans_per_s:,.0f} spans/s stored "
        f"({r.stored_spans:,} spans in {r.elapsed_s:.2f} s, drain {r.drain_s:.2f} s, "
        f"sender CPU {r.sender_cpu_s / max(r.elapsed_s, 1e-9):.2f} cores){probes}{extra}"
    )


def _writer_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    return {
        "commits": delta("infersight_writer_commits_total"),
        "rows": delta('infersight_writer_rows_total{table="spans"}'),
        "commit_s": delta("infersight_writer_commit_seconds_sum"),
    }


def _timed_runs(
    args: argparse.Namespace,
    result: TargetResult,
    target: Target,
    pool: SenderPool,
    protocol: Protocol,
    drain_timeout_s: float,
    writer_metrics: Callable[[], dict[str, float]] | None = None,
) -> None:
    rate = calibrate(
        target,
        pool,
        protocol,
        args.spans_per_request,
        min_run_s=min(2.0, args.duration_s / 2),
        drain_timeout_s=drain_timeout_s,
        retry_backoff_s=args.retry_backoff_s,
    )
    requests = max(pool.senders, round(rate * args.duration_s / args.spans_per_request))
    _say(f"  {result.label}: warm-up rate {rate:,.0f} spans/s -> {requests} requests per run")
    for i in range(1, args.repeats + 1):
        before = writer_metrics() if writer_metrics else {}
        run = timed_run(
            target,
            pool,
            protocol,
            requests=requests,
            deadline_s=3 * args.duration_s,
            probe_interval_s=args.probe_interval_s,
            drain_timeout_s=drain_timeout_s,
            retry_backoff_s=args.retry_backoff_s,
        )
        row = asdict(run)
        line = _run_line(result.label, i, args.repeats, run)
        if writer_metrics:
            w = _writer_delta(before, writer_metrics())
            if w["commits"]:
                row["spans_per_commit"] = w["rows"] / w["commits"]
                row["commit_ms"] = w["commit_s"] / w["commits"] * 1000
                # Share of the run the single writer spent inside commits: near 1 means the
                # writer, not the receivers, sets the pace.
                row["writer_busy"] = w["commit_s"] / run.elapsed_s
                line += (
                    f"; writer: {row['spans_per_commit']:,.0f} spans/commit, "
                    f"{row['commit_ms']:.0f} ms/commit, busy {row['writer_busy']:.0%}"
                )
        result.runs.append(row)
        _say(line)
        if not run.complete:
            result.notes.append(f"run {i}: not every acknowledged span was stored")
        if run.errors:
            result.notes.append(f"run {i}: {run.errors} failed exports ({run.first_error})")


def _profile_run(
    args: argparse.Namespace,
    collector: InfersightCollector,
    pool: SenderPool,
    protocol: Protocol,
    key: str,
    out_dir: Path,
    rate: float,
) -> dict[str, Any]:
    duration = max(2, math.ceil(args.duration_s))
    requests = max(pool.senders, round(rate * duration / args.spans_per_request))
    files = {"all": out_dir / f"pyspy-{key}.txt", "gil": out_dir / f"pyspy-{key}-gil.txt"}
    recorders = {
        name: pyspy.record(collector.pid, duration, path, gil_only=name == "gil", rate_hz=100)
        for name, path in files.items()
    }
    time.sleep(0.5)
    timed_run(
        collector,
        pool,
        protocol,
        requests=requests,
        deadline_s=duration,
        probe_interval_s=None,
        retry_backoff_s=args.retry_backoff_s,
    )
    summaries: dict[str, Any] = {}
    for name, proc in recorders.items():
        _, err = proc.communicate(timeout=duration + 60)
        if proc.returncode != 0 or not files[name].exists():
            summaries[name] = {"error": err.decode(errors="replace")[-500:]}
            continue
        summaries[name] = asdict(pyspy.summarize_raw(files[name].read_text()))
        summaries[name]["raw_file"] = str(files[name])
    return summaries


def _decode_workers(pid: int) -> int:
    """How many spawned worker processes (the collector's decoders) run under `pid`."""
    from _ingest.cpu import child_pids

    count = 0
    for child in child_pids(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                count += b"spawn_main" in f.read()
        except OSError:
            continue
    return count


def _collector_extras(collector: InfersightCollector, result: TargetResult) -> None:
    def median_of(key: str) -> float | None:
        values = [float(r[key]) for r in result.runs if key in r]
        return statistics.median(values) if values else None

    workers = _decode_workers(collector.pid)
    result.notes.append(
        f"decoding in {workers} worker processes" if workers else "decoding in-process"
    )
    per_commit = median_of("spans_per_commit")
    commit_ms = median_of("commit_ms")
    busy = median_of("writer_busy")
    if per_commit is not None and commit_ms is not None and busy is not None:
        result.notes.append(
            f"writer {per_commit:,.0f} spans/commit, {commit_ms:.0f} ms/commit, busy {busy:.0%}"
        )
    pairing = collector.writer_metrics()
    last_pass_s = pairing.get("infersight_pairing_last_pass_seconds")
    if last_pass_s is not None:
        unpaired = pairing.get("infersight_pairing_unpaired_sdk_spans", 0.0)
        result.notes.append(
            f"pairing pass {last_pass_s:.2f} s over {unpaired:,.0f} unpaired SDK spans at the end"
        )
    filled = collector.sql("SELECT count(gen_ai_provider_name) FROM spans")[0][0]
    content = collector.sql("SELECT count(*) FROM genai_content")[0][0]
    if not filled:
        result.notes.append("GenAI columns empty (normalization not applied)")
    if not content:
        result.notes.append("no genai_content rows")


def measure_infersight(
    args: argparse.Namespace, protocol: Protocol, scratch: Path, profiles: dict[str, Any]
) -> TargetResult:
    """Timed runs of one collector over one protocol."""
    key = f"infersight-{protocol}"
    result = TargetResult(key, LABELS[key])
    workdir = scratch / key
    workdir.mkdir()
    collector = InfersightCollector(workdir)
    pool: SenderPool | None = None
    try:
        pool = SenderPool(
            protocol,
            collector.otlp_endpoint(protocol),
            args.senders,
            args.templates_per_sender,
            args.spans_per_request,
            args.retry_backoff_s,
        )
        _timed_runs(
            args, result, collector, pool, protocol, 60, writer_metrics=collector.writer_metrics
        )
        _collector_extras(collector, result)
        if args.profile:
            _say(f"  {result.label}: profiling one extra run with py-spy")
            try:
                profiles[key] = _profile_run(
                    args,
                    collector,
                    pool,
                    protocol,
                    key,
                    RESULTS_DIR,
                    result.spans_per_s or 10_000.0,
                )
            except (OSError, RuntimeError) as exc:
                profiles[key] = {"error": str(exc)}
    finally:
        if pool is not None:
            pool.close()
        code = collector.stop()
        if code != 0:
            result.notes.append(f"collector exited {code} on SIGTERM (see {collector.log_path})")
    return result


def measure_ceiling(args: argparse.Namespace, scratch: Path) -> dict[str, TargetResult]:
    """Timed runs of the in-process decode-and-store loop, both ways, alternating."""
    # Imported here: sender processes re-import this module and need none of the store.
    from _ingest.ceiling import CeilingProcess

    results = {k: TargetResult(k, LABELS[k]) for k in ("ceiling-writer", "ceiling-direct")}
    workdir = scratch / "ceiling"
    workdir.mkdir()
    proc = CeilingProcess(
        str(workdir / "ceiling.duckdb"),
        seeds_for(args.senders, args.templates_per_sender),
        args.spans_per_request,
        args.ceiling_group,
    )
    try:
        for mode in ("writer", "direct"):
            proc.run(mode, min(2.0, args.duration_s / 2))
        for i in range(1, args.repeats + 1):
            for mode in ("writer", "direct"):
                result = results[f"ceiling-{mode}"]
                run = proc.run(mode, args.duration_s)
                rate = run.spans / run.elapsed_s
                result.runs.append(
                    {
                        **asdict(run),
                        "spans_per_s": rate,
                        "stored_spans": run.spans,
                        "target_cpu_s": run.cpu_s,
                    }
                )
                _say(
                    f"  {result.label} run {i}/{args.repeats}: {rate:,.0f} spans/s stored "
                    f"({run.spans:,} spans in {run.elapsed_s:.2f} s, "
                    f"{run.cpu_s / run.elapsed_s:.2f} cores busy, "
                    f"others {run.others_cores:.2f} cores)"
                )
    finally:
        proc.close()
    return results


def measure_phoenix(
    args: argparse.Namespace, protocols: list[Protocol], scratch: Path
) -> dict[str, TargetResult]:
    """Timed runs of one Phoenix server over each protocol asked for."""
    results = {
        f"phoenix-{p}": TargetResult(f"phoenix-{p}", LABELS[f"phoenix-{p}"]) for p in protocols
    }
    try:
        t0 = time.monotonic()
        exe = ensure_phoenix_venv(sys.stdout)
        workdir = scratch / "phoenix"
        workdir.mkdir()
        server = PhoenixServer(exe, workdir)
        _say(f"  Phoenix ready after {time.monotonic() - t0:.1f} s (SQLite at {server.db_path})")
    except (OSError, RuntimeError, ValueError) as exc:
        for r in results.values():
            r.error = str(exc).splitlines()[0]
        return results
    try:
        for protocol in protocols:
            result = results[f"phoenix-{protocol}"]
            pool = SenderPool(
                protocol,
                server.otlp_endpoint(protocol),
                args.senders,
                args.templates_per_sender,
                args.spans_per_request,
                args.retry_backoff_s,
            )
            try:
                _timed_runs(args, result, server, pool, protocol, drain_timeout_s=240)
            finally:
                pool.close()
            retries = sum(int(r["retries"]) for r in result.runs)
            if retries:
                result.notes.append(f"{retries} exports refused and resent")
    finally:
        server.stop()
    if len(protocols) > 1:
        for r in results.values():
            r.notes.append("one Phoenix server for both protocols")
    return results


def run_gil_check(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """Commit time of the store writer with and without a thread holding the GIL."""
    from _ingest.ceiling import gil_check

    rows = gil_check(
        str(scratch / "gil-check.duckdb"),
        seeds_for(args.senders, args.templates_per_sender)[:16],
        args.spans_per_request,
        duration_s=min(3.0, args.duration_s),
    )
    out = []
    for interval_s, busy, commit_s in rows:
        out.append(
            {"switch_interval_s": interval_s, "busy_python_thread": busy, "commit_s": commit_s}
        )
        _say(
            f"  sys.setswitchinterval({interval_s:g}), "
            f"{'with' if busy else 'without'} a GIL-busy thread: "
            f"{commit_s * 1000:6.1f} ms per commit of {4 * args.spans_per_request} spans"
        )
    return out


def _print_profiles(profiles: dict[str, Any]) -> None:
    for key, kinds in profiles.items():
        for kind, s in kinds.items() if isinstance(kinds, dict) else ():
            title = "all active threads" if kind == "all" else "while holding the GIL"
            _say(f"\nprofile {LABELS.get(key, key)}, {title}:")
            if not isinstance(s, dict) or "error" in s:
                _say(f"  py-spy failed: {s.get('error') if isinstance(s, dict) else s}")
                continue
            _say(f"  {s['samples']} samples; by thread:")
            for name, share in s["by_thread"]:
                _say(f"    {share:6.1%}  {name}")
            _say("  self time (leaf function):")
            for name, share in s["self_top"]:
                _say(f"    {share:6.1%}  {name}")
            _say("  inclusive time, the project's own functions:")
            for name, share in s["project_top"]:
                _say(f"    {share:6.1%}  {name}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 when every target ran (a missed target is not an error)."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers started below are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = machine()
    _say(
        f"ingest benchmark on {info['nproc']} CPUs ({info['cpu_model']}), "
        f"load average {info['loadavg_at_start']}, {info['date_utc']}"
    )
    _say(
        f"load: {args.senders} sender processes x 1 export in flight, "
        f"{args.spans_per_request} GenAI chat spans per export, "
        f"{args.repeats} timed runs of ~{args.duration_s:g} s per target"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="infersight-bench-ingest-"))
    results: dict[str, TargetResult] = {}
    profiles: dict[str, Any] = {}
    started = time.monotonic()
    gil_rows: list[dict[str, Any]] = []
    try:
        for key in args.target_list:
            if key.startswith("phoenix-") and key in results:
                continue
            _say(f"\n== {LABELS[key]}")
            try:
                if key == "ceiling":
                    results.update(measure_ceiling(args, scratch))
                elif key.startswith("infersight-"):
                    proto: Protocol = "http" if key.endswith("http") else "grpc"
                    results[key] = measure_infersight(args, proto, scratch, profiles)
                else:
                    protos: list[Protocol] = [
                        "http" if k.endswith("http") else "grpc"
                        for k in args.target_list
                        if k.startswith("phoenix-")
                    ]
                    results.update(measure_phoenix(args, protos, scratch))
            except Exception as exc:  # a failed target is reported, the others still run
                traceback.print_exc()
                results[key] = TargetResult(
                    key,
                    LABELS[key],
                    error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                )
        if args.gil_check:
            _say("\n== GIL check: StoreWriter commit time")
            gil_rows = run_gil_check(args, scratch)
    finally:
        if args.keep_scratch:
            _say(f"scratch kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    order = [*ALL_TARGETS[:2], "ceiling", "ceiling-writer", "ceiling-direct", *ALL_TARGETS[3:]]
    ordered = {k: results[k] for k in order if k in results}
    summary = summarize(ordered, info)
    summary["settings"] = {k: v for k, v in vars(args).items() if k != "target_list"}
    summary["elapsed_s"] = time.monotonic() - started
    summary["profiles"] = profiles
    summary["gil_check"] = gil_rows
    _say(f"\n== ingest results ({summary['elapsed_s']:.0f} s)\n")
    _say(text_report(summary))
    if profiles:
        _print_profiles(profiles)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = RESULTS_DIR / f"ingest-{stamp}.json"
    out.write_text(json.dumps(summary, indent=2))
    (RESULTS_DIR / "ingest-latest.json").write_text(json.dumps(summary, indent=2))
    _say(f"\nresults saved to {out.relative_to(REPO)}")
    if args.write_docs:
        command = "python bench/ingest.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_docs(DOCS_PATH, markdown_block(summary, command.strip()))
        _say(f"results block of {DOCS_PATH.relative_to(REPO)} updated")
    return 0 if not any(r.error for r in ordered.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
