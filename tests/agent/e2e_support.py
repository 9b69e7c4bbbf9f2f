"""Shared pieces of the agent's end-to-end tests against the other API families.

Gives `NativeServerProcess` (`tests.agent.native_model_server` as a child process, plaintext or
TLS, with its ground truth), span reading from the collector's store (`spans_where`,
`wait_spans`), clients that make one list of calls each (`run_curl`, `run_requests`,
`run_urllib`, `run_node`), the time-to-first-chunk comparison both sides must pass
(`check_ttfc`), `wait_for_log` for lines the agent writes, and `native_stack`: a collector, a
plaintext and a TLS server and an agent process watching what the caller chooses. Everything
talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.agent.processes import AgentProcess
from tests.conftest import REPO, CollectorProcess, free_port, start_collector
from tests.support.certs import make_cert

CURL = shutil.which("curl")
NODE = shutil.which("node")
NODE_CLIENT = REPO / "tests" / "agent" / "native_client.mjs"

SPAN_COLUMNS = (
    "kind",
    "name",
    "source",
    "trace_id",
    "span_id",
    "parent_span_id",
    "status_code",
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "gen_ai_response_id",
    "gen_ai_usage_input_tokens",
    "gen_ai_usage_output_tokens",
    "gen_ai_usage_cache_read_input_tokens",
    "gen_ai_usage_cache_creation_input_tokens",
    "gen_ai_response_finish_reasons",
    "gen_ai_request_stream",
    "gen_ai_response_time_to_first_chunk",
    "server_address",
    "server_port",
    "start_unix_ns",
    "end_unix_ns",
    "attributes",
    "k8s_node",
    "service_name",
)

# Time to first chunk against the server's own clock readings: the median over the streamed
# calls, and each one (a loaded 2-core machine can hold a thread between its clock reading and
# its write; a wrong computation would be off by the whole think time, 40 ms and more).
TTFT_MEDIAN_S = 0.005
TTFT_EACH_S = 0.050


@dataclass
class NativeServerProcess:
    """`tests.agent.native_model_server` as a child process."""

    proc: subprocess.Popen[str]
    port: int
    tls: bool
    cert: Path | None = None

    @classmethod
    def start(
        cls,
        port: int,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        first_chunk_delay_ms: float = 40,
        chunk_interval_ms: float = 3,
    ) -> NativeServerProcess:
        cmd = [
            sys.executable,
            "-m",
            "tests.agent.native_model_server",
            "--port",
            str(port),
            "--first-chunk-delay-ms",
            str(first_chunk_delay_ms),
            "--chunk-interval-ms",
            str(chunk_interval_ms),
        ]
        if cert is not None and key is not None:
            cmd += ["--cert", str(cert), "--key", str(key)]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line
        return cls(proc, port, cert is not None, cert)

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> str | bool:
        """`requests`' verify argument: the test certificate's path for https."""
        return str(self.cert) if self.tls and self.cert is not None else True

    def _get(self, path: str) -> Any:
        verify: ssl.SSLContext | bool = True
        if self.tls and self.cert is not None:
            verify = ssl.create_default_context(cafile=str(self.cert))
        resp = httpx.get(f"{self.origin}{path}", timeout=30, verify=verify)
        resp.raise_for_status()
        return resp.json()

    def count(self) -> int:
        """Answers given so far."""
        return int(self._get("/_test/count")["count"])

    def served(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._get("/_test/served")
        return rows

    def truth(self, models: set[str]) -> dict[str, dict[str, Any]]:
        """request model -> its answer, for the given (unique per call) models."""
        out = {a["request_model"]: a for a in self.served() if a["request_model"] in models}
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the store ------------------------------------------------------------------------------


def spans_where(collector: CollectorProcess, where: str, params: list[Any]) -> list[dict[str, Any]]:
    rows = collector.sql(
        f"SELECT {', '.join(SPAN_COLUMNS)} FROM spans WHERE {where} ORDER BY start_unix_ns",
        params,
    )
    out = []
    for row in rows:
        doc = dict(zip(SPAN_COLUMNS, row, strict=True))
        if isinstance(doc["attributes"], str):
            doc["attributes"] = json.loads(doc["attributes"])
        out.append(doc)
    return out


def wait_spans(
    collector: CollectorProcess,
    where: str,
    params: list[Any],
    count: int,
    timeout_s: float = 60,
) -> list[dict[str, Any]]:
    """The spans matching `where` once `count` are in (or at the timeout), after a pause long
    enough for a duplicate to show up too."""
    deadline = time.monotonic() + timeout_s
    spans = spans_where(collector, where, params)
    while len(spans) < count and time.monotonic() < deadline:
        time.sleep(0.25)
        spans = spans_where(collector, where, params)
    time.sleep(1.5)
    return spans_where(collector, where, params)


def by_model(spans: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Spans of one kind keyed by request model (unique per call in these tests)."""
    chosen = [s for s in spans if s["kind"] == kind]
    out = {s["gen_ai_request_model"]: s for s in chosen}
    assert len(out) == len(chosen), f"two {kind} spans for one call"
    return out


# --- the agent ------------------------------------------------------------------------------


def wait_for_log(agent: AgentProcess, pattern: str, timeout_s: float = 20) -> bool:
    """Wait until a line of the agent's log matches `pattern`."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(regex.search(line) for line in agent.log.read_text().splitlines()):
            return True
        time.sleep(0.1)
    return False


# --- clients --------------------------------------------------------------------------------


@dataclass
class Call:
    """One call a client makes; `model` is unique per call, so it names the call's spans."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.body["model"])


