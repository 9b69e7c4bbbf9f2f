"""Ground truth, end to end, with the kernel: one `llm_calls` row per LLM call, whoever saw it.

A collector process; `infersight agent` as a process (real eBPF capture of one model server's
port, its OTLP relay on free loopback ports, node-local pairing holding every capture); two
OpenAI-compatible test servers, one captured, one not. Client processes run at the same time:
the official OpenAI instrumentation, OpenLLMetry's and OpenLIT, each in its own environment,
exporting through the agent (OTLP/HTTP or gRPC) or straight to the collector (with the SDK's
`process` resource detector, so the collector knows their process), plus clients with no
instrumentation at all. Every call, streamed or not, names a hidden id that only this
test knows; the servers record what they answered to it. Two calls of every client fail: the
server answers them with HTTP 500 and 429 (an OpenAI error body, no response id; the client
does not retry). Two more are retried: their first attempt gets a 429 or a 503, the client
(the `openai` library's own retry) sends the same request again and gets its answer.

N calls must give exactly N rows, none twice, each with the source its route implies:
`both` for instrumented calls to the captured server (paired on the node when the SDK span
came through the agent, so the capture was never exported; by the collector otherwise), `sdk`
for calls to the server the agent does not capture, `ebpf` for uninstrumented calls. Model and
token counts must equal what the server answered; the wire fields (request bytes, HTTP status,
wire duration) must be there for every call the agent saw. A failed call is one row as well,
with the source of its route, `status='error'` and, where the agent saw it, the server's HTTP
status; rows of failed calls are told apart by their client (the SDK span's `service.name`,
the capture's `process.pid`) and the failing model the call asked for. A retried call is one
row too, with `attempts` = 2 wherever the agent saw it: folded on the node into the paired SDK
span (the failed attempt never exported), or by the collector.

Needs root and bcc (skips with the reason otherwise) and builds the instrumentation
environments under `.testenvs/` when they are missing.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.capture.bcc_binding import bcc_unavailable_reason
from tests.agent.processes import AgentProcess, ModelServerProcess
from tests.conftest import REPO, CollectorProcess, free_port, start_collector
from tests.instrumentation import envs

_REASON = bcc_unavailable_reason()
pytestmark = [
    pytest.mark.ebpf,
    pytest.mark.instrumentation,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(180),
]

CLIENT = Path(__file__).resolve().parent / "gt_client.py"
CALLS_PER_CLIENT = 6
#: call index -> HTTP status the server answers it with (2: not streamed, 5: streamed)
FAILURES = {2: 500, 5: 429}
#: call index -> HTTP status of the first attempt, which the client retries (3: streamed)
FLAKY = {3: 429, 4: 503}
HOLD_S = 6.0


@dataclass(frozen=True)
class Route:
    """One client process: who instruments it, where its telemetry and its calls go."""

    name: str
    family: str  # an instrumentation family, or "none"
    export: str  # agent-http | agent-grpc | collector-http | collector-grpc | none
    captured: bool  # calls go to the server the agent captures

    @property
    def expected_source(self) -> str:
        if self.family == "none":
            return "ebpf"
        return "both" if self.captured else "sdk"

    @property
    def paired_on_node(self) -> bool:
        return self.family != "none" and self.captured and self.export.startswith("agent")


ROUTES = (
    Route("v2-agent-http", "openai-v2", "agent-http", True),
    Route("llmetry-agent-grpc", "openllmetry", "agent-grpc", True),
    Route("openlit-agent-http", "openlit", "agent-http", True),
    Route("v2-collector", "openai-v2", "collector-http", True),
    Route("llmetry-collector", "openllmetry", "collector-grpc", True),
    Route("openlit-uncaptured", "openlit", "agent-grpc", False),
    Route("plain", "none", "none", True),
)


@dataclass
class Stack:
    collector: CollectorProcess
    captured: ModelServerProcess
    uncaptured: ModelServerProcess
    agent: AgentProcess
    relay_grpc: int
    relay_http: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for family in {r.family for r in ROUTES if r.family != "none"}:
        envs.build(family)
    tmp = tmp_path_factory.mktemp("ground-truth")
    collector = start_collector(
        tmp / "store.duckdb",
        tmp / "collector.log",
        env={"INFERSIGHT_PAIRING_INTERVAL_S": "0.3", "INFERSIGHT_PAIRING_SETTLE_S": "1"},
    )
    captured = ModelServerProcess.start(free_port(), id_prefix="cap", first_chunk_delay_ms=30)
    uncaptured = ModelServerProcess.start(free_port(), id_prefix="unc", first_chunk_delay_ms=30)
    relay_grpc, relay_http = free_port(), free_port()
    agent = AgentProcess.start(
        [
            "--collector",
            collector.otlp_http,
            "--port",
            str(captured.port),
            "--no-gpu",
            "--otlp-grpc-port",
            str(relay_grpc),
            "--otlp-http-port",
            str(relay_http),
        ],
        tmp / "agent.log",
        free_port(),
        env={
            "INFERSIGHT_K8S_MODE": "off",
            "INFERSIGHT_ENGINES_ENABLED": "false",
            "INFERSIGHT_RELAY_HOST": "127.0.0.1",
            "INFERSIGHT_PAIRING_HOLD_S": str(HOLD_S),
            "INFERSIGHT_PAIRING_HOLD_CAPTURES": "always",
            "INFERSIGHT_EXPORTER_METRIC_INTERVAL_S": "1",
        },
    )
    try:
        agent.wait_for_metric("infersight_agent_capture_up", 1.0)
        agent.wait_for_metric("infersight_agent_relay_up", 1.0)
        yield Stack(collector, captured, uncaptured, agent, relay_grpc, relay_http)
    finally:
        agent.stop()
        captured.stop()
        uncaptured.stop()
        collector.stop()


def _client(stack: Stack, route: Route, tag: str) -> subprocess.Popen[str]:
    python = sys.executable if route.family == "none" else str(envs.env_python(route.family))
    server = stack.captured if route.captured else stack.uncaptured
    exporter, endpoint = {
        "agent-http": ("otlp-http", f"http://127.0.0.1:{stack.relay_http}"),
        "agent-grpc": ("otlp-grpc", f"127.0.0.1:{stack.relay_grpc}"),
        "collector-http": ("otlp-http", stack.collector.otlp_http),
        "collector-grpc": ("otlp-grpc", stack.collector.otlp_grpc),
        "none": ("otlp-http", ""),
    }[route.export]
    cmd = [
        python,
        str(CLIENT),
        "--family",
        route.family,
        "--exporter",
        exporter,
        "--endpoint",
        endpoint,
        "--server-url",
        f"{server.origin}/v1",
        "--service-name",
        route.name,
        "--tag",
        tag,
        "--calls",
        str(CALLS_PER_CLIENT),
        *(arg for i, status in FAILURES.items() for arg in ("--fail", f"{i}:{status}")),
        *(arg for i, status in FLAKY.items() for arg in ("--flaky", f"{i}:{status}")),
    ]
    # spans leave the SDK soon after they end, well inside the agent's hold window
    env = {
        "PATH": "/usr/bin:/bin",
        "OTEL_BSP_SCHEDULE_DELAY": "300",
        "OTEL_BLRP_SCHEDULE_DELAY": "300",
    }
    if route.export.startswith("collector"):
        # The collector knows an SDK span's process only from its resource (the relay knows it
        # from the socket); a failed call has no response id, so without `process.pid` and
        # without a traceparent on the wire nothing ties it to its capture.
        env["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"] = "otel,process"
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _rows(collector: CollectorProcess) -> list[dict[str, Any]]:
    """Every `llm_calls` row, with the response id, source and attributes of its span (and
    the response id of its capture, for calls the collector paired)."""
    columns = {
        "span_id": "c.span_id",
        "service_name": "c.service_name",
        "source": "c.source",
        "status": "c.status",
        "error_type": "c.error_type",
        "model": "c.model",
        "request_model": "c.request_model",
        "input_tokens": "c.input_tokens",
        "output_tokens": "c.output_tokens",
        "duration_s": "c.duration_s",
        "pair_method": "c.pair_method",
        "wire_request_bytes": "c.wire_request_bytes",
        "wire_duration_s": "c.wire_duration_s",
        "http_status_code": "c.http_status_code",
        "attempts": "c.attempts",
        "span_response_id": "s.gen_ai_response_id",
        "span_source": "s.source",
        "attributes": "s.attributes",
        "capture_response_id": "k.gen_ai_response_id",
    }
    rows = collector.sql(
        f"SELECT {', '.join(columns.values())} FROM llm_calls c "
        "LEFT JOIN spans s ON s.trace_id = c.trace_id AND s.span_id = c.span_id "
        "LEFT JOIN spans k ON k.trace_id = c.capture_trace_id AND k.span_id = c.capture_span_id "
        # a re-sent span is stored twice; the call is still one row of llm_calls
        "QUALIFY row_number() OVER (PARTITION BY c.trace_id, c.span_id) = 1"
    )
    out = []
    for row in rows:
        doc = dict(zip(columns, row, strict=True))
        doc["response_id"] = doc["span_response_id"] or doc["capture_response_id"]
        doc["attributes"] = json.loads(doc["attributes"]) if doc["attributes"] else {}
        out.append(doc)
    return out


@dataclass
class Truth:
    """What the test knows: every call by hidden id, who made it, what the server answered."""

    made: dict[str, tuple[Route, dict[str, Any]]]  # hidden id -> route, what the client saw
    served: dict[str, dict[str, Any]]  # hidden id -> the server's record of its answer
    by_response_id: dict[str, str]  # response id -> hidden id
    failed: dict[tuple[str, str], str]  # (route, model asked for) -> hidden id of a failed call
    route_by_pid: dict[int, Route]

    def route_of(self, row: dict[str, Any]) -> Route | None:
        """The client of a row: a capture names its process, an SDK span its service."""
        if row["span_source"] == "ebpf":
            pid = row["attributes"].get("process.pid")
            return self.route_by_pid.get(int(pid)) if pid is not None else None
        return next((r for r in ROUTES if r.name == row["service_name"]), None)

    def hidden_of(self, row: dict[str, Any]) -> str | None:
        """The call a row stands for: by response id, else (failed calls have none) by its
        client and the failing model it asked for, which no other call of that client asks."""
        if row["response_id"] is not None:
            return self.by_response_id.get(row["response_id"])
        route = self.route_of(row)
        if route is None:
            return None
        return self.failed.get((route.name, row["request_model"]))

    def settled(self, rows: list[dict[str, Any]]) -> bool:
        """One row per call, each known and with the source of its route."""
        hidden = [self.hidden_of(r) for r in rows]
        return sorted(h or "" for h in hidden) == sorted(self.made) and all(
            self.made[h][0].expected_source == r["source"]
            for h, r in zip(hidden, rows, strict=True)
            if h is not None
        )


def _run_clients(stack: Stack) -> Truth:
    """Run every route's client at once; what they made and what the servers answered."""
    secret = secrets.token_hex(4)
    tags = {route: f"{route.name}-{secret}" for route in ROUTES}
    procs = {route: _client(stack, route, tags[route]) for route in ROUTES}
    made: dict[str, tuple[Route, dict[str, Any]]] = {}
    failed: dict[tuple[str, str], str] = {}
    for route, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        for call in json.loads(out.strip().splitlines()[-1])["calls"]:
            index = int(call["hidden"].rsplit("-", 1)[1])
            status = FAILURES.get(index)
            # the client got the failure it asked for, once (no retry), and no other
            assert call["status"] == status, call
            assert (call["error"] is None) == (status is None), call
            made[call["hidden"]] = (route, call)
            if status is not None:
                assert call["model"] == f"fail-{status}"
                failed[(route.name, call["model"])] = call["hidden"]
    assert len(made) == len(ROUTES) * CALLS_PER_CLIENT
    assert len(failed) == len(ROUTES) * len(FAILURES)

    # the hidden id is in the request each server recorded, failed or answered
    attempts: dict[str, list[dict[str, Any]]] = {}
    for server in (stack.captured, stack.uncaptured):
        for served in server.served():
            text = json.dumps(served["request_messages"])
            hidden = [h for h in made if f"Question {h}:" in text]
            assert len(hidden) == 1, served
            attempts.setdefault(hidden[0], []).append(served)
    served_by_hidden: dict[str, dict[str, Any]] = {}
    by_response_id: dict[str, str] = {}
    for hidden_id, answers in attempts.items():
        index = int(hidden_id.rsplit("-", 1)[1])
        if index in FLAKY:
            # the refused first attempt, then the same request answered
            assert [a["status"] for a in answers] == [FLAKY[index], 200], answers
        else:
            assert len(answers) == 1, answers  # each call reached a server once
        served = answers[-1]
        served_by_hidden[hidden_id] = served
        call = made[hidden_id][1]
        assert served["request_model"] == call["model"], served
        if call["status"] is None:
            assert served["status"] == 200, served
            assert served["response_id"], served
            by_response_id[served["response_id"]] = hidden_id
        else:
            assert served["status"] == call["status"], served
            assert served["response_id"] is None, served
    assert sorted(served_by_hidden) == sorted(made)
    route_by_pid = {proc.pid: route for route, proc in procs.items()}
    return Truth(made, served_by_hidden, by_response_id, failed, route_by_pid)


