"""Node-local pairing: SDK GenAI spans relayed through the agent meet the agent's own captures.

Takes in: from the relay, each parsed `ExportTraceServiceRequest` with the `Origin` (host pid,
pod) of each of its resources (`take_from`); from the agent's processing thread, each
client-side capture (`offer_capture`). Gives out: through `forward`, the SDK spans again, as
trace requests of their own, paired ones carrying the wire fields and `infersight.source=both`
(`agent.pair.merge`); through `emit_capture`, the captures that found no SDK span, which the
agent then exports as its own spans. A paired capture is not exported: the SDK span stands for
the call.
Both sides wait at most `hold_s` for their partner. Every `tick_s` a background thread applies
the pure rules (`agent.pair.rules.match_calls`) to everything held: trace context first (the
capture's `traceparent` names the SDK span or the HTTP client span under it, which the relay
saw go by), then response and request ids, then the heuristic (same pid or pod, overlapping
times, same model and token counts) for records held at least `settle_s`. Failed attempts of
a call paired in the same pass (the client retried them) are folded into its span and not
exported. What expires goes on unpaired. Captures are held only while SDK GenAI spans come
through the relay (`auto`: in the last 10 minutes), or always, or never; SDK spans only while
the capture runs. Each side holds at most `max_held`; past that, records go on at once
(counted). `stop()` pairs what it can, releases everything (safe twice).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.util.types import AttributeValue

from agent.pair.merge import merge_capture
from agent.pair.records import capture_record, genai_of, sdk_record, span_attributes
from agent.pair.rules import (
    METHODS,
    RETRY_METHODS,
    CallRecord,
    Key,
    PairingSettings,
    match_calls,
)

log = logging.getLogger(__name__)

HOLD_MODES: Final = ("auto", "always", "never")
_SIDES: Final = ("sdk", "capture")
_MAX_PARENTS: Final = 200_000


@dataclass(frozen=True, slots=True)
class NodePairingSettings:
    """Bounds of node-local pairing (the `pairing` section of the agent's configuration)."""

    hold_s: float = 8.0
    settle_s: float = 1.0
    hold_captures: str = "auto"
    max_held: int = 10_000
    min_heuristic_confidence: float = 0.3
    tick_s: float = 0.1
    #: `auto` holds captures while an SDK GenAI span came through the relay this recently.
    active_s: float = 600.0


@dataclass(frozen=True, slots=True)
class SenderOrigin:
    """What the relay knows of the sender of one resource: host pid and pod."""

    pid: int | None = None
    pod: str | None = None


@dataclass(slots=True)
class _HeldSpan:
    record: CallRecord
    span: Any  # opentelemetry.proto.trace.v1.Span
    resource_env: Any  # ResourceSpans without spans (resource and schema URL)
    scope_env: Any  # ScopeSpans without spans (scope and schema URL)
    columns: dict[str, Any]
    deadline_ns: int


@dataclass(slots=True)
class HeldCapture:
    """One capture waiting for its SDK span; `payload` is what the agent needs to export it."""

    record: CallRecord
    attributes: Mapping[str, AttributeValue]
    payload: Any
    deadline_ns: int


@dataclass(slots=True)
class NodePairingStats:
    """Counts since start, and what is held now."""

    pairs: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    unpaired: Counter[str] = field(default_factory=Counter)
    overflow: Counter[str] = field(default_factory=Counter)
    held: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SIDES, 0))


