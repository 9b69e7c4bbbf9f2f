"""Agent configuration: defaults < YAML file < INFERSIGHT_* environment < command-line flags,
every invalid value named by its key, and the export target chosen from the endpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.config import ConfigError, capture_config, load_config, resolve_cgroup_ids
from agent.otel.export import GRPC, HTTP, ExportSettings, resolve_target


def test_defaults() -> None:
    cfg = load_config(environ={})
    assert cfg.agent.content == "off"
    assert cfg.agent.metrics_port == 9464
    assert cfg.exporter.endpoint is None
    assert cfg.exporter.protocol == "auto"
    assert cfg.gpu.enabled is True
    assert cfg.k8s.mode == "auto"
    cc = capture_config(cfg)
    assert (cc.filter_pids, cc.filter_ports, cc.filter_cgroup_ids) == (None, None, None)


def test_file_env_and_flags_in_order(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "agent:\n  content: metadata\n  metrics_port: 9000\n"
        "exporter:\n  endpoint: http://collector:4318\n  headers: [x-tenant=a]\n"
        "filters:\n  ports: [8000, 8001]\n  namespaces: [inference]\n"
        "capture:\n  max_payload_bytes: 4096\n  tls: false\n"
        "gpu:\n  period_s: 0.5\n"
    )
    env = {
        "INFERSIGHT_AGENT_METRICS_PORT": "9100",
        "INFERSIGHT_FILTERS_PORTS": "8000, 9000",
        "INFERSIGHT_GPU_ENABLED": "false",
        "UNRELATED": "1",
    }
    cfg = load_config(
        path, {"agent": {"content": "full"}, "filters": {"pids": [7, 8]}}, environ=env
    )
    assert cfg.agent.content == "full"  # flag beats file
    assert cfg.agent.metrics_port == 9100  # environment beats file
    assert cfg.exporter.endpoint == "http://collector:4318"
    assert cfg.exporter.headers == ("x-tenant=a",)
    assert cfg.filters.ports == (8000, 9000)
    assert cfg.filters.namespaces == ("inference",)
    assert cfg.gpu.enabled is False
    assert cfg.gpu.period_s == 0.5
    cc = capture_config(cfg)
    assert cc.max_payload_bytes == 4096
    assert cc.tls is False
    assert cc.filter_ports == frozenset({8000, 9000})
    assert cc.filter_pids == frozenset({7, 8})


@pytest.mark.parametrize(
    ("yaml_text", "env", "key"),
    [
        ("agent:\n  content: everything\n", {}, "agent.content"),
        ("agent:\n  metrics_port: lots\n", {}, "agent.metrics_port"),
        ("agent:\n  colour: blue\n", {}, "agent.colour"),
        ("exporter:\n  protocol: carrier-pigeon\n", {}, "exporter.protocol"),
        ("exporter:\n  headers: [novalue]\n", {}, "exporter.headers"),
        ("filters:\n  ports: [70000]\n", {}, "filters.ports"),
        ("capture:\n  filter_pids: [1]\n", {}, "capture.filter_pids"),
        ("capture:\n  max_payload_bytes: 1\n", {}, "capture.max_payload_bytes"),
        ("k8s:\n  mode: sometimes\n", {}, "k8s.mode"),
        ("gpu:\n  period_s: 0\n", {}, "gpu.period_s"),
        ("", {"INFERSIGHT_GPU_ENABLED": "perhaps"}, "gpu.enabled"),
        ("nonsense:\n  a: 1\n", {}, "nonsense"),
    ],
)
def test_invalid_values_name_their_key(
    tmp_path: Path, yaml_text: str, env: dict[str, str], key: str
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=env)
    assert str(info.value).startswith(key)


def test_unreadable_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})


def test_cgroup_filter_resolves_paths_to_ids(tmp_path: Path) -> None:
    (tmp_path / "kubepods.slice" / "pod-a").mkdir(parents=True)
    ids = resolve_cgroup_ids(("/kubepods.slice/pod-a", "12345"), str(tmp_path))
    assert ids == frozenset({os.stat(tmp_path / "kubepods.slice" / "pod-a").st_ino, 12345})
    with pytest.raises(ConfigError, match=r"filters\.cgroups"):
        resolve_cgroup_ids(("/no/such/cgroup",), str(tmp_path))


@pytest.mark.parametrize(
    ("endpoint", "protocol", "expected"),
    [
        (
            "http://collector:4318",
            "auto",
            (HTTP, "http://collector:4318/v1/traces", "http://collector:4318/v1/metrics", None),
        ),
        (
            "https://otel.example:443/",
            "auto",
            (
                HTTP,
                "https://otel.example:443/v1/traces",
                "https://otel.example:443/v1/metrics",
                None,
            ),
        ),
        (
            "http://collector:4318/v1/traces",
            "auto",
            (HTTP, "http://collector:4318/v1/traces", "http://collector:4318/v1/metrics", None),
        ),
        (
            "http://collector:4317",
            "auto",
            (GRPC, "http://collector:4317", "http://collector:4317", True),
        ),
        (
            "grpc://collector:9999",
            "auto",
            (GRPC, "http://collector:9999", "http://collector:9999", True),
        ),
        (
            "grpcs://collector:9999",
            "auto",
            (GRPC, "https://collector:9999", "https://collector:9999", False),
        ),
        ("collector:4317", "auto", (GRPC, "http://collector:4317", "http://collector:4317", True)),
        (
            "http://collector:5000",
            "grpc",
            (GRPC, "http://collector:5000", "http://collector:5000", True),
        ),
        (
            "http://collector:4317",
            "http/protobuf",
            (HTTP, "http://collector:4317/v1/traces", "http://collector:4317/v1/metrics", None),
        ),
    ],
)
def test_export_target(
    endpoint: str, protocol: str, expected: tuple[str, str, str, bool | None]
) -> None:
    t = resolve_target(ExportSettings(endpoint=endpoint, protocol=protocol))
    assert (t.protocol, t.traces, t.metrics, t.insecure) == expected


def test_export_target_from_standard_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    t = resolve_target(ExportSettings())
    assert (t.protocol, t.traces) == (GRPC, None)  # the exporter reads the endpoint itself
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    assert resolve_target(ExportSettings(), "TRACES").protocol == HTTP
    assert resolve_target(ExportSettings(), "METRICS").protocol == GRPC
