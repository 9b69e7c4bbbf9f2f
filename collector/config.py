"""Collector configuration: defaults, a YAML file, then `INFERSIGHT_<SECTION>_<KEY>` variables.

Takes an optional YAML path and the process environment; gives a validated `CollectorConfig`.
Invalid configuration raises `ConfigError` with a message that names the offending key, so the
collector fails at start instead of running with a surprise. Every field documents itself
(`infersight collector --print-config` shows the effective values).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "INFERSIGHT_"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerConfig(_Section):
    """Listening addresses."""

    host: str = Field("0.0.0.0", description="Address every listener binds to.")
    otlp_grpc_port: int = Field(4317, ge=0, le=65535, description="OTLP/gRPC port.")
    otlp_http_port: int = Field(4318, ge=0, le=65535, description="OTLP/HTTP port.")
    api_port: int = Field(7070, ge=0, le=65535, description="Analytics API, SQL, UI, /metrics.")
    log_level: str = Field("info", description="debug, info, warning or error.")


class StoreConfig(_Section):
    """The DuckDB trace store."""

    db: str = Field("./infersight.duckdb", description="Path of the DuckDB file.")
    checkpoint_threshold: str = Field(
        "256MB", description="WAL size at which DuckDB folds it into the main file."
    )
    memory_limit: str | None = Field(None, description="DuckDB memory limit, e.g. '4GB'.")
    max_queue_batches: int = Field(
        512, ge=1, description="Export batches waiting for the writer before 503/UNAVAILABLE."
    )
    max_group_rows: int = Field(
        100_000, ge=1, description="Rows the writer folds into one transaction at most."
    )


class OtlpConfig(_Section):
    """OTLP receivers."""

    max_body_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest export accepted, after decompression."
    )
    bearer_token: str | None = Field(
        None, description="When set, exports must carry 'Authorization: Bearer <token>'."
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with 503/UNAVAILABLE.")
    max_attributes: int = Field(
        4096,
        ge=1,
        description="Most attributes on one span, event, link, data point or log record; an "
        "item with more is rejected (partial success), never truncated.",
    )
    max_value_depth: int = Field(
        32, ge=1, description="Deepest nesting of array/map attribute values accepted."
    )
    decode_workers: int = Field(
        2,
        ge=0,
        le=64,
        description="Worker processes that decode exports, so decoding runs beside the store "
        "writer instead of sharing its GIL. 0 decodes in the collector process itself.",
    )
    content_in_attributes: bool = Field(
        False,
        description="Also keep prompt and response content in spans.attributes when "
        "genai_content holds it exactly as sent (stored twice). Off: stored once, in "
        "genai_content; content that normalization rewrote stays in attributes either way.",
    )


class SqlConfig(_Section):
    """The read-only SQL surfaces (HTTP and PostgreSQL wire)."""

    row_limit: int = Field(100_000, ge=1, description="Rows returned by one query at most.")
    timeout_s: float = Field(30.0, gt=0, description="Statement timeout in seconds.")


class GpuConfig(_Section):
    """GPU telemetry served from the store."""

    dcgm_freshness_s: float = Field(
        30.0,
        gt=0,
        description="GPU samples older than this are left out of the DCGM-named series "
        "on /metrics (a GPU that stopped reporting disappears instead of freezing).",
    )


class AnalyticsConfig(_Section):
    """Prompt analytics, cost and content search."""

    prices_file: str | None = Field(
        None,
        description="YAML price table that overrides the shipped one (same format as "
        "collector/analytics/prices.yaml).",
    )
    search_refresh_interval_s: float = Field(
        60.0, gt=0, description="Oldest a full-text index may get before a search rebuilds it."
    )


class PgWireConfig(_Section):
    """The PostgreSQL wire-protocol endpoint (Grafana, psql, BI tools), read-only."""

    enabled: bool = Field(True, description="Serve SQL over the PostgreSQL wire protocol.")
    host: str = Field(
        "127.0.0.1",
        description="Bind address. With no users configured (trust mode) only loopback is allowed.",
    )
    port: int = Field(5433, ge=0, le=65535, description="PostgreSQL wire port.")
    users: dict[str, str] = Field(
        default_factory=dict,
        description="User name -> password or SCRAM-SHA-256 verifier. Empty: trust mode.",
    )
    auth_method: str = Field("scram-sha-256", description="scram-sha-256, md5 or password.")
    tls_cert_file: str | None = Field(None, description="PEM certificate; enables TLS.")
    tls_key_file: str | None = Field(None, description="PEM private key of the certificate.")
    require_tls: bool = Field(False, description="Refuse clients that do not use TLS.")
    row_limit: int = Field(1_000_000, ge=1, description="Rows one statement returns at most.")
    max_connections: int = Field(64, ge=1, description="Concurrent client connections.")


class PairingConfig(_Section):
    """Pairing of SDK GenAI spans with the agent's eBPF captures of the same calls."""

    enabled: bool = Field(True, description="Run the periodic pairing pass.")
    interval_s: float = Field(2.0, ge=0.05, description="Seconds between pairing passes.")
    lookback_s: float = Field(
        900.0, gt=0, description="How far back a pass looks for unpaired GenAI spans."
    )
    window_s: float = Field(
        600.0, gt=0, description="Largest start-time distance between two spans of one call."
    )
    settle_s: float = Field(
        10.0,
        ge=0,
        description="Age a span must reach before the response-id and heuristic rules may "
        "pair it (lets the exact rules win with late arrivals).",
    )
    min_heuristic_confidence: float = Field(
        0.3, ge=0, le=1, description="Heuristic pairs below this confidence are not made."
    )
    retry_gap_s: float = Field(
        60.0,
        ge=0,
        description="Longest pause between a failed attempt and the same request sent again "
        "by the same process for the two to be one call (a retry).",
    )