class _Parents(Mapping[Key, str | None]):
    """(trace id, span id) -> parent span id of spans the relay saw recently, bounded."""

    def __init__(self) -> None:
        self._items: OrderedDict[Key, tuple[str | None, int]] = OrderedDict()

    def add(self, key: Key, parent: str | None, now_ns: int) -> None:
        self._items[key] = (parent, now_ns)
        self._items.move_to_end(key)
        while len(self._items) > _MAX_PARENTS:
            self._items.popitem(last=False)

    def expire(self, older_than_ns: int) -> None:
        while self._items:
            key, (_, at_ns) = next(iter(self._items.items()))
            if at_ns >= older_than_ns:
                return
            del self._items[key]

    def __getitem__(self, key: Key) -> str | None:
        return self._items[key][0]

    def __iter__(self) -> Iterator[Key]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class NodePairing:
    """Holds both sides and pairs them (see the module docstring)."""

    def __init__(
        self,
        settings: NodePairingSettings,
        forward: Callable[[ExportTraceServiceRequest, int], None],
        emit_capture: Callable[[HeldCapture], None],
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if settings.hold_captures not in HOLD_MODES:
            raise ValueError(f"hold_captures must be one of {', '.join(HOLD_MODES)}")
        self.settings = settings
        self._forward = forward
        self._emit_capture = emit_capture
        self._clock_ns = clock_ns
        self._rules = PairingSettings(
            settle_ns=int(settings.settle_s * 1e9),
            min_heuristic_confidence=settings.min_heuristic_confidence,
        )
        self._hold_ns = int(settings.hold_s * 1e9)
        self._lock = threading.Lock()
        self._sdk: dict[Key, _HeldSpan] = {}
        self._caps: dict[Key, HeldCapture] = {}
        self._parents = _Parents()
        self._stats = NodePairingStats()
        self._last_sdk_ns: int | None = None
        self._dirty = False
        self._next_settle_ns: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        #: set by the agent while its capture runs: SDK spans wait for captures only then
        self.capture_running = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="infersight-node-pairing", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Pair what can be paired now, release everything else (safe twice)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._pass(final=True)

    def run_once(self) -> None:
        """One pass now (the background thread makes one every `tick_s`)."""
        self._pass()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.tick_s):
            try:
                self._pass()
            except Exception:  # a failed pass must not stop pairing for good
                log.exception("node-local pairing pass failed")

    # -- intake ----------------------------------------------------------------------------

    def take_from(
        self,
        request: ExportTraceServiceRequest,
        origins: list[SenderOrigin],
        received_unix_ns: int | None = None,
    ) -> int:
        """Remember every span's parent; take the GenAI client spans out of `request` (in
        place) to hold them. Returns how many were taken."""
        now = self._clock_ns() if received_unix_ns is None else received_unix_ns
        hold_sdk = self.capture_running and not self._stopped
        taken = 0
        with self._lock:
            for i, rs in enumerate(request.resource_spans):
                origin = origins[i] if i < len(origins) else SenderOrigin()
                service = _service_name(rs.resource)
                resource_env: Any = None
                for ss in rs.scope_spans:
                    scope_env: Any = None
                    keep: list[Any] = []
                    for span in ss.spans:
                        key = (span.trace_id.hex(), span.span_id.hex())
                        self._parents.add(key, span.parent_span_id.hex() or None, now)
                        held = self._hold_span(
                            span, origin, service, now, hold_sdk, rs, ss, resource_env, scope_env
                        )
                        if held is None:
                            keep.append(span)
                            continue
                        resource_env, scope_env = held.resource_env, held.scope_env
                        taken += 1
                    if len(keep) != len(ss.spans):
                        del ss.spans[:]
                        ss.spans.extend(keep)
            if taken:
                self._dirty = True
        if taken:
            _drop_empty(request)
        return taken

    def _hold_span(
        self,
        span: Any,
        origin: SenderOrigin,
        service: str | None,
        now: int,
        hold_sdk: bool,
        rs: Any,
        ss: Any,
        resource_env: Any,
        scope_env: Any,
    ) -> _HeldSpan | None:
        attrs = span_attributes(span)
        genai = genai_of(span, attrs)
        if genai is None:
            return None
        record = sdk_record(
            span,
            attrs,
            genai,
            pid=origin.pid,
            pod=origin.pod,
            service=service,
            received_unix_ns=now,
        )
        if record.side != "client":
            return None
        self._last_sdk_ns = now
        if not hold_sdk:
            return None
        if len(self._sdk) >= self.settings.max_held:
            self._stats.overflow["sdk"] += 1
            return None
        if record.key in self._sdk:
            return None  # a re-sent span: the copy held already stands for it
        if resource_env is None:
            resource_env = type(rs)(resource=rs.resource, schema_url=rs.schema_url)
        if scope_env is None:
            scope_env = type(ss)(scope=ss.scope, schema_url=ss.schema_url)
        copy = type(span)()
        copy.CopyFrom(span)
        held = _HeldSpan(record, copy, resource_env, scope_env, genai.columns, now + self._hold_ns)
        self._sdk[record.key] = held
        return held

    def holds_captures(self) -> bool:
        """Whether a client capture offered now would be held."""
        mode = self.settings.hold_captures
        if mode == "never" or self._stopped:
            return False
        if mode == "always":
            return True
        last = self._last_sdk_ns
        return last is not None and self._clock_ns() - last <= self.settings.active_s * 1e9

    def offer_capture(
        self,
        call: Any,
        attributes: Mapping[str, AttributeValue],
        payload: Any,
        *,
        start_unix_ns: int,
        end_unix_ns: int,
        pid: int,
        pod: str | None,
    ) -> bool:
        """Hold a client capture (an `InferenceCall` and its span attributes) for its SDK
        span; False when it is not held and the caller exports it now."""
        if not self.holds_captures():
            return False
        now = self._clock_ns()
        record = capture_record(
            call,
            attributes,
            start_unix_ns=start_unix_ns,
            end_unix_ns=end_unix_ns,
            pid=pid,
            pod=pod,
            received_unix_ns=now,
        )
        with self._lock:
            if len(self._caps) >= self.settings.max_held:
                self._stats.overflow["capture"] += 1
                return False
            self._caps[record.key] = HeldCapture(record, attributes, payload, now + self._hold_ns)
            self._dirty = True
        return True

    # -- passes ----------------------------------------------------------------------------

    def _pass(self, final: bool = False) -> None:
        now = self._clock_ns()
        paired: list[_HeldSpan] = []
        released_spans: list[_HeldSpan] = []
        released_caps: list[HeldCapture] = []
        with self._lock:
            due = self._dirty or (self._next_settle_ns is not None and now >= self._next_settle_ns)
            if (due or final) and self._sdk and self._caps:
                self._match(now, final, paired)
            self._dirty = False
            for key, held in list(self._sdk.items()):
                if final or held.deadline_ns <= now:
                    released_spans.append(self._sdk.pop(key))
            for key, cap in list(self._caps.items()):
                if final or cap.deadline_ns <= now:
                    released_caps.append(self._caps.pop(key))
            settle_ns = self._rules.settle_ns
            pending = [
                r.received_unix_ns + settle_ns
                for r in [
                    *(h.record for h in self._sdk.values()),
                    *(c.record for c in self._caps.values()),
                ]
                if r.received_unix_ns is not None and r.received_unix_ns + settle_ns > now
            ]
            self._next_settle_ns = min(pending) if pending else None
            self._parents.expire(now - 2 * self._hold_ns)
            self._stats.unpaired["sdk"] += len(released_spans)
            self._stats.unpaired["capture"] += len(released_caps)
        spans = paired + released_spans
        if spans:
            self._forward(_request_of(spans), len(spans))
        for cap in released_caps:
            try:
                self._emit_capture(cap)
            except Exception:
                log.exception("exporting an unpaired capture failed")

    def _match(self, now: int, final: bool, paired: list[_HeldSpan]) -> None:
        result = match_calls(
            [h.record for h in self._sdk.values()],
            [c.record for c in self._caps.values()],
            self._rules,
            self._parents,
            None if final else now,
        )
        # failed attempts of a call paired now: folded into its span, never exported
        retried: dict[Key, list[HeldCapture]] = {}
        paired_now = {p.sdk.key for p in result.pairs}
        for retry in result.retries:
            if retry.sdk.key in paired_now and retry.capture.key in self._caps:
                retried.setdefault(retry.sdk.key, []).append(self._caps.pop(retry.capture.key))
                self._stats.retries[retry.method] += 1
        for pair in result.pairs:
            held = self._sdk.pop(pair.sdk.key)
            cap = self._caps.pop(pair.capture.key)
            attempts = sorted(retried.get(pair.sdk.key, ()), key=lambda c: c.record.start_unix_ns)
            merge_capture(
                held.span,
                cap.attributes,
                wire_start_unix_ns=cap.record.start_unix_ns,
                wire_end_unix_ns=cap.record.end_unix_ns,
                sdk_columns=held.columns,
                method=pair.method,
                confidence=pair.confidence,
                retried=[c.attributes for c in attempts],
            )
            self._stats.pairs[pair.method] += 1
            paired.append(held)

    def stats(self) -> NodePairingStats:
        """A copy of the counters, with the held counts of now."""
        with self._lock:
            s = self._stats
            return NodePairingStats(
                Counter({m: s.pairs.get(m, 0) for m in METHODS}),
                Counter({m: s.retries.get(m, 0) for m in RETRY_METHODS}),
                Counter({side: s.unpaired.get(side, 0) for side in _SIDES}),
                Counter({side: s.overflow.get(side, 0) for side in _SIDES}),
                {"sdk": len(self._sdk), "capture": len(self._caps)},
            )


