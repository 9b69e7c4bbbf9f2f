"""The node agent's settings: defaults, a YAML file, `INFERSIGHT_<SECTION>_<KEY>`, then flags.

Takes in: an optional YAML file path, the environment, and overrides from the command line
(`{"section": {"key": value}}`). Gives out: a validated, frozen `AgentConfig`. Any invalid value
raises `ConfigError` naming the key (`exporter.protocol: must be one of ...`). Lists come from
YAML sequences or, in the environment, comma-separated text. `capture:` accepts every setting of
`agent.capture.config.CaptureConfig` (its own checks apply); the capture filters are set under
`filters:`. Standard `OTEL_*` exporter variables are read by the exporters, not here.
Reads only the file it is given; starts nothing.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from agent.capture.config import CaptureConfig

CONTENT_MODES = ("off", "metadata", "full")
PROTOCOLS = ("auto", "grpc", "http/protobuf")
K8S_MODES = ("auto", "apiserver", "kubelet", "off")
HOLD_CAPTURES = ("auto", "always", "never")
RELAY_MODES = ("auto", "on", "off")
LOG_LEVELS = ("debug", "info", "warning", "error")
_FILTER_KEYS = {"filter_pids", "filter_ports", "filter_cgroup_ids"}


class ConfigError(ValueError):
    """A setting is invalid; the message starts with the key."""


@dataclass(frozen=True)
class AgentSection:
    """General settings."""

    content: str = "off"
    """Prompt/response content on spans: off, metadata (shape and sizes, no text) or full
    (redacted text)."""
    node_name: str | None = None
    """This node's name; default: $NODE_NAME (set from the downward API), else the host name."""
    service_name: str = "infersight-agent"
    """`service.name` of the agent's resource."""
    metrics_host: str = "0.0.0.0"
    """Address of the self-metrics endpoint."""
    metrics_port: int = 9464
    """Port of the Prometheus `/metrics` endpoint (0: any free port, -1: off)."""
    capture: bool = True
    """Run the eBPF capture (needs root or CAP_BPF+CAP_PERFMON, bcc and kernel headers)."""
    clock_refresh_s: float = 10.0
    """How often the monotonic-to-wall clock offset is measured again."""
    log_level: str = "info"
    """debug, info, warning or error."""


@dataclass(frozen=True)
class ExporterSection:
    """Where spans and metrics go (standard OTEL_EXPORTER_OTLP_* variables apply too)."""

    endpoint: str | None = None
    """OTLP endpoint URL; None: OTEL_EXPORTER_OTLP_ENDPOINT or the SDK default."""
    protocol: str = "auto"
    """auto (grpc:// or port 4317 means gRPC, else HTTP), grpc, or http/protobuf."""
    headers: tuple[str, ...] = ()
    """Extra request headers as `name=value`."""
    timeout_s: float | None = None
    """Per-export timeout; None: the SDK default (10 s)."""
    metric_interval_s: float | None = 15.0
    """Seconds between metric exports; None: OTEL_METRIC_EXPORT_INTERVAL or 60 s."""


@dataclass(frozen=True)
class FiltersSection:
    """What to capture (empty: everything)."""

    pids: tuple[int, ...] = ()
    """Only these processes."""
    ports: tuple[int, ...] = ()
    """Only connections whose service port is one of these."""
    cgroups: tuple[str, ...] = ()
    """Only processes in these cgroups (v2 paths below the cgroup mount, or numeric ids)."""
    namespaces: tuple[str, ...] = ()
    """Only calls of pods in these Kubernetes namespaces (applied after attribution)."""


@dataclass(frozen=True)
class K8sSection:
    """How processes are tied to pods."""

    mode: str = "auto"
    """auto (the API server when running in a pod, else off), apiserver, kubelet or off."""
    kubelet_url: str | None = None
    """Default https://$NODE_NAME:10250/pods (or the read-only http://...:10255/pods)."""
    kubelet_insecure: bool = True
    """Skip verifying the kubelet's serving certificate (often self-signed)."""
    kubelet_ca_path: str | None = None
    """CA bundle for the kubelet's certificate (implies verification)."""
    token_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    """Bearer token for the kubelet."""
    kubeconfig: str | None = None
    """Use this kubeconfig for the API server instead of the in-cluster service account."""
    cache_ttl_s: float = 30.0
    """Pod list age after which it is read again."""
    min_refresh_interval_s: float = 2.0
    """Least time between two reads triggered by unknown containers."""
    proc_root: str = "/proc"
    """The host's procfs (the agent runs with hostPID)."""
    cgroup_root: str = "/sys/fs/cgroup"
    """The host's cgroup v2 mount."""


