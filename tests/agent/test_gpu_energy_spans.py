"""GPU time and energy on server spans: fake NVML -> real sampler -> hold -> real span emitter.

The fake NVML library plays a GPU whose power and utilization follow `GroundTruth` (a known
physics: idle power plus joules per token), with the serving process in its compute-process
list. Server calls with known timings and token counts go through the real OpenAI parser, the
hold in `agent.gpu.call_energy` and the real `SpanEmitter` into an in-memory span exporter; the
span attributes must match the ground truth within 5%. Scenario time is driven by the test, and
the monotonic clock of the exchanges maps onto the sampler's wall clock exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from agent.capture.exchange import HttpExchange, Role
from agent.config import load_config
from agent.genai import registry
from agent.genai.content import ContentMode
from agent.gpu.call_energy import (
    GPU_ENERGY_J,
    GPU_NAME,
    GPU_SECONDS,
    GPU_UUIDS,
    CallEnergy,
    CallEnergyConfig,
    HeldCall,
)
from agent.gpu.nvml_sampler import GpuSamplerConfig, NvmlSampler
from agent.main import Agent
from agent.otel.clock import MonoToUnix
from agent.otel.spans import SpanEmitter
from tests.agent.exchanges import START_MONO_NS, chat_exchange
from tests.gpu.conftest import (  # noqa: F401  (fixtures)
    BASE_UNIX_NS,
    fake_nvml,
    fake_nvml_lib,
    make_sampler,
    use_scenario,
)
from tests.gpu.fake_nvml.build import FakeNvml
from tests.gpu.fake_nvml.scenario import FakeDevice, FakeProc, Scenario
from tests.gpu.groundtruth import NS, GroundTruth, Req

GPU_UUID = "GPU-0e1f2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7"
GPU_NAME_H100 = "NVIDIA H100 80GB HBM3"
GPU_PID = 31337
CPU_PID = 4242
PERIOD_S = 0.1
PHASE_S = 0.0371
M0 = START_MONO_NS  # scenario time 0 on the monotonic clock of the exchanges


def server_exchange(req: Req, pid: int = GPU_PID, role: Role = Role.SERVER) -> HttpExchange:
    """A chat call whose wire times and usage are the request's."""
    ex = chat_exchange(role=role, pid=pid)
    start = M0 + round(req.start_s * NS)
    end = M0 + round(req.end_s * NS)
    ex.start_mono_ns = start
    ex.request_end_mono_ns = start + 1_000_000
    ex.first_byte_mono_ns = end - 1_000_000
    ex.end_mono_ns = end
    body = json.loads(ex.response_body)
    prompt = req.tokens // 4
    body["usage"] = {
        "prompt_tokens": prompt,
        "completion_tokens": req.tokens - prompt,
        "total_tokens": req.tokens,
    }
    ex.response_body = json.dumps(body).encode()
    return ex


@dataclass
class Rig:
    """The sampler, the hold and the emitter, run on scenario time."""

    fake: FakeNvml
    sampler: NvmlSampler
    hold: CallEnergy
    exporter: InMemorySpanExporter
    emitter: SpanEmitter
    emitted_at: dict[str, float] = field(default_factory=dict)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def by_request(self) -> dict[str, ReadableSpan]:
        """Server spans keyed by their request's call id (carried in the output tokens)."""
        return {str(s.attributes["test.call"]): s for s in self.spans() if s.attributes}

    def deliver(self, req: Req, pid: int = GPU_PID, role: Role = Role.SERVER) -> bool:
        """Hand one finished call over as the agent does; True when it was held."""
        ex = server_exchange(req, pid, role)
        call = registry.parse_exchange(ex, ContentMode.OFF)
        assert call is not None
        held = self.hold.offer(call, ex, None)
        if not held:
            self.emitter.emit(call, ex, None, {"test.call": req.call_id})
        return held

    def run(self, reqs: list[Req], until_s: float, *, sample_until_s: float | None = None) -> None:
        """Tick the sampler every period; each call is delivered 2 ms after its end."""
        pending = sorted(reqs, key=lambda r: r.end_s)
        t = PHASE_S
        while t <= until_s:
            while pending and pending[0].end_s + 0.002 <= t:
                self.deliver(pending.pop(0))
            self.fake.set_time(t)
            if sample_until_s is None or t <= sample_until_s:
                self.sampler.sample_once()
            self.hold.observe(self.sampler.drain())
            self.hold.release_due()
            t += PERIOD_S


