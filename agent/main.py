"""The node agent: capture -> LLM calls -> OTel spans and metrics, plus GPU and self-metrics.

Takes in: an `AgentConfig`. Gives out: `Agent` (start / stop, usable in-process) and
`run_agent(config)`, the `infersight agent` command's body, which runs until SIGTERM or SIGINT
and then flushes spans and metrics before returning 0.

Flow: the capture's processing thread hands each `HttpExchange` to `Agent.handle`, which parses
it (`agent.genai.registry`), names the process's pod (`agent.k8s.resolver`), applies the
namespace filter, records the span (`agent.otel.spans`; a server call served from a GPU goes
through `agent.gpu.call_energy` first, which holds it until the GPU samples covering its end
are in and adds its GPU time and energy) and the GenAI metrics
(`agent.otel.metrics`) and counts the outcome (`agent.selfmetrics`). The OTel SDK's batch
processor exports from its own thread. The GPU attributor asks the kubelet's PodResources
socket (`agent.gpu.podresources`) which container holds each GPU, and the engine monitor
(`agent.engines`) scrapes the node's inference engines on its own thread, its
`infersight.engine.*` metrics going through the agent's MeterProvider. What cannot run is said
in one line each (not root, no bcc, no kernel headers, no tracefs, no NVML, no Kubernetes, no
PodResources socket) and the rest keeps running: GPU sampling, engine metrics and self-metrics
do not need the capture.

The agent is also the node's OTLP endpoint (`agent.relay`): applications export to it on
4317/4318, it adds their Kubernetes attributes and relays everything to the collector through
a bounded buffer. With node-local pairing (`agent.pair.node`) a relayed SDK GenAI span and the
agent's client-side capture of the same call leave the node as one span (the SDK span with the
wire fields, `infersight.source=both`); captures that find no SDK span within the hold window
are exported as before.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.semconv._incubating.attributes import host_attributes, k8s_attributes
from opentelemetry.semconv.attributes import service_attributes
from opentelemetry.util.types import AttributeValue

from agent.capture.bpf_loader import discard_early
from agent.capture.exchange import HttpExchange, Role
from agent.capture.pipeline import CaptureService, CaptureStats, EventSource
from agent.config import AgentConfig, ConfigError, capture_config
from agent.genai import registry
from agent.genai.content import ContentMode
from agent.gpu.call_energy import CallEnergy, CallEnergyConfig, HeldCall
from agent.k8s.pods import (
    ApiServerPodSource,
    KubeletPodSource,
    PodListSource,
    PodSourceError,
)
from agent.k8s.resolver import WorkloadResolver
from agent.otel.clock import MonoToUnix
from agent.otel.export import ExportSettings, Telemetry
from agent.otel.metrics import GenAiMetrics
from agent.otel.spans import SpanEmitter, call_attributes, end_mono_ns
from agent.pair.node import HeldCapture, NodePairing, NodePairingSettings
from agent.relay.endpoint import forward_target
from agent.relay.enrich import Enricher
from agent.relay.peers import PodsByIp, RecordingPodSource, SocketOwners
from agent.relay.service import RelayService, RelaySettings
from agent.selfmetrics import AgentCounters, SelfMetrics

log = logging.getLogger("infersight.agent")

VERSION = "0.1.0"
_CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF = 21, 38, 39


def _effective_caps() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return None


def capture_problems() -> list[str]:
    """What keeps the eBPF capture from running here: one line per missing thing."""
    problems: list[str] = []
    caps = _effective_caps()
    if os.geteuid() != 0:
        has_bpf = caps is not None and (
            (caps >> _CAP_SYS_ADMIN) & 1 or ((caps >> _CAP_BPF) & 1 and (caps >> _CAP_PERFMON) & 1)
        )
        if not has_bpf:
            problems.append(
                "not running as root: eBPF needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"
            )
    try:
        importlib.import_module("bcc")
    except Exception as exc:  # bcc raises more than ImportError when libbcc is missing
        problems.append(
            f"bcc is not importable ({type(exc).__name__}: {exc}): install Debian's "
            "python3-bpfcc and link it into the environment (.ci/ebpf-setup.sh)"
        )
    release = os.uname().release
    if not os.path.isdir(f"/lib/modules/{release}/build"):
        problems.append(
            f"no kernel headers at /lib/modules/{release}/build: mount the host's "
            "/lib/modules and /usr/src, or install linux-headers (.ci/ebpf-setup.sh)"
        )
    if not (
        os.path.isdir("/sys/kernel/tracing/events")
        or os.path.isdir("/sys/kernel/debug/tracing/events")
    ):
        problems.append(
            "tracefs is not mounted at /sys/kernel/tracing (nor debugfs at "
            "/sys/kernel/debug): mount it, or mount the host's into the pod"
        )
    return problems


def _in_pod() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def make_pod_source(config: AgentConfig) -> tuple[PodListSource | None, str | None]:
    """The pod list source for the configured mode, or None with the reason."""
    k = config.k8s
    node = config.node_name
    mode = k.mode
    if mode == "off":
        return None, "Kubernetes attribution off (k8s.mode=off)"
    if mode == "auto":
        if k.kubeconfig:
            mode = "apiserver"
        elif k.kubelet_url:
            mode = "kubelet"
        elif _in_pod():
            mode = "apiserver"
        else:
            return None, (
                "Kubernetes attribution off: not running in a pod "
                "(no KUBERNETES_SERVICE_HOST); process names and pids are still recorded"
            )
    if not node:
        return None, "Kubernetes attribution off: no node name (set NODE_NAME)"
    try:
        if mode == "kubelet":
            url = k.kubelet_url or f"https://{node}:10250/pods"
            verify: bool | str = k.kubelet_ca_path or not k.kubelet_insecure
            return KubeletPodSource(url, token_path=Path(k.token_path), verify=verify), None
        if k.kubeconfig:
            return ApiServerPodSource.from_kubeconfig(node, k.kubeconfig), None
        return ApiServerPodSource.in_cluster(node), None
    except PodSourceError as exc:
        return None, f"Kubernetes attribution off: {exc}"
    except ImportError as exc:
        return None, f"Kubernetes attribution off: the kubernetes package is missing ({exc})"


class Agent:
    """One node agent; `start()` it, `stop()` it (safe twice; flushes)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        span_exporter: SpanExporter | None = None,
        metric_readers: Sequence[MetricReader] | None = None,
        capture_source: EventSource | None = None,
        pod_source: PodListSource | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._say = say or (
            lambda line: print(f"infersight agent: {line}", file=sys.stderr, flush=True)
        )
        self.content_mode = ContentMode(config.agent.content)
        self.node_name = config.node_name
        attrs: dict[str, Any] = {
            service_attributes.SERVICE_NAME: config.agent.service_name,
            service_attributes.SERVICE_VERSION: VERSION,
            host_attributes.HOST_NAME: os.uname().nodename,
        }
        if self.node_name:
            attrs[k8s_attributes.K8S_NODE_NAME] = self.node_name
        exporter = config.exporter
        headers = dict(h.split("=", 1) for h in exporter.headers)
        self.telemetry = Telemetry(
            ExportSettings(
                exporter.endpoint,
                exporter.protocol,
                {k.strip(): v.strip() for k, v in headers.items()},
                exporter.timeout_s,
                exporter.metric_interval_s,
            ),
            Resource.create(attrs),
            span_exporter=span_exporter,
            metric_readers=metric_readers,
        )
        self.clock = MonoToUnix(config.agent.clock_refresh_s)
        self.emitter = SpanEmitter(self.telemetry.tracer, self.clock)
        self.genai_metrics = GenAiMetrics(self.telemetry.meter)
        self.counters = AgentCounters()
        if pod_source is None:
            pod_source, reason = make_pod_source(config)
            if reason:
                self._say(reason)
        # one read of the pod list serves the resolver and the relay's IP lookups
        self.pod_list = RecordingPodSource(pod_source) if pod_source is not None else None
        self.resolver = WorkloadResolver(
            self.pod_list,
            proc_root=Path(config.k8s.proc_root),
            cgroup_root=Path(config.k8s.cgroup_root),
            ttl_s=config.k8s.cache_ttl_s,
            min_refresh_interval_s=config.k8s.min_refresh_interval_s,
        )
        self._namespaces = frozenset(config.filters.namespaces)
        self._capture_source = capture_source
        self.capture: CaptureService | None = None
        #: the node's OTLP endpoint; None when off or it could not start
        self.relay: RelayService | None = None
        #: node-local pairing of relayed SDK spans with captures; None without the relay
        self.pairing: NodePairing | None = None
        self.selfmetrics = SelfMetrics(
            self.counters,
            capture_stats=self._capture_stats,
            span_export=lambda: (self.telemetry.spans.exported, self.telemetry.spans.failed),
            resolver_stats=lambda: self.resolver.stats if pod_source is not None else None,
            relay=self._relay_readings,
            pairing_stats=lambda: self.pairing.stats() if self.pairing is not None else None,
        )
        self.selfmetrics.register(self.telemetry.meter)
        self._gpu: Any = None
        self._gpu_metrics: Any = None
        self._gpu_thread: threading.Thread | None = None
        #: the kubelet PodResources client; None without NVML or when the socket is missing
        self.pod_resources: Any = None
        #: the inference-engine monitor; None when engines.enabled is false
        self.engines: Any = None
        #: pid -> pod for GPU processes; None without NVML
        self.gpu_attributor: Any = None
        #: holds GPU-served server calls for their energy; None without NVML
        self.call_energy: CallEnergy | None = None
        self._stop_event = threading.Event()
        self._stopped = False
        self._lock = threading.Lock()
        self.problems: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> list[str]:
        """Start every part that can run; returns one line per part that cannot."""
        cfg = self.config
        if cfg.agent.metrics_port >= 0:
            try:
                port = self.selfmetrics.serve(cfg.agent.metrics_host, cfg.agent.metrics_port)
                log.info("self-metrics on http://%s:%d/metrics", cfg.agent.metrics_host, port)
            except OSError as exc:
                self._problem(
                    f"self-metrics endpoint off: cannot listen on "
                    f"{cfg.agent.metrics_host}:{cfg.agent.metrics_port} ({exc})"
                )
        if self.resolver.source is not None:
            self.resolver.refresh()  # warm the cache; a failure is logged and retried on use
        if cfg.gpu.enabled:
            self._start_gpu()
        if cfg.engines.enabled:
            self._start_engines()
        else:
            self._problem("inference-engine metrics off (engines.enabled=false)")
        if cfg.relay.mode == "on" or (cfg.relay.mode == "auto" and _in_pod()):
            self._start_relay()
        else:
            why = "not running in a pod" if cfg.relay.mode == "auto" else "relay.mode=off"
            log.info("OTLP relay off (%s)", why)
        if cfg.agent.capture:
            self._start_capture()
        else:
            self._problem("eBPF capture off (agent.capture=false)")
        if self.pairing is not None:
            self.pairing.capture_running = self.capture is not None
        return list(self.problems)

    def _problem(self, line: str) -> None:
        self.problems.append(line)
        self._say(line)

    def _start_capture(self) -> None:
        try:
            self._start_capture_service()
        finally:
            if self.capture is None:
                discard_early()  # programs loaded at process start that nothing will use

    def _start_capture_service(self) -> None:
        if self._capture_source is None:
            missing = capture_problems()
            if missing:
                for line in missing:
                    self._problem(f"eBPF capture off: {line}")
                return
        try:
            ccfg = capture_config(self.config)
        except ConfigError as exc:
            self._problem(f"eBPF capture off: {exc}")
            return
        try:
            service = CaptureService(ccfg, sink=self.handle, source=self._capture_source)
            service.start()
        except Exception as exc:
            self._problem(f"eBPF capture off: it failed to start ({type(exc).__name__}: {exc})")
            return
        self.capture = service
        log.info("eBPF capture on (content %s)", self.content_mode.value)

    def _start_relay(self) -> None:
        r, e = self.config.relay, self.config.exporter
        own_endpoint = r.endpoint is not None
        headers = dict(h.split("=", 1) for h in (r.headers or e.headers))
        target = forward_target(
            r.endpoint or e.endpoint,
            r.protocol if own_endpoint or r.protocol != "auto" else e.protocol,
            {k.strip(): v.strip() for k, v in headers.items()},
            os.environ,
        )
        if target.loops_back({p for p in (r.grpc_port, r.http_port) if p > 0}):
            self._problem(
                f"OTLP relay off: it would forward to itself ({target.url}); set "
                "exporter.endpoint or relay.endpoint to the collector"
            )
            return
        p = self.config.pairing
        if p.enabled:
            self.pairing = NodePairing(
                NodePairingSettings(
                    hold_s=p.hold_s,
                    settle_s=p.settle_s,
                    hold_captures=p.hold_captures,
                    max_held=p.max_held,
                    min_heuristic_confidence=p.min_heuristic_confidence,
                ),
                self._forward_paired,
                self._emit_unpaired_capture,
            )
        pods_by_ip = (
            PodsByIp(
                self.pod_list,
                self.resolver.refresh,
                min_refresh_interval_s=self.config.k8s.min_refresh_interval_s,
            )
            if self.pod_list is not None
            else None
        )
        enricher = Enricher(
            self.node_name, SocketOwners(Path(self.config.k8s.proc_root)), self.resolver, pods_by_ip
        )
        relay = RelayService(
            RelaySettings(
                host=r.host,
                grpc_port=r.grpc_port,
                http_port=r.http_port,
                timeout_s=r.timeout_s,
                buffer_bytes=r.buffer_bytes,
                max_body_bytes=r.max_body_bytes,
                retry_after_s=r.retry_after_s,
                max_elapsed_s=r.max_elapsed_s,
                senders=r.senders,
                drain_timeout_s=r.drain_timeout_s,
            ),
            target,
            enricher,
            pairing=self.pairing,
        )
        try:
            relay.start()
        except Exception as exc:
            self.pairing = None
            self._problem(f"OTLP relay off: {exc} (change relay.grpc_port / relay.http_port)")
            return
        self.relay = relay
        if self.pairing is not None:
            self.pairing.start()
        log.info(
            "OTLP relay on %s (gRPC %s, HTTP %s) to %s",
            r.host,
            relay.grpc_port if relay.grpc_port is not None else "off",
            relay.http_port if relay.http_port is not None else "off",
            target.url,
        )

    def _forward_paired(self, request: Any, spans: int) -> None:
        if self.relay is not None:
            self.relay.intake.forward_released(request, spans)

    def _emit_unpaired_capture(self, held: HeldCapture) -> None:
        call, exchange, workload = held.payload
        self.emitter.emit(call, exchange, workload)

    def _relay_readings(self) -> Any:
        relay = self.relay
        if relay is None:
            return None
        return relay.stats.snapshot(), relay.buffer.bytes, relay.buffer.requests

    def _start_gpu(self) -> None:
        from agent.gpu.attribution import GpuAttributor, PodRef
        from agent.gpu.metrics import GpuMetrics
        from agent.gpu.nvml_sampler import GpuSamplerConfig, NvmlSampler

        def pod_ref(container_id: str) -> PodRef | None:
            info = self.resolver.pod_for_container(container_id)
            if info is None:
                return None
            return PodRef(info.namespace, info.name, info.container_name)

        sampler = NvmlSampler(
            GpuSamplerConfig(
                period_s=self.config.gpu.period_s, process_period_s=self.config.gpu.process_period_s
            ),
            attributor=lambda sample: attributor.apply(sample),
        )
        if not sampler.open():
            self._problem(f"GPU telemetry off: {sampler.unavailable_reason}")
            return
        self.pod_resources = self._open_pod_resources()
        attributor = GpuAttributor(
            pod_ref if self.resolver.source is not None else None,
            self.pod_resources,
            proc_root=Path(self.config.k8s.proc_root),
        )
        self.gpu_attributor = attributor
        self._gpu = sampler
        self._gpu_metrics = GpuMetrics(
            self.telemetry.meter, node_name=self.node_name, dropped=lambda: sampler.dropped
        )
        self.call_energy = CallEnergy(
            CallEnergyConfig(period_s=self.config.gpu.period_s),
            self._emit_held,
            self.clock.to_unix_ns,
        )
        self.call_energy.register(self.telemetry.meter)
        sampler.start()
        self._gpu_thread = threading.Thread(
            target=self._pump_gpu, name="infersight-gpu-pump", daemon=True
        )
        self._gpu_thread.start()

    def _open_pod_resources(self) -> Any:
        """The kubelet PodResources client, or None (said in one line) when it cannot be used."""
        from agent.gpu.podresources import KubeletPodResources

        path = self.config.gpu.pod_resources_socket
        if not path:
            return None
        source = KubeletPodResources(path)
        reason = source.unavailable_reason()
        if reason is not None:
            self._problem(f"GPU device attribution through PodResources off: {reason}")
            source.close()
            return None
        return source

    def _start_engines(self) -> None:
        from agent.engines.metrics import EngineMetrics
        from agent.engines.monitor import EngineMonitor, EngineMonitorConfig

        ecfg = self.config.engines
        try:
            monitor = EngineMonitor(
                EngineMonitorConfig(
                    scrape_period_s=ecfg.interval_s,
                    scan_local=ecfg.scan_local,
                    proc_root=Path(self.config.k8s.proc_root),
                ),
                pod_source=self.resolver.source,
            )
        except Exception as exc:
            self._problem(f"inference-engine metrics off: {type(exc).__name__}: {exc}")
            return
        EngineMetrics(self.telemetry.meter, monitor, node_name=self.node_name)
        monitor.start()
        self.engines = monitor

    def _pump_gpu(self) -> None:
        # often enough that a held call waits little past the sample covering its end
        period_s = min(self.config.gpu.period_s, 0.25)
        while not self._stop_event.wait(period_s):
            self._take_gpu_records()
        self._take_gpu_records()

    def _take_gpu_records(self) -> None:
        records = self._gpu.drain()
        self._gpu_metrics.record_all(records)
        if self.call_energy is not None:
            self.call_energy.observe(records)
            self.call_energy.release_due()

    def _emit_held(self, held: HeldCall, gpu_attrs: Mapping[str, AttributeValue] | None) -> None:
        self.emitter.emit(held.call, held.exchange, held.workload, gpu_attrs)

    def _capture_stats(self) -> CaptureStats | None:
        service = self.capture
        return service.stats() if service is not None else None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop capturing (finishing what is in flight), flush and close everything."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop_event.set()
        if self.relay is not None:
            self.relay.stop_receiving()  # no new exports; those being read are queued
        if self.capture is not None:
            self.capture.stop()  # delivers the exchanges still open through handle()
        if self.pairing is not None:
            self.pairing.stop()  # pairs what it can, releases the rest
        if self.relay is not None:
            self.relay.stop()  # delivers what is buffered within relay.drain_timeout_s
        if self._gpu is not None:
            self._gpu.stop()
        if self._gpu_thread is not None:
            self._gpu_thread.join(5)
        if self.engines is not None:
            self.engines.stop()
        if self.pod_resources is not None:
            self.pod_resources.close()
        if self.call_energy is not None:
            self.call_energy.flush()
        self.telemetry.shutdown(timeout_s)
        self.selfmetrics.stop()

    # -- per exchange ------------------------------------------------------------------------

    def handle(self, exchange: HttpExchange) -> None:
        """Turn one exchange into a span and metric points, or count why not."""
        # Only this thread parses, so a change of the registry's failure counts is this
        # exchange's doing.
        failures_before = Counter(registry.parse_failures)
        call = registry.parse_exchange(exchange, self.content_mode)
        if call is None:
            failed = registry.parse_failures - failures_before
            if failed:
                self.counters.exchange("parse_error")
                for parser in failed:
                    self.counters.parse_failure(parser)
            else:
                self.counters.exchange("not_llm")
            return
        conn = exchange.conn
        workload = self.resolver.resolve(conn.pid, conn.comm, conn.cgroup_id)
        if self._namespaces and workload.namespace not in self._namespaces:
            self.counters.exchange("filtered")
            return
        held = self.call_energy is not None and self.call_energy.offer(call, exchange, workload)
        if not held and conn.role is Role.CLIENT and self.pairing is not None:
            held = self._offer_for_pairing(call, exchange, workload)
        if not held:
            self.emitter.emit(call, exchange, workload)
        self.genai_metrics.record(call, conn.role, workload)
        self.counters.exchange("llm")
        self.counters.call(
            "server" if conn.role is Role.SERVER else "client", truncated=call.truncated
        )

    def _offer_for_pairing(self, call: Any, exchange: HttpExchange, workload: Any) -> bool:
        pairing = self.pairing
        if pairing is None or not pairing.holds_captures():
            return False
        offset_ns = self.clock.offset_ns()
        return pairing.offer_capture(
            call,
            call_attributes(call, exchange, workload),
            (call, exchange, workload),
            start_unix_ns=exchange.start_mono_ns + offset_ns,
            end_unix_ns=end_mono_ns(exchange) + offset_ns,
            pid=exchange.conn.pid,
            pod=workload.pod,
        )

    # -- running as a command ----------------------------------------------------------------

    def wait(self) -> None:
        """Block until `request_stop()` (the signal handlers call it)."""
        self._stop_event.wait()

    def request_stop(self) -> None:
        self._stop_event.set()


def run_agent(config: AgentConfig) -> int:
    """Run the agent until SIGTERM/SIGINT, then flush; returns the exit code."""
    logging.basicConfig(
        level=config.agent.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    agent = Agent(config)
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop_requested.set()
        agent.request_stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent.start()
        log.info(
            "agent running on node %s, exporting to %s",
            agent.node_name,
            config.exporter.endpoint or "the OTEL_EXPORTER_OTLP_* endpoint",
        )
        print("infersight agent: running", file=sys.stderr, flush=True)
        while not stop_requested.wait(1.0):
            pass
    finally:
        agent.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("infersight agent: stopped, spans and metrics flushed", file=sys.stderr, flush=True)
    return 0
