"""Dashboards and provisioning: structure, data-source references, and every panel's SQL run
against the seeded store with Grafana's macros expanded."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.api.sql import QueryRunner
from collector.prom.genai import GenAIStoreCollector
from dashboards.build import GROUP_OPTIONS, dashboards, render
from tests.analytics import grafana, synth
from tests.analytics.conftest import Seeded
from tests.analytics.test_prompts import expected_cost

ROOT = Path(__file__).resolve().parents[2] / "dashboards"
FILES = sorted((ROOT / "grafana").glob("*.json"))
START, END = grafana.window(synth.BASE, synth.WINDOW_S)
INTERVAL_S = 60.0


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "provisioning" / "datasources" / "infersight.yaml").read_text())
    assert doc["apiVersion"] == 1
    return {ds["uid"]: ds for ds in doc["datasources"]}


def all_panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in doc["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def sql_targets(doc: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in all_panels(doc) for t in p.get("targets", []) if "rawSql" in t]


def test_files_are_what_the_builder_writes() -> None:
    built = dashboards()
    assert sorted(built) == [p.name for p in FILES]
    for path in FILES:
        assert path.read_text() == render(built[path.name]), (
            f"{path.name} is stale: run python -m dashboards.build"
        )


def test_provisioning() -> None:
    sources = provisioned_datasources()
    assert sources["infersight-sql"]["type"] == "grafana-postgresql-datasource"
    assert sources["infersight-sql"]["url"].endswith(":5433")
    assert sources["infersight-prom"]["type"] == "prometheus"
    assert sources["infersight-jaeger"]["type"] == "jaeger"
    assert sources["infersight-jaeger"]["url"].endswith("/jaeger")
    providers = yaml.safe_load(
        (ROOT / "provisioning" / "dashboards" / "infersight.yaml").read_text()
    )
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_structure(path: Path) -> None:
    doc = load(path)
    sources = provisioned_datasources()
    assert doc["uid"].startswith("infersight-")
    assert doc["title"]
    assert isinstance(doc["schemaVersion"], int)
    panels = all_panels(doc)
    assert len([p for p in panels if p["type"] != "row"]) >= 5
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert set(pos) == {"x", "y", "w", "h"}
        assert all(isinstance(v, int) and v >= 0 for v in pos.values())
        assert pos["w"] >= 1
        assert pos["h"] >= 1
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] in sources
        for target in panel["targets"]:
            ds = target["datasource"]
            assert ds["uid"] in sources, ds
            assert ds["type"] == sources[ds["uid"]]["type"]
            assert target["refId"]
            if ds["uid"] == "infersight-sql":
                assert target["rawQuery"] is True
                assert target["format"] in {"time_series", "table"}
            else:
                assert target["expr"].strip()
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                for link in prop.get("value", []):
                    assert link["internal"]["datasourceUid"] in sources
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"]["uid"] in sources


def variable_choices(doc: dict[str, Any], seeded: Seeded) -> list[dict[str, str]]:
    """Selections to run every query with: all defaults ("All", first group), then each value
    of each variable (one value, two values, each group-by column) with the others at default."""
    runner = QueryRunner(seeded.db, 10_000, 30)
    values: dict[str, list[str]] = {}
    for var in doc["templating"]["list"]:
        name = var["name"]
        if var["type"] == "query":
            sql = grafana.expand(var["query"], START, END, INTERVAL_S, {})
            options = [next(iter(row.values())) for row in runner.run(sql).table.to_pylist()]
            assert options, f"variable {name} has no options"
            values[name] = [
                var["allValue"],
                grafana.quote_values(options[:1]),
                grafana.quote_values(options[:2]),
            ]
        elif var["type"] == "custom":
            assert var["query"].split(",") == GROUP_OPTIONS
            values[name] = list(GROUP_OPTIONS)
    defaults = {k: v[0] for k, v in values.items()}
    combos = [defaults]
    for name, choices in values.items():
        combos.extend({**defaults, name: choice} for choice in choices[1:])
    return combos


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_sql_panel_runs_on_the_store(seeded: Seeded, path: Path) -> None:
    doc = load(path)
    runner = QueryRunner(seeded.db, 100_000, 30)
    for variables in variable_choices(doc, seeded):
        for panel, target in sql_targets(doc):
            sql = grafana.expand(target["rawSql"], START, END, INTERVAL_S, variables)
            assert "$" not in re.sub(r"'[^']*'", "", sql), f"{panel['title']}: {sql}"
            result = runner.run(sql)
            rows = result.table.to_pylist()
            assert rows, f"{panel['title']} returned nothing for {variables}"
            if target["format"] == "time_series":
                columns = result.table.column_names
                assert columns[0] == "time", panel["title"]
                times = [r["time"] for r in rows]
                assert times == sorted(times), panel["title"]
                assert all(START.timestamp() - 60 <= t <= END.timestamp() for t in times)


def _run(seeded: Seeded, sql: str, variables: dict[str, str]) -> list[dict[str, Any]]:
    expanded = grafana.expand(sql, START, END, INTERVAL_S, variables)
    rows: list[dict[str, Any]] = QueryRunner(seeded.db, 100_000, 30).run(expanded).table.to_pylist()
    return rows


def _panel(doc: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in all_panels(doc) if p["title"] == title)


def _calls_between(seeded: Seeded) -> list[synth.Call]:
    # $__timeFilter is BETWEEN: both ends included
    return [c for c in seeded.calls if 0 <= c.start_s <= synth.WINDOW_S]


ALL = {"service": "'__all'", "model": "'__all'", "group": "model"}


def test_golden_panels_agree_with_python(seeded: Seeded) -> None:
    doc = load(ROOT / "grafana" / "golden-signals.json")
    calls = _calls_between(seeded)
    count = _run(seeded, _panel(doc, "Calls")["targets"][0]["rawSql"], ALL)
    assert count == [{"calls": len(calls)}]
    rate = _run(
        seeded,
        _panel(doc, "Requests per second by ${group}")["targets"][0]["rawSql"],
        {**ALL, "group": "service_name"},
    )
    per_service: dict[str, float] = defaultdict(float)
    for r in rate:
        per_service[r["metric"]] += r["value"] * INTERVAL_S
    want: dict[str, float] = defaultdict(float)
    for c in calls:
        want[c.service] += 1
    assert per_service == pytest.approx(dict(want))
    one = _run(
        seeded,
        _panel(doc, "Calls")["targets"][0]["rawSql"],
        {**ALL, "model": grafana.quote_values(["gpt-4o-2024-08-06"])},
    )
    assert one == [{"calls": sum(c.model == "gpt-4o-2024-08-06" for c in calls)}]


def test_spend_panel_agrees_with_python(seeded: Seeded) -> None:
    doc = load(ROOT / "grafana" / "prompts-cost.json")
    rows = _run(seeded, _panel(doc, "Spend by service")["targets"][0]["rawSql"], ALL)
    want: dict[str, float] = defaultdict(float)
    for c in _calls_between(seeded):
        want[c.service] += expected_cost(c) or 0.0
    assert {r["service"]: r["usd"] for r in rows} == pytest.approx(dict(want))


def test_prometheus_panels_use_exposed_metrics(seeded: Seeded) -> None:
    registry = CollectorRegistry()
    registry.register(GenAIStoreCollector(seeded.db))
    exposed = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        exposed |= {s.name for s in family.samples}
    for path in FILES:
        for panel in all_panels(load(path)):
            for target in panel.get("targets", []):
                if "expr" not in target:
                    continue
                names = set(re.findall(r"\b((?:gen_ai|infersight)_[a-z0-9_]+)\b", target["expr"]))
                metric_names = {
                    n
                    for n in names
                    if not n.startswith(("gen_ai_request_model", "gen_ai_token_type"))
                }
                assert metric_names, target["expr"]
                assert metric_names <= exposed, (panel["title"], metric_names - exposed)