def _check_row(route: Route, served: dict[str, Any], row: dict[str, Any], retried: bool) -> None:
    """One call's row against what its server answered and the route it took."""
    assert row["source"] == route.expected_source, (route, row)
    http_status = served["status"]
    seen_on_wire = route.expected_source in ("both", "ebpf")
    want_attempts = (2 if retried else 1) if seen_on_wire else None
    assert row["attempts"] == want_attempts, (route, row)
    if http_status == 200:
        assert row["status"] == "ok", (route, row)
        assert row["model"] == served["response_model"], row
        assert (row["input_tokens"], row["output_tokens"]) == (
            served["input_tokens"],
            served["output_tokens"],
        ), (route, row)
    else:
        # no response model or usage in an error body: the model asked for, no tokens
        assert row["status"] == "error", (route, row)
        assert row["error_type"], (route, row)
        assert row["model"] == served["request_model"], row
        assert (row["input_tokens"], row["output_tokens"]) == (None, None), (route, row)
    assert row["duration_s"] > 0
    if route.paired_on_node:
        # one span for the call: the SDK's, with the wire fields; no capture went out
        assert row["span_source"] == "both", (route, row)
        attrs = row["attributes"]
        assert attrs["infersight.source"] == "both"
        assert attrs["infersight.pair.method"] in ("traceparent", "response_id", "heuristic")
        assert attrs["infersight.wire.request_body_bytes"] > 0
        assert attrs["http.response.status_code"] == http_status, (route, row)
        assert row["http_status_code"] == http_status, (route, row)
        assert 0 < attrs["infersight.wire.duration_s"] <= row["duration_s"] + 0.005
        if retried:
            # the refused attempt was folded on the node, with its status
            assert attrs["infersight.wire.attempts"] == 2, (route, row)
            assert len(attrs["infersight.wire.retried_status_codes"]) == 1, (route, row)
        else:
            assert "infersight.wire.attempts" not in attrs, (route, row)
    elif route.expected_source == "both":
        # the SDK span went straight to the collector, which paired it with the capture
        assert row["span_source"] == "sdk", (route, row)
        assert row["pair_method"] is not None
        assert row["capture_response_id"] == row["response_id"]
        assert row["wire_request_bytes"] > 0
        assert row["http_status_code"] == http_status, (route, row)
        assert 0 < row["wire_duration_s"] <= row["duration_s"] + 0.005
    elif route.expected_source == "ebpf":
        assert row["wire_request_bytes"] > 0
        assert row["http_status_code"] == http_status, (route, row)
    else:
        assert row["wire_request_bytes"] is None


