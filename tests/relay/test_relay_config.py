"""The relay's and node-local pairing's settings: defaults, environment, flags, every invalid
value named by its key, and the targets the relay forwards to (never itself)."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, load_config
from agent.otel.export import GRPC, HTTP
from agent.relay.endpoint import forward_target
from tests.relay.support import relay_agent


def test_defaults_and_environment() -> None:
    cfg = load_config(environ={})
    assert (cfg.relay.mode, cfg.relay.host) == ("auto", "0.0.0.0")
    assert (cfg.relay.grpc_port, cfg.relay.http_port) == (4317, 4318)
    assert cfg.relay.buffer_bytes == 64 * 1024 * 1024
    assert (cfg.pairing.enabled, cfg.pairing.hold_s, cfg.pairing.hold_captures) == (
        True,
        8.0,
        "auto",
    )
    env = {
        "INFERSIGHT_RELAY_MODE": "on",
        "INFERSIGHT_RELAY_GRPC_PORT": "14317",
        "INFERSIGHT_RELAY_HTTP_PORT": "-1",
        "INFERSIGHT_RELAY_BUFFER_BYTES": "33554432",
        "INFERSIGHT_PAIRING_HOLD_S": "3.5",
        "INFERSIGHT_PAIRING_HOLD_CAPTURES": "always",
    }
    cfg = load_config(overrides={"relay": {"grpc_port": 24317}}, environ=env)
    assert cfg.relay.mode == "on"
    assert cfg.relay.grpc_port == 24317  # the flag beats the environment
    assert cfg.relay.http_port == -1
    assert cfg.relay.buffer_bytes == 32 * 1024 * 1024
    assert (cfg.pairing.hold_s, cfg.pairing.hold_captures) == (3.5, "always")


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("relay", "grpc_port", 70000, "relay.grpc_port"),
        ("relay", "mode", "sometimes", "relay.mode"),
        ("relay", "protocol", "smtp", "relay.protocol"),
        ("relay", "buffer_bytes", 1000, "relay.buffer_bytes"),
        ("relay", "retry_after_s", 0, "relay.retry_after_s"),
        ("relay", "senders", 0, "relay.senders"),
        ("relay", "headers", ["no-equals"], "relay.headers"),
        ("pairing", "hold_s", 0, "pairing.hold_s"),
        ("pairing", "settle_s", 9, "pairing.settle_s"),
        ("pairing", "hold_captures", "sometimes", "pairing.hold_captures"),
        ("pairing", "min_heuristic_confidence", 2, "pairing.min_heuristic_confidence"),
    ],
)
def test_invalid_values_name_their_key(section: str, key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(overrides={section: {key: value}}, environ={})


def test_forward_targets() -> None:
    t = forward_target("grpc://collector:4317", "auto", {}, {})
    assert (t.protocol, t.url, t.secure) == (GRPC, "http://collector:4317", False)
    t = forward_target("https://collector.example:443/otlp/", "auto", {"x": "1"}, {})
    assert (t.protocol, t.url, t.secure) == (HTTP, "https://collector.example:443/otlp", True)
    t = forward_target(None, "auto", {}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"})
    assert (t.protocol, t.host_port) == (GRPC, ("c", 4317))
    assert forward_target(None, "auto", {}, {}).loops_back({4317, 4318})
    assert not forward_target("http://collector:4318", "auto", {}, {}).loops_back({4317, 4318})


def test_outside_a_pod_the_relay_waits_to_be_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    agent = relay_agent("http://127.0.0.1:1", relay={"mode": "auto"})
    problems = agent.start()
    try:
        assert agent.relay is None
        assert not any("relay" in p for p in problems)
    finally:
        agent.stop()
    # in a pod (as the DaemonSet runs) it starts by itself
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    agent = relay_agent("http://127.0.0.1:1", relay={"mode": "auto"})
    agent.start()
    try:
        assert agent.relay is not None
    finally:
        agent.stop()


def test_a_relay_that_would_send_to_itself_stays_off() -> None:
    agent = relay_agent("http://127.0.0.1:4318", relay={"grpc_port": 4317, "http_port": 4318})
    problems = agent.start()
    try:
        assert agent.relay is None
        assert any("OTLP relay off: it would forward to itself" in p for p in problems)
    finally:
        agent.stop()