def _service_name(resource: Any) -> str | None:
    for kv in resource.attributes:
        if kv.key == "service.name" and kv.value.WhichOneof("value") == "string_value":
            return str(kv.value.string_value)
    return None


def _drop_empty(request: ExportTraceServiceRequest) -> None:
    """Remove scope and resource envelopes left without spans."""
    for rs in request.resource_spans:
        keep = [ss for ss in rs.scope_spans if len(ss.spans)]
        if len(keep) != len(rs.scope_spans):
            del rs.scope_spans[:]
            rs.scope_spans.extend(keep)
    keep_rs = [rs for rs in request.resource_spans if len(rs.scope_spans)]
    if len(keep_rs) != len(request.resource_spans):
        del request.resource_spans[:]
        request.resource_spans.extend(keep_rs)


def _request_of(spans: list[_HeldSpan]) -> ExportTraceServiceRequest:
    """One trace request holding `spans` under their own resources and scopes."""
    request = ExportTraceServiceRequest()
    resources: dict[int, tuple[Any, dict[int, Any]]] = {}
    for held in spans:
        entry = resources.get(id(held.resource_env))
        if entry is None:
            rs = request.resource_spans.add()
            rs.resource.CopyFrom(held.resource_env.resource)
            rs.schema_url = held.resource_env.schema_url
            entry = (rs, {})
            resources[id(held.resource_env)] = entry
        rs, scopes = entry
        ss = scopes.get(id(held.scope_env))
        if ss is None:
            ss = rs.scope_spans.add()
            ss.scope.CopyFrom(held.scope_env.scope)
            ss.schema_url = held.scope_env.schema_url
            scopes[id(held.scope_env)] = ss
        ss.spans.add().CopyFrom(held.span)
    return request