def _brief(truth: Truth, row: dict[str, Any]) -> str:
    """One line per row for a failure's message: which call the test takes it for."""
    route = truth.route_of(row)
    fields = ("source", "span_source", "pair_method", "service_name", "request_model")
    return " ".join(
        [
            *(str(row[f]) for f in fields),
            f"pid={row['attributes'].get('process.pid')}",
            f"http={row['http_status_code']}",
            f"id={row['response_id']}",
            f"route={route.name if route else None}",
            f"call={truth.hidden_of(row)}",
        ]
    )


def test_every_call_is_one_row_with_the_right_source(stack: Stack) -> None:
    started = time.monotonic()
    truth = _run_clients(stack)
    n_calls = len(truth.made)

    # captures wait up to HOLD_S for their SDK span, the collector pairs every 0.3 s
    deadline = time.monotonic() + 60
    rows = _rows(stack.collector)
    while time.monotonic() < deadline:
        if truth.settled(rows) and time.monotonic() - started > HOLD_S + 2:
            break
        time.sleep(0.5)
        rows = _rows(stack.collector)
    time.sleep(2.0)  # more passes and late exports must change nothing
    rows = _rows(stack.collector)

    brief = "\n".join(_brief(truth, r) for r in rows)
    assert len(rows) == n_calls, brief
    distinct = stack.collector.sql(
        "SELECT count(*), count(DISTINCT trace_id || span_id) FROM llm_calls"
    )[0]
    assert distinct == [n_calls, n_calls]
    seen: set[str] = set()
    for row in rows:
        hidden = truth.hidden_of(row)
        assert hidden is not None, (row, brief)  # every row is a call the test made
        assert hidden not in seen, (row, brief)  # no call twice
        seen.add(hidden)
        index = int(hidden.rsplit("-", 1)[1])
        _check_row(truth.made[hidden][0], truth.served[hidden], row, index in FLAKY)
    assert seen == set(truth.made)
    errors = stack.collector.sql("SELECT count(*) FROM llm_calls WHERE status = 'error'")[0][0]
    assert errors == len(truth.failed)
    # client-side captures exported as spans: only those no SDK span claimed on the node (with
    # the refused attempts of retried calls: the collector folded those)
    captured_client_spans = stack.collector.sql(
        "SELECT count(DISTINCT span_id) FROM spans WHERE source = 'ebpf' AND kind = 'client'"
    )[0][0]
    not_on_node = sum(r.captured and not r.paired_on_node for r in ROUTES)
    assert captured_client_spans == not_on_node * (CALLS_PER_CLIENT + len(FLAKY))
    m = stack.agent.metrics()
    on_node = sum(r.paired_on_node for r in ROUTES) * CALLS_PER_CLIENT
    pairs = sum(v for k, v in m.items() if k.startswith("infersight_agent_pairing_pairs_total"))
    assert pairs == on_node
    retries = sum(v for k, v in m.items() if k.startswith("infersight_agent_pairing_retries_total"))
    assert retries == sum(r.paired_on_node for r in ROUTES) * len(FLAKY)
    assert m['infersight_agent_relay_items_total{outcome="failed",signal="traces"}'] == 0
    assert m['infersight_agent_relay_items_total{outcome="refused_full",signal="traces"}'] == 0
