"""The price table: the YAML shipped in the package plus the user's override, loaded into SQL.

Takes the packaged `prices.yaml`, an optional override file (argument, else the environment
variable `INFERSIGHT_ANALYTICS_PRICES_FILE`), and a `Database`; gives a validated `PriceTable`
and rewrites the `model_prices`, `gpu_prices` and `cost_settings` tables in one transaction;
when they changed, every stored call is priced again (`llm_calls.cost_usd` is stored with each
call, see `store/migrations/0005_call_rows.sql`), so past calls too carry the prices now in
force. Invalid files raise
`PriceTableError` naming the offending key. Reading the YAML happens in Python, so loading works
before and after the database is locked down. `cost_breakdown` sums `cost_usd` per model,
provider, service, namespace, pod, operation or prompt fingerprint.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collector.analytics.params import BadParameterError
from collector.analytics.query import fetch
from collector.api.sql import QueryRunner
from store.call_rows import CallRows, prices_digest, stored_prices_digest
from store.database import Database

log = logging.getLogger("infersight.cost")

PRICES_ENV = "INFERSIGHT_ANALYTICS_PRICES_FILE"


class PriceTableError(ValueError):
    """A price file is unreadable or invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelPrice(_Strict):
    """USD per million tokens of one hosted model."""

    input: float | None = Field(default=None, ge=0)
    output: float | None = Field(default=None, ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    aliases: list[str] = Field(default_factory=list)


class SelfHosted(_Strict):
    """How calls served by our own GPUs are priced."""

    method: Literal["gpu_time", "energy", "none"] | None = None
    default_usd_per_gpu_hour: float | None = Field(default=None, ge=0)
    usd_per_kwh: float | None = Field(default=None, ge=0)
    gpu_usd_per_hour: dict[str, float] = Field(default_factory=dict)


class PriceFile(_Strict):
    """One price file, the packaged one or an override."""

    version: str | None = None
    as_of: str | None = None
    currency: Literal["USD"] = "USD"
    self_hosted: SelfHosted = SelfHosted()
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    providers: dict[str, dict[str, ModelPrice]] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelPriceRow:
    """One row of `model_prices`."""

    model: str
    provider: str
    input_usd_per_mtok: float | None
    output_usd_per_mtok: float | None
    cached_input_usd_per_mtok: float | None
    cache_write_usd_per_mtok: float | None
    origin: str


@dataclass(slots=True)
class PriceTable:
    """The effective prices: package table merged with the override."""

    version: str
    models: list[ModelPriceRow] = field(default_factory=list)
    gpu_usd_per_hour: dict[str, float] = field(default_factory=dict)
    self_hosted_method: str = "gpu_time"
    default_usd_per_gpu_hour: float | None = None
    usd_per_kwh: float | None = None
    override_path: str | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-able view for the API."""
        return {
            "version": self.version,
            "override_path": self.override_path,
            "self_hosted": {
                "method": self.self_hosted_method,
                "default_usd_per_gpu_hour": self.default_usd_per_gpu_hour,
                "usd_per_kwh": self.usd_per_kwh,
                "gpu_usd_per_hour": dict(sorted(self.gpu_usd_per_hour.items())),
            },
            "models": [
                {
                    "model": r.model,
                    "provider": r.provider or None,
                    "input_usd_per_mtok": r.input_usd_per_mtok,
                    "output_usd_per_mtok": r.output_usd_per_mtok,
                    "cached_input_usd_per_mtok": r.cached_input_usd_per_mtok,
                    "cache_write_usd_per_mtok": r.cache_write_usd_per_mtok,
                    "origin": r.origin,
                }
                for r in self.models
            ],
        }


def packaged_prices_text() -> str:
    """The YAML text of the price table shipped with this release."""
    return resources.files("collector.analytics").joinpath("prices.yaml").read_text("utf-8")


def parse_price_file(text: str, source: str) -> PriceFile:
    """Validate one price file; `source` names it in error messages."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PriceTableError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PriceTableError(f"{source}: the top level must be a mapping")
    try:
        return PriceFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise PriceTableError(f"{source}: {problems}") from None


def _normalize_model(name: str) -> str:
    return name.strip().lower()


def _rows(price_file: PriceFile, origin: str) -> dict[tuple[str, str], ModelPriceRow]:
    rows: dict[tuple[str, str], ModelPriceRow] = {}

    def add(model: str, provider: str, price: ModelPrice) -> None:
        for name in [model, *price.aliases]:
            key = (_normalize_model(name), provider.strip())
            rows[key] = ModelPriceRow(
                key[0],
                key[1],
                price.input,
                price.output,
                price.cached_input,
                price.cache_write,
                origin,
            )

    for model, price in price_file.models.items():
        add(model, "", price)
    for provider, models in price_file.providers.items():
        for model, price in models.items():
            add(model, provider, price)
    return rows


def merge_price_files(
    package: PriceFile, override: PriceFile | None, override_path: str | None = None
) -> PriceTable:
    """The package table with the override's entries replacing or adding to it."""
    rows = _rows(package, "package")
    gpu = {k.strip().lower(): v for k, v in package.self_hosted.gpu_usd_per_hour.items()}
    method = package.self_hosted.method or "gpu_time"
    default_gpu_hour = package.self_hosted.default_usd_per_gpu_hour
    kwh = package.self_hosted.usd_per_kwh
    version = package.version or "unversioned"
    if override is not None:
        rows.update(_rows(override, "override"))
        gpu.update({k.strip().lower(): v for k, v in override.self_hosted.gpu_usd_per_hour.items()})
        method = override.self_hosted.method or method
        if override.self_hosted.default_usd_per_gpu_hour is not None:
            default_gpu_hour = override.self_hosted.default_usd_per_gpu_hour
        if override.self_hosted.usd_per_kwh is not None:
            kwh = override.self_hosted.usd_per_kwh
        version = f"{version}+{override.version or 'override'}"
    return PriceTable(
        version=version,
        models=sorted(rows.values(), key=lambda r: (r.model, r.provider)),
        gpu_usd_per_hour=gpu,
        self_hosted_method=method,
        default_usd_per_gpu_hour=default_gpu_hour,
        usd_per_kwh=kwh,
        override_path=override_path,
    )


def resolve_override_path(path: str | Path | None) -> str | None:
    """The override file to read: the argument, else the environment variable, else none."""
    if path is not None:
        return str(path)
    from_env = os.environ.get(PRICES_ENV, "").strip()
    return from_env or None


def read_price_table(path: str | Path | None = None) -> PriceTable:
    """The effective price table (package + override), validated, without touching a database."""
    package = parse_price_file(packaged_prices_text(), "collector/analytics/prices.yaml")
    override_path = resolve_override_path(path)
    override: PriceFile | None = None
    if override_path is not None:
        try:
            text = Path(override_path).read_text("utf-8")
        except OSError as exc:
            raise PriceTableError(
                f"{override_path}: cannot read the price override file ({exc.strerror}); "
                f"fix or unset {PRICES_ENV}"
            ) from None
        override = parse_price_file(text, override_path)
    return merge_price_files(package, override, override_path)


def write_price_table(db: Database, table: PriceTable) -> None:
    """Replace the price tables of `db` with `table`, in one transaction."""
    cur = db.cursor()
    try:
        cur.execute("BEGIN TRANSACTION")
        try:
            cur.execute("DELETE FROM model_prices")
            cur.execute("DELETE FROM gpu_prices")
            cur.execute("DELETE FROM cost_settings")
            if table.models:
                cur.executemany(
                    "INSERT INTO model_prices VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        [
                            r.model,
                            r.provider,
                            r.input_usd_per_mtok,
                            r.output_usd_per_mtok,
                            r.cached_input_usd_per_mtok,
                            r.cache_write_usd_per_mtok,
                            table.version,
                            r.origin,
                        ]
                        for r in table.models
                    ],
                )
            if table.gpu_usd_per_hour:
                cur.executemany(
                    "INSERT INTO gpu_prices VALUES (?, ?)",
                    [[k, v] for k, v in sorted(table.gpu_usd_per_hour.items())],
                )
            cur.execute(
                "INSERT INTO cost_settings VALUES (1, ?, ?, ?, ?, now())",
                [
                    table.version,
                    table.self_hosted_method,
                    table.default_usd_per_gpu_hour,
                    table.usd_per_kwh,
                ],
            )
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
    finally:
        cur.close()