@dataclass(frozen=True)
class GpuSection:
    """NVIDIA GPU telemetry."""

    enabled: bool = True
    """Sample GPUs through NVML when a driver is there."""
    period_s: float = 1.0
    """Seconds between device samples."""
    process_period_s: float = 5.0
    """Seconds between per-process samples."""
    pod_resources_socket: str | None = "/var/lib/kubelet/pod-resources/kubelet.sock"
    """The kubelet's PodResources gRPC socket, which names the containers each GPU is assigned
    to (used where a GPU process's own cgroup does not name its pod); empty: not used."""


@dataclass(frozen=True)
class EnginesSection:
    """Saturation of the inference engines (vLLM, TGI, SGLang) found on this node."""

    enabled: bool = True
    """Find the engines' Prometheus endpoints and export `infersight.engine.*` metrics."""
    interval_s: float = 5.0
    """Seconds between scrapes of the engines found."""
    scan_local: bool = True
    """Also probe listening sockets of engine-looking processes (the node's with hostNetwork)."""


@dataclass(frozen=True)
class RelaySection:
    """The node's OTLP endpoint: applications on the node export here, the agent adds their
    Kubernetes attributes and relays everything to the collector."""

    mode: str = "auto"
    """on (receive OTLP from the node's applications and relay it), off, or auto (on when
    running in a pod, i.e. as the DaemonSet; the port flags turn it on)."""
    host: str = "0.0.0.0"
    """Address the OTLP receivers listen on."""
    grpc_port: int = 4317
    """OTLP/gRPC port (0: any free port, -1: off)."""
    http_port: int = 4318
    """OTLP/HTTP port, protobuf and JSON (0: any free port, -1: off)."""
    endpoint: str | None = None
    """Where to relay; None: `exporter.endpoint`, else OTEL_EXPORTER_OTLP_ENDPOINT, else
    localhost (4317 for gRPC, 4318 for HTTP)."""
    protocol: str = "auto"
    """auto (grpc:// or port 4317 means gRPC, else HTTP; with no endpoint of its own, the
    exporter's protocol), grpc or http/protobuf."""
    headers: tuple[str, ...] = ()
    """Extra request headers as `name=value`; empty: `exporter.headers`."""
    timeout_s: float = 10.0
    """Time limit of one attempt to deliver one request."""
    buffer_bytes: int = 64 * 1024 * 1024
    """Most bytes of accepted requests waiting for the collector; past it the receivers answer
    503 / UNAVAILABLE with Retry-After (the sender's exporter retries)."""
    max_body_bytes: int = 20 * 1024 * 1024
    """Largest request accepted (after decompression); larger: 413 / RESOURCE_EXHAUSTED."""
    retry_after_s: int = 2
    """Delay suggested to senders when the buffer is full."""
    max_elapsed_s: float = 300.0
    """How long one request is retried before it counts as failed."""
    senders: int = 2
    """Requests delivered at once."""
    drain_timeout_s: float = 10.0
    """At stop, how long the buffered requests may take to reach the collector."""


@dataclass(frozen=True)
class PairingSection:
    """Node-local pairing: an SDK GenAI span relayed through the agent and the agent's own
    capture of the same call become one span."""

    enabled: bool = True
    """Pair relayed SDK spans with client-side captures (needs the relay and the capture)."""
    hold_s: float = 8.0
    """Longest wait of either side for its partner; then it goes on unpaired (the SDK's
    batch processor sends spans up to 5 s after they end)."""
    settle_s: float = 1.0
    """Records this young are paired only by trace context or ids, not by the heuristic."""
    hold_captures: str = "auto"
    """auto (hold client captures while SDK GenAI spans came through the relay in the last
    10 minutes), always, never."""
    max_held: int = 10000
    """Most records held per side; more go on unpaired at once (counted)."""
    min_heuristic_confidence: float = 0.3
    """Heuristic pairs below this confidence are not made."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent is configured with."""

    agent: AgentSection = field(default_factory=AgentSection)
    exporter: ExporterSection = field(default_factory=ExporterSection)
    filters: FiltersSection = field(default_factory=FiltersSection)
    k8s: K8sSection = field(default_factory=K8sSection)
    gpu: GpuSection = field(default_factory=GpuSection)
    engines: EnginesSection = field(default_factory=EnginesSection)
    relay: RelaySection = field(default_factory=RelaySection)
    pairing: PairingSection = field(default_factory=PairingSection)
    capture: CaptureConfig = field(default_factory=CaptureConfig)

    @property
    def node_name(self) -> str | None:
        return self.agent.node_name or os.environ.get("NODE_NAME") or os.uname().nodename