def gpu_for(gt: GroundTruth) -> FakeDevice:
    gpu = FakeDevice(GPU_UUID, name=GPU_NAME_H100, energy_start_mj=41_000_000)
    for seg in gt.segments():
        gpu.at(seg.start_s, "power_mw", round(seg.power_w * 1000))
        gpu.at(seg.start_s, "gpu_util", round(seg.util * 100))
    gpu.procs.append(FakeProc(GPU_PID))
    return gpu


@pytest.fixture
def rig_for(
    use_scenario: Callable[[Scenario], Path],  # noqa: F811 (the imported fixture)
    make_sampler: Callable[..., NvmlSampler],  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
) -> Callable[..., Rig]:
    def build(gt: GroundTruth, **hold_config: object) -> Rig:
        use_scenario(Scenario([gpu_for(gt)]))
        sampler = make_sampler(GpuSamplerConfig(period_s=PERIOD_S, process_period_s=1.0))
        assert sampler.open()
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=ALWAYS_ON)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        # wall = mono + (BASE_UNIX_NS - M0), exactly: the sampler's clock is BASE + scenario time
        clock = MonoToUnix(wall_ns=lambda: BASE_UNIX_NS, mono_ns=lambda: M0)
        emitter = SpanEmitter(provider.get_tracer("test"), clock)
        rig: Rig

        def emit(held: HeldCall, attrs: Mapping[str, AttributeValue] | None) -> None:
            extra = dict(attrs or {})
            tokens = (held.call.input_tokens or 0) + (held.call.output_tokens or 0)
            extra["test.call"] = ids_by_tokens[tokens]
            rig.emitted_at[ids_by_tokens[tokens]] = fake_nvml.time_s()
            emitter.emit(held.call, held.exchange, held.workload, extra)

        config = CallEnergyConfig(period_s=PERIOD_S, margin_s=0.05, **hold_config)  # type: ignore[arg-type]
        hold = CallEnergy(config, emit, clock.to_unix_ns, clock_mono_s=fake_nvml.time_s)
        ids_by_tokens = {r.tokens: r.call_id for r in gt.reqs}
        rig = Rig(fake_nvml, sampler, hold, exporter, emitter)
        return rig

    return build


def assert_matches_truth(span: ReadableSpan, true_j: float, true_s: float) -> None:
    attrs = span.attributes
    assert attrs is not None
    assert span.kind is SpanKind.SERVER
    assert attrs[GPU_ENERGY_J] == pytest.approx(true_j, rel=0.05)
    assert attrs[GPU_SECONDS] == pytest.approx(true_s, rel=0.05)
    assert list(attrs[GPU_UUIDS]) == [GPU_UUID]  # type: ignore[arg-type]
    assert attrs[GPU_NAME] == GPU_NAME_H100


def test_one_call_alone(rig_for: Callable[..., Rig]) -> None:
    solo = Req("solo", 4.0, 9.3, 1800)
    gt = GroundTruth([solo], t_end_s=14.0)
    rig = rig_for(gt)
    rig.run([solo], until_s=12.0)
    spans = rig.by_request()
    true_j, true_s = gt.truth()["solo"]
    assert_matches_truth(spans["solo"], true_j, true_s)
    # held no longer than the sample covering its end (the next tick), well inside the bound
    assert 9.3 < rig.emitted_at["solo"] <= 9.3 + PERIOD_S + 1e-6
    assert rig.hold.counts == {"attributed": 1, "unattributed": 0, "overflow": 0}


