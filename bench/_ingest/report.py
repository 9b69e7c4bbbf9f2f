"""The ingest benchmark's figures: per-target runs in; medians, ratios, verdicts and text out.

Takes `TargetResult`s (one per system and protocol, each with its timed runs) and the machine
description; gives the summary dictionary saved as JSON, the plain-text table printed at the
end of a run, and the Markdown block kept in the "Ingest" section of `docs/benchmarks.md`
(only the text between its two marker comments is replaced, so other sections are left alone).
Must not: quote a figure that is not a median of the repeated runs (latency percentiles are
computed per run, then their median is quoted).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCS_BEGIN = "<!-- ingest-results:begin (written by bench/ingest.py --write-docs) -->"
DOCS_END = "<!-- ingest-results:end -->"

TARGET_SPANS_PER_S = 20_000.0
TARGET_CEILING_RATIO = 0.60
TARGET_P95_S = 2.0


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of `values`, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median_or_none(values: list[float | None]) -> float | None:
    """Median of the values that are not None."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(slots=True)
class TargetResult:
    """All timed runs of one system over one protocol."""

    key: str
    label: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def rates(self) -> list[float]:
        """Spans per second stored, one per run."""
        return [float(r["spans_per_s"]) for r in self.runs]

    @property
    def spans_per_s(self) -> float | None:
        """Median spans per second stored."""
        return statistics.median(self.rates) if self.runs else None

    def latency(self, q: float) -> float | None:
        """Median over runs of the q-th percentile of the probe delays."""
        return median_or_none([percentile(list(r.get("probe_delays_s", [])), q) for r in self.runs])

    @property
    def cpu_us_per_span(self) -> float | None:
        """Median CPU microseconds the target process spent per stored span."""
        return median_or_none(
            [
                float(r["target_cpu_s"]) / int(r["stored_spans"]) * 1e6
                if r.get("stored_spans") and r.get("target_cpu_s")
                else None
                for r in self.runs
            ]
        )

    @property
    def others_cores(self) -> float | None:
        """Median CPUs that other tenants of the machine kept busy during the runs."""
        return median_or_none([r.get("others_cores") for r in self.runs])

    @property
    def probes(self) -> int:
        """Probe spans timed over all runs."""
        return sum(len(r.get("probe_delays_s", [])) for r in self.runs)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, medians included."""
        return {
            "key": self.key,
            "label": self.label,
            "error": self.error,
            "notes": self.notes,
            "spans_per_s_median": self.spans_per_s,
            "spans_per_s_runs": self.rates,
            "latency_p50_s": self.latency(50),
            "latency_p95_s": self.latency(95),
            "probes": self.probes,
            "cpu_us_per_span": self.cpu_us_per_span,
            "others_cores": self.others_cores,
            "runs": self.runs,
        }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(results: dict[str, TargetResult], info: dict[str, Any]) -> dict[str, Any]:
    """Medians, ratios and verdicts of one benchmark run."""
    # The ceiling is the better of the ways of storing measured in-process.
    ceiling_rates = [
        r.spans_per_s
        for k, r in results.items()
        if k.startswith("ceiling") and r.spans_per_s is not None
    ]
    ceiling_rate = max(ceiling_rates) if ceiling_rates else None
    checks: list[dict[str, Any]] = []
    ratios: dict[str, float | None] = {}
    for proto in ("http", "grpc"):
        ours = results.get(f"infersight-{proto}")
        if ours is None or ours.spans_per_s is None:
            continue
        rate = ours.spans_per_s
        phoenix = results.get(f"phoenix-{proto}")
        ratios[f"infersight-{proto}/ceiling"] = _ratio(rate, ceiling_rate)
        ratios[f"infersight-{proto}/phoenix-{proto}"] = _ratio(
            rate, phoenix.spans_per_s if phoenix else None
        )
        checks.append(
            {
                "what": f"{ours.label}: spans/s stored >= {TARGET_SPANS_PER_S:,.0f}",
                "value": rate,
                "passed": rate >= TARGET_SPANS_PER_S,
            }
        )
        ceiling_ratio = ratios[f"infersight-{proto}/ceiling"]
        if ceiling_ratio is not None:
            checks.append(
                {
                    "what": f"{ours.label}: >= {TARGET_CEILING_RATIO:.0%} of the raw ceiling",
                    "value": ceiling_ratio,
                    "passed": ceiling_ratio >= TARGET_CEILING_RATIO,
                }
            )
        p95 = ours.latency(95)
        checks.append(
            {
                "what": f"{ours.label}: export-to-queryable p95 < {TARGET_P95_S:g} s",
                "value": p95,
                "passed": p95 is not None and p95 < TARGET_P95_S,
            }
        )
    return {
        "machine": info,
        "targets": {k: v.as_dict() for k, v in results.items()},
        "ratios": ratios,
        "checks": checks,
    }


def _fmt_rate(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _fmt_ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}" if v < 10 else f"{v:,.0f}x"


def _fmt_check(check: dict[str, Any]) -> str:
    value = check["value"]
    if "spans/s" in check["what"]:
        return _fmt_rate(value)
    if "p95" in check["what"]:
        return _fmt_s(value)
    return _fmt_ratio(value)


def _rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for t in summary["targets"].values():
        runs = ", ".join(f"{r:,.0f}" for r in t["spans_per_s_runs"]) or "-"
        rows.append(
            [
                t["label"],
                _fmt_rate(t["spans_per_s_median"]),
                runs,
                _fmt_s(t["latency_p50_s"]),
                _fmt_s(t["latency_p95_s"]),
                str(t["probes"]) if t["probes"] else "-",
                "n/a" if t["cpu_us_per_span"] is None else f"{t['cpu_us_per_span']:,.0f}",
                "n/a" if t["others_cores"] is None else f"{t['others_cores']:.2f}",
                ("FAILED: " + t["error"]) if t["error"] else "; ".join(t["notes"]),
            ]
        )
    return rows


HEADER = [
    "target",
    "spans/s stored (median)",
    "per run",
    "latency p50",
    "latency p95",
    "probes",
    "CPU us/span",
    "others' cores",
    "notes",
]


def text_report(summary: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    rows = [HEADER, *_rows(summary)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    lines = []
    for i, row in enumerate(rows):
        cells = [
            c.ljust(w) if j == 0 else c.rjust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join(cells) + ("  " + row[-1] if row[-1] else ""))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    for name, value in summary["ratios"].items():
        lines.append(f"ratio {name:<40} {_fmt_ratio(value)}")
    lines.append("")
    for check in summary["checks"]:
        verdict = "PASS" if check["passed"] else "FAIL"
        lines.append(f"[{verdict}] {check['what']}: {_fmt_check(check)}")
    return "\n".join(lines)


def markdown_block(summary: dict[str, Any], command: str) -> str:
    """The results block of the docs' Ingest section."""
    m = summary["machine"]
    out = [
        DOCS_BEGIN,
        f"Measured {m['date_utc']} with `{command}` on {m['nproc']} CPUs "
        f"({m['cpu_model']}), {m['memory_gib']} GiB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}; load average at start {m['loadavg_at_start']}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 2) + ["---"]) + "|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in _rows(summary)]
    out.append("")
    for name, value in summary["ratios"].items():
        out.append(f"- ratio {name}: **{_fmt_ratio(value)}**")
    out.append("")
    for check in summary["checks"]:
        out.append(
            f"- {'PASS' if check['passed'] else 'FAIL'}: {check['what']}: {_fmt_check(check)}"
        )
    gil = summary.get("gil_check") or []
    if gil:
        per_request = summary.get("settings", {}).get("spans_per_request", 100)
        out += [
            "",
            f"StoreWriter commit time (`--gil-check`, 4 exports of {per_request} spans each"
            " per commit):",
            "",
        ]
        out += [
            f"- `sys.setswitchinterval({row['switch_interval_s']:g})`, "
            f"{'beside' if row['busy_python_thread'] else 'without'} a thread keeping the GIL "
            f"busy: {row['commit_s'] * 1000:.0f} ms per commit"
            for row in gil
        ]
    out.append(DOCS_END)
    return "\n".join(out)


def write_docs(path: Path, block: str) -> None:
    """Replace the results block in `path` (between the markers), leaving the rest as is."""
    text = path.read_text()
    begin = text.find(DOCS_BEGIN)
    end = text.find(DOCS_END)
    if begin < 0 or end < begin:
        raise RuntimeError(f"{path} has no ingest results markers; add them to its Ingest section")
    path.write_text(text[:begin] + block + text[end + len(DOCS_END) :])