_SECTIONS: dict[str, type[Any]] = {
    "agent": AgentSection,
    "exporter": ExporterSection,
    "filters": FiltersSection,
    "k8s": K8sSection,
    "gpu": GpuSection,
    "engines": EnginesSection,
    "relay": RelaySection,
    "pairing": PairingSection,
    "capture": CaptureConfig,
}


def _coerce(key: str, hint: Any, value: Any, from_text: bool) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        blank = value is None or (from_text and isinstance(value, str) and not value.strip())
        if blank and type(None) in get_args(hint):
            return None
        return _coerce(key, args[0], value, from_text)
    if origin in (tuple, frozenset):
        item = get_args(hint)[0]
        if from_text and isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if isinstance(value, str | int | float):
            value = [value]
        if not isinstance(value, list | tuple | set | frozenset):
            raise ConfigError(f"{key}: expected a list")
        items = [_coerce(key, item, v, from_text) for v in value]
        return tuple(items) if origin is tuple else frozenset(items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, bool):
            # YAML 1.1 reads a bare `off` / `on` as a boolean
            return "on" if value else "off"
        if isinstance(value, str | int | float):
            return str(value)
        raise ConfigError(f"{key}: expected text, got {value!r}")
    raise ConfigError(f"{key}: unsupported setting type")


def _build(section: str, cls: type[Any], values: Mapping[str, Any], text_keys: set[str]) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names or (section == "capture" and key in _FILTER_KEYS):
            raise ConfigError(f"{section}.{key}: unknown setting")
        kwargs[key] = _coerce(f"{section}.{key}", hints[key], value, key in text_keys)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}: {exc}") from exc