def load_prices(db: Database, path: str | Path | None = None) -> PriceTable:
    """Read the package table and the override (`path`, else `$INFERSIGHT_ANALYTICS_PRICES_FILE`)
    and write them into `db`; return the table now in force."""
    table = read_price_table(path)
    write_price_table(db, table)
    cur = db.cursor()
    try:
        digest = prices_digest(cur)
        if digest != stored_prices_digest(cur):  # stored calls carry their cost: re-price them
            calls = CallRows().reprice(cur, digest)
            if calls:
                log.info("re-priced %d stored calls with price table %s", calls, table.version)
    finally:
        cur.close()
    return table


#: grouping of the cost endpoint -> column of `llm_calls`
COST_GROUPS: dict[str, str] = {
    "model": "model",
    "provider": "provider",
    "service": "service_name",
    "namespace": "k8s_namespace",
    "pod": "k8s_pod",
    "operation": "operation",
    "fingerprint": "prompt_fingerprint",
}


def cost_breakdown(
    runner: QueryRunner, start: datetime, end: datetime, by: str, *, limit: int = 1000
) -> dict[str, Any]:
    """Spend in [start, end) per model, provider, service, namespace, pod, operation or prompt
    fingerprint, with how much of it is priced by tokens, GPU time or energy."""
    column = COST_GROUPS.get(by)
    if column is None:
        raise BadParameterError(f"by: unknown grouping {by!r}; use one of {', '.join(COST_GROUPS)}")
    rows = fetch(
        runner,
        f"""
SELECT {column} AS key,
       count(*) AS calls,
       count(cost_usd) AS priced_calls,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cache_read_input_tokens), 0) AS cache_read_input_tokens,
       coalesce(sum(gpu_seconds), 0) AS gpu_seconds,
       coalesce(sum(gpu_energy_j), 0) AS gpu_energy_j,
       coalesce(sum(cost_usd), 0) AS cost_usd,
       coalesce(sum(cost_usd) FILTER (WHERE cost_basis = 'tokens'), 0) AS token_cost_usd,
       coalesce(sum(cost_usd) FILTER (WHERE cost_basis = 'gpu_time'), 0) AS gpu_time_cost_usd,
       coalesce(sum(cost_usd) FILTER (WHERE cost_basis = 'energy'), 0) AS energy_cost_usd
FROM llm_calls
WHERE start_time >= ? AND start_time < ?
GROUP BY {column}
ORDER BY cost_usd DESC, calls DESC, key NULLS LAST
LIMIT ?
""",
        [start, end, limit],
    )
    version = fetch(runner, "SELECT price_version FROM cost_settings WHERE id = 1")
    total = sum(float(r["cost_usd"]) for r in rows)
    for r in rows:
        r["unpriced_calls"] = int(r["calls"]) - int(r["priced_calls"])
        r["share"] = float(r["cost_usd"]) / total if total > 0 else None
    return {
        "by": by,
        "price_version": version[0]["price_version"] if version else None,
        "total_cost_usd": total,
        "rows": rows,
    }