def run_curl(server: NativeServerProcess, calls: list[Call]) -> list[int]:
    """Each call with its own `curl` process; their pids, in call order."""
    assert CURL is not None
    pids = []
    for call in calls:
        cmd = [CURL, "-sS", "-N", "--fail", "-H", "content-type: application/json"]
        for name, value in call.headers.items():
            cmd += ["-H", f"{name}: {value}"]
        if server.tls:
            cmd += ["--cacert", str(server.cert)]
        cmd += ["-d", json.dumps(call.body), server.origin + call.path]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out
        pids.append(proc.pid)
    return pids


def run_requests(server: NativeServerProcess, calls: list[Call]) -> None:
    """The calls over one `requests` keep-alive session in this process, streams read to the
    end as SDKs do."""
    import requests

    with requests.Session() as session:
        for call in calls:
            resp = session.post(
                server.origin + call.path,
                json=call.body,
                headers=call.headers,
                stream=True,
                verify=server.verify,
                timeout=30,
            )
            assert resp.status_code == 200
            for _ in resp.iter_content(1024):
                pass
            resp.close()


_URLLIB_CLIENT = """
import json, ssl, sys, urllib.request
calls = json.load(open(sys.argv[1]))
ctx = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else None
for call in calls:
    req = urllib.request.Request(
        call["url"],
        data=json.dumps(call["body"]).encode(),
        headers={"content-type": "application/json", **call["headers"]},
    )
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        assert resp.status == 200
        resp.read()
"""


def run_urllib(server: NativeServerProcess, calls: list[Call], tmp: Path) -> int:
    """The calls from a Python process with no tracing at all (stdlib urllib); its pid."""
    spec = tmp / f"urllib-calls-{time.monotonic_ns()}.json"
    spec.write_text(
        json.dumps(
            [{"url": server.origin + c.path, "headers": c.headers, "body": c.body} for c in calls]
        )
    )
    cmd = [sys.executable, "-c", _URLLIB_CLIENT, str(spec)]
    if server.tls:
        cmd.append(str(server.cert))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return proc.pid


def run_node(server: NativeServerProcess, calls: list[Call], tmp: Path) -> int:
    """The calls from one Node.js process (fetch); its pid."""
    assert NODE is not None
    spec = tmp / f"node-calls-{time.monotonic_ns()}.json"
    spec.write_text(
        json.dumps(
            [{"url": server.origin + c.path, "headers": c.headers, "body": c.body} for c in calls]
        )
    )
    env = {**os.environ}
    if server.tls and server.cert is not None:
        env["NODE_EXTRA_CA_CERTS"] = str(server.cert)
    proc = subprocess.Popen(
        [NODE, str(NODE_CLIENT), str(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    results = json.loads(out)
    assert [r["status"] for r in results] == [200] * len(calls)
    return proc.pid


# --- checks ---------------------------------------------------------------------------------


def check_ttfc(
    by_client: dict[str, dict[str, Any]],
    by_server: dict[str, dict[str, Any]],
    truth: dict[str, dict[str, Any]],
) -> dict[str, list[float]]:
    """Streamed calls: the server span's time to first chunk against the server's own reading,
    the client span's against the server's plus the request's transit (both sides are stamped
    by one kernel clock, so the transit is measured, not guessed); non-streamed calls have
    none. Returns the deviations (s) per side, for the report."""
    deviations: dict[str, list[float]] = {"server": [], "client": []}
    for model, t in truth.items():
        client, server = by_client.get(model), by_server.get(model)
        for span in (client, server):
            if span is not None and not t["stream"]:
                assert span["gen_ai_response_time_to_first_chunk"] is None, span
        if not t["stream"]:
            continue
        expected_s = t["server_ttfc_s"]
        assert expected_s is not None
        if server is not None:
            got_s = server["gen_ai_response_time_to_first_chunk"]
            assert got_s is not None, server
            deviations["server"].append(abs(got_s - expected_s))
        if client is not None and server is not None:
            transit_s = (server["start_unix_ns"] - client["start_unix_ns"]) / 1e9
            got_s = client["gen_ai_response_time_to_first_chunk"]
            assert got_s is not None, client
            deviations["client"].append(abs(got_s - (expected_s + transit_s)))
    for side, values in deviations.items():
        if not values:
            continue
        assert statistics.median(values) <= TTFT_MEDIAN_S, (side, sorted(values))
        assert max(values) <= TTFT_EACH_S, (side, sorted(values))
    return deviations


@dataclass
class NativeStack:
    """A collector, the plaintext and the TLS model server, and the agent watching them."""

    collector: CollectorProcess
    plain: NativeServerProcess
    tls: NativeServerProcess
    agent: AgentProcess
    tmp: Path


@contextmanager
def native_stack(
    tmp: Path, watch: Callable[[NativeServerProcess, NativeServerProcess], list[str]]
) -> Iterator[NativeStack]:
    """Start everything; `watch(plain, tls)` gives the agent's filter arguments."""
    cert, key = make_cert(tmp)
    collector = start_collector(tmp / "store.duckdb", tmp / "collector.log")
    plain = NativeServerProcess.start(free_port())
    tls = NativeServerProcess.start(free_port(), cert=cert, key=key)
    agent = AgentProcess.start(
        ["--collector", collector.otlp_http, "--no-gpu", *watch(plain, tls)],
        tmp / "agent.log",
        free_port(),
        env={"INFERSIGHT_K8S_MODE": "off", "INFERSIGHT_ENGINES_ENABLED": "false"},
    )
    try:
        agent.wait_for_metric("infersight_agent_capture_up", 1.0)
        yield NativeStack(collector, plain, tls, agent, tmp)
    finally:
        agent.stop()
        plain.stop()
        tls.stop()
        collector.stop()