def test_two_overlapping_calls_on_one_gpu(rig_for: Callable[..., Rig]) -> None:
    """Both finish within one sample period, so each is attributed against the other."""
    a, b = Req("a", 2.0, 8.0, 6000), Req("b", 4.5, 8.03, 900)
    gt = GroundTruth([a, b], t_end_s=12.0)
    rig = rig_for(gt)
    rig.run([a, b], until_s=10.0)
    spans = rig.by_request()
    truth = gt.truth()
    for req in (a, b):
        assert_matches_truth(spans[req.call_id], *truth[req.call_id])
    # splitting by time instead of tokens would give b several times its truth
    assert spans["b"].attributes is not None
    assert spans["a"].attributes is not None
    assert float(spans["b"].attributes[GPU_ENERGY_J]) < 0.3 * float(  # type: ignore[arg-type]
        spans["a"].attributes[GPU_ENERGY_J]  # type: ignore[arg-type]
    )


def test_a_later_call_is_attributed_against_one_already_released(
    rig_for: Callable[..., Rig],
) -> None:
    first, later = Req("first", 2.0, 6.0, 2400), Req("later", 4.0, 9.0, 3000)
    gt = GroundTruth([first, later], t_end_s=12.0)
    rig = rig_for(gt)
    rig.run([first, later], until_s=10.0)
    spans = rig.by_request()
    assert_matches_truth(spans["later"], *gt.truth()["later"])
    assert rig.hold.counts["attributed"] == 2


def test_non_gpu_process_and_client_calls_are_not_held(rig_for: Callable[..., Rig]) -> None:
    solo = Req("solo", 3.0, 5.0, 1000)
    gt = GroundTruth([solo], t_end_s=8.0)
    rig = rig_for(gt)
    rig.run([], until_s=5.5)  # the sampler has listed the GPU's processes by now
    assert not rig.deliver(Req("cpu-server", 3.0, 5.0, 500), pid=CPU_PID)
    assert not rig.deliver(Req("gpu-client", 3.0, 5.0, 400), pid=GPU_PID, role=Role.CLIENT)
    assert rig.hold.held() == 0
    spans = rig.by_request()
    assert spans["cpu-server"].kind is SpanKind.SERVER
    assert spans["gpu-client"].kind is SpanKind.CLIENT
    for name in ("cpu-server", "gpu-client"):
        attrs = spans[name].attributes
        assert attrs is not None
        assert not {GPU_SECONDS, GPU_ENERGY_J, GPU_UUIDS, GPU_NAME} & set(attrs)
    assert rig.hold.counts == {"attributed": 0, "unattributed": 0, "overflow": 0}


def test_hold_is_bounded_in_time_and_size(rig_for: Callable[..., Rig]) -> None:
    one, two = Req("one", 2.0, 3.0, 700), Req("two", 2.5, 3.0, 300)
    gt = GroundTruth([one, two], t_end_s=6.0)
    rig = rig_for(gt, max_held=1)
    # the GPU stops answering at 2.5 s: no sample will ever cover the calls' ends
    rig.run([], until_s=3.01, sample_until_s=2.5)
    assert rig.deliver(one)
    assert not rig.deliver(two)  # the hold is full: emitted at once, counted
    assert set(rig.by_request()) == {"two"}
    rig.run([], until_s=3.01 + PERIOD_S + 0.06, sample_until_s=2.5)
    spans = rig.by_request()
    attrs = spans["one"].attributes
    assert attrs is not None
    assert GPU_ENERGY_J not in attrs  # late: sent without a guess
    assert rig.emitted_at["one"] - 3.01 <= PERIOD_S + 0.05 + PERIOD_S
    assert rig.hold.counts == {"attributed": 0, "unattributed": 1, "overflow": 1}


def test_agent_without_gpu_holds_nothing() -> None:
    cfg = load_config(
        overrides={
            "agent": {"capture": False, "metrics_port": -1},
            "k8s": {"mode": "off"},
            "gpu": {"enabled": False},
        },
        environ={},
    )
    exporter = InMemorySpanExporter()
    agent = Agent(cfg, span_exporter=exporter, say=lambda line: None)
    agent.start()
    try:
        assert agent.call_energy is None
        agent.handle(server_exchange(Req("x", 1.0, 2.0, 100)))
    finally:
        agent.stop()
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None
    assert GPU_SECONDS not in span.attributes