class CallsConfig(_Section):
    """Maintenance of `llm_calls`, the one-row-per-call table, from the spans and pairs."""

    refresh_interval_s: float = Field(
        1.0, ge=0.05, description="Seconds between refresh passes (how far llm_calls trails)."
    )
    max_busy_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Largest share of its time the refresh thread may be busy: after a long "
        "pass the next one waits longer (llm_calls trails more), up to max_refresh_interval_s.",
    )
    max_refresh_interval_s: float = Field(
        10.0, ge=0.05, description="Longest wait between passes when passes are slow."
    )
    overlap_s: float = Field(
        30.0,
        gt=0,
        description="Longest delay between a span's receipt and its commit that a pass allows.",
    )
    join_window_s: float = Field(
        300.0,
        gt=0,
        description="Longest time between the receipt of the first and last span of one call.",
    )


class CollectorConfig(_Section):
    """Everything the collector reads at start."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    otlp: OtlpConfig = Field(default_factory=OtlpConfig)
    sql: SqlConfig = Field(default_factory=SqlConfig)
    gpu: GpuConfig = Field(default_factory=GpuConfig)
    analytics: AnalyticsConfig = Field(default_factory=AnalyticsConfig)
    pgwire: PgWireConfig = Field(default_factory=PgWireConfig)
    pairing: PairingConfig = Field(default_factory=PairingConfig)
    calls: CallsConfig = Field(default_factory=CallsConfig)


def _env_overrides(env: Mapping[str, str], model: type[BaseModel]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    sections = {name.upper(): name for name in model.model_fields}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX) :]
        for upper, section in sections.items():
            if rest.startswith(upper + "_"):
                field = rest[len(upper) + 1 :].lower()
                out.setdefault(section, {})[field] = value
                break
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, origin: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        lines.append(f"{origin}: {key}: {item['msg']}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> CollectorConfig:
    """Build the effective configuration: defaults < file < environment < explicit overrides."""
    data: dict[str, Any] = {}
    origin = "configuration"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded
    data = _merge(data, _env_overrides(os.environ if env is None else env, CollectorConfig))
    if overrides:
        data = _merge(data, {k: dict(v) for k, v in overrides.items() if v})
    try:
        return CollectorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None