def _env_values(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith("INFERSIGHT_"):
            continue
        rest = name[len("INFERSIGHT_") :].lower()
        for section in _SECTIONS:
            if rest.startswith(section + "_"):
                out.setdefault(section, {})[rest[len(section) + 1 :]] = value
                break
    return out


def _check(cfg: AgentConfig) -> None:
    def one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise ConfigError(f"{key}: must be one of {', '.join(allowed)} (got {value!r})")

    one_of("agent.content", cfg.agent.content, CONTENT_MODES)
    one_of("agent.log_level", cfg.agent.log_level, LOG_LEVELS)
    one_of("exporter.protocol", cfg.exporter.protocol, PROTOCOLS)
    one_of("k8s.mode", cfg.k8s.mode, K8S_MODES)
    if not -1 <= cfg.agent.metrics_port < 65536:
        raise ConfigError("agent.metrics_port: must be a port number, 0 (any) or -1 (off)")
    if cfg.agent.clock_refresh_s <= 0:
        raise ConfigError("agent.clock_refresh_s: must be positive")
    for header in cfg.exporter.headers:
        if "=" not in header or not header.split("=", 1)[0].strip():
            raise ConfigError(f"exporter.headers: {header!r} is not name=value")
    for key, value in (
        ("exporter.timeout_s", cfg.exporter.timeout_s),
        ("exporter.metric_interval_s", cfg.exporter.metric_interval_s),
    ):
        if value is not None and value <= 0:
            raise ConfigError(f"{key}: must be positive")
    for pid in cfg.filters.pids:
        if pid <= 0:
            raise ConfigError("filters.pids: process ids are positive")
    for port in cfg.filters.ports:
        if not 0 < port < 65536:
            raise ConfigError(f"filters.ports: {port} is not a TCP port")
    for key, value in (
        ("k8s.cache_ttl_s", cfg.k8s.cache_ttl_s),
        ("k8s.min_refresh_interval_s", cfg.k8s.min_refresh_interval_s),
        ("gpu.period_s", cfg.gpu.period_s),
        ("gpu.process_period_s", cfg.gpu.process_period_s),
        ("engines.interval_s", cfg.engines.interval_s),
    ):
        if value <= 0:
            raise ConfigError(f"{key}: must be positive")
    _check_relay(cfg, one_of)
    try:
        cfg.capture.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _check_relay(cfg: AgentConfig, one_of: Callable[[str, str, tuple[str, ...]], None]) -> None:
    r, p = cfg.relay, cfg.pairing
    one_of("relay.mode", r.mode, RELAY_MODES)
    one_of("relay.protocol", r.protocol, PROTOCOLS)
    one_of("pairing.hold_captures", p.hold_captures, HOLD_CAPTURES)
    for key, port in (("relay.grpc_port", r.grpc_port), ("relay.http_port", r.http_port)):
        if not -1 <= port < 65536:
            raise ConfigError(f"{key}: must be a port number, 0 (any) or -1 (off)")
    for header in r.headers:
        if "=" not in header or not header.split("=", 1)[0].strip():
            raise ConfigError(f"relay.headers: {header!r} is not name=value")
    for key, value in (
        ("relay.timeout_s", r.timeout_s),
        ("relay.max_elapsed_s", r.max_elapsed_s),
        ("relay.drain_timeout_s", r.drain_timeout_s),
        ("pairing.hold_s", p.hold_s),
    ):
        if value <= 0:
            raise ConfigError(f"{key}: must be positive")
    if r.max_body_bytes < 1024:
        raise ConfigError("relay.max_body_bytes: must be at least 1024")
    if r.buffer_bytes < r.max_body_bytes:
        raise ConfigError("relay.buffer_bytes: must be at least relay.max_body_bytes")
    if r.retry_after_s < 1:
        raise ConfigError("relay.retry_after_s: must be at least 1")
    if not 1 <= r.senders <= 64:
        raise ConfigError("relay.senders: must be between 1 and 64")
    if not 0 <= p.settle_s < p.hold_s:
        raise ConfigError("pairing.settle_s: must be at least 0 and less than pairing.hold_s")
    if p.max_held < 0:
        raise ConfigError("pairing.max_held: must not be negative")
    if not 0 <= p.min_heuristic_confidence <= 1:
        raise ConfigError("pairing.min_heuristic_confidence: must be between 0 and 1")


def load_config(
    path: Path | str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Defaults < YAML file < INFERSIGHT_* environment < `overrides`; validated."""
    merged: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    text_keys: dict[str, set[str]] = {name: set() for name in _SECTIONS}
    if path is not None:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: not valid YAML ({exc})") from exc
        if not isinstance(doc, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping")
        for section, values in doc.items():
            if section not in _SECTIONS:
                raise ConfigError(f"{section}: unknown section")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: must be a mapping")
            merged[section].update(values)
    for section, values in _env_values(os.environ if environ is None else environ).items():
        merged[section].update(values)
        text_keys[section].update(values)
    for section, values in (overrides or {}).items():
        if section not in _SECTIONS:
            raise ConfigError(f"{section}: unknown section")
        for key, value in values.items():
            if value is not None:
                merged[section][key] = value
                text_keys[section].discard(key)
    built = {
        name: _build(name, cls, merged[name], text_keys[name]) for name, cls in _SECTIONS.items()
    }
    cfg = AgentConfig(**built)
    _check(cfg)
    return cfg


def resolve_cgroup_ids(cgroups: tuple[str, ...], cgroup_root: str) -> frozenset[int]:
    """cgroup v2 ids (directory inode numbers) of the given paths or numeric ids."""
    ids: set[int] = set()
    for item in cgroups:
        if item.isdigit():
            ids.add(int(item))
            continue
        path = Path(item) if item.startswith(cgroup_root) else Path(cgroup_root) / item.lstrip("/")
        try:
            ids.add(os.stat(path).st_ino)
        except OSError as exc:
            raise ConfigError(f"filters.cgroups: {item}: {exc.strerror or exc}") from exc
    return frozenset(ids)


def capture_config(cfg: AgentConfig) -> CaptureConfig:
    """The capture's settings with the filters applied."""
    f = cfg.filters
    return dataclasses.replace(
        cfg.capture,
        filter_pids=frozenset(f.pids) if f.pids else None,
        filter_ports=frozenset(f.ports) if f.ports else None,
        filter_cgroup_ids=resolve_cgroup_ids(f.cgroups, cfg.k8s.cgroup_root) if f.cgroups else None,
        proc_root=cfg.k8s.proc_root if cfg.capture.proc_root == "/proc" else cfg.capture.proc_root,
    ).validate()
