"""Where the relay forwards to: one OTLP endpoint of the collector, gRPC or HTTP.

Takes in: the relay's own endpoint and protocol settings, the agent exporter's, and the
environment (`OTEL_EXPORTER_OTLP_ENDPOINT`). Gives out: a `ForwardTarget` (protocol, the HTTP
base URL or the gRPC `host:port`, TLS or not, headers), chosen with the same rules as the
agent's own exporters (`agent.otel.export.resolve_target`), and `loops_back()`, which says
when that target is the relay itself (a relay forwarding to its own port would never deliver).
Reads nothing but its arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agent.otel.export import GRPC, HTTP, ExportSettings, resolve_target

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""})


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    """A resolved relay destination."""

    protocol: str  # GRPC or HTTP
    #: HTTP: base URL without the `/v1/<signal>` suffix; gRPC: `http(s)://host:port`.
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def secure(self) -> bool:
        return self.url.startswith("https://")

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        default = 443 if self.secure else (4317 if self.protocol == GRPC else 4318)
        return (parts.hostname or "", parts.port or default)

    def loops_back(self, own_ports: set[int]) -> bool:
        """True when the target is a local address on one of the relay's own ports."""
        host, port = self.host_port
        return host in _LOCAL_HOSTS and port in own_ports


def forward_target(
    endpoint: str | None,
    protocol: str,
    headers: Mapping[str, str],
    environ: Mapping[str, str],
) -> ForwardTarget:
    """The relay's destination: `endpoint` (else `OTEL_EXPORTER_OTLP_ENDPOINT`, else localhost
    on the protocol's port) with `protocol` (`auto`, `grpc` or `http/protobuf`)."""
    endpoint = endpoint or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or None
    if endpoint is None:
        endpoint = "http://localhost:4317" if protocol == GRPC else "http://localhost:4318"
    target = resolve_target(ExportSettings(endpoint, protocol))
    assert target.traces is not None  # an endpoint was given
    if target.protocol == GRPC:
        return ForwardTarget(GRPC, target.traces, dict(headers))
    return ForwardTarget(HTTP, target.traces.removesuffix("/v1/traces"), dict(headers))
