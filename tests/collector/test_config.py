"""Configuration: precedence, clear errors naming the key, and docs that match the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import ConfigError, load_config
from collector.config_docs import render

REPO = Path(__file__).resolve().parents[2]


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "server:\n  api_port: 1111\n  otlp_http_port: 2222\nstore:\n  db: a.duckdb\n"
    )
    cfg = load_config(
        cfg_file,
        env={"INFERSIGHT_SERVER_OTLP_HTTP_PORT": "3333"},
        overrides={"store": {"db": "b.duckdb"}},
    )
    assert cfg.server.api_port == 1111
    assert cfg.server.otlp_http_port == 3333
    assert cfg.store.db == "b.duckdb"
    assert cfg.server.otlp_grpc_port == 4317


@pytest.mark.parametrize(
    ("text", "env", "needle"),
    [
        ("server:\n  api_port: eighty\n", {}, "server.api_port"),
        ("server:\n  colour: blue\n", {}, "server.colour"),
        ("- a list\n", {}, "mapping"),
        ("server: [unclosed\n", {}, "not valid YAML"),
        ("", {"INFERSIGHT_OTLP_MAX_BODY_BYTES": "-5"}, "otlp.max_body_bytes"),
        ("", {"INFERSIGHT_SQL_TIMEOUT_S": "0"}, "sql.timeout_s"),
    ],
)
def test_invalid_configuration_names_the_key(
    tmp_path: Path, text: str, env: dict[str, str], needle: str
) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(cfg_file, env=env)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", env={})


def test_reference_page_is_generated_from_the_code() -> None:
    assert (REPO / "docs" / "configuration.md").read_text() == render(), (
        "docs/configuration.md is stale: "
        "run python -m collector.config_docs > docs/configuration.md"
    )
