"""Real eBPF capture of real HTTP traffic on loopback, plaintext and TLS, client and server side.

Each test starts servers and clients as their own processes (Python http.server with and
without TLS; requests, httpx, curl and Node.js fetch as clients) while the capture runs with
the real programs attached, then checks that exactly the calls made were reassembled, for the
client's pid and for the server's pid, with the right method, path, status, bodies and SSE
event times. Needs root and bcc (`.ci/ebpf-setup.sh`); skips with the reason otherwise.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.capture.bcc_binding import bcc_unavailable_reason
from agent.capture.bpf_loader import cgroup2_root, cgroup_id_of
from agent.capture.config import CaptureConfig
from agent.capture.exchange import HttpExchange, Role
from agent.capture.pipeline import CaptureService
from tests.capture.traffic import expected_body, kind_of, request_for, sse_payloads
from tests.conftest import REPO, free_port
from tests.support.certs import make_cert

_REASON = bcc_unavailable_reason()
pytestmark = [
    pytest.mark.ebpf,
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.timeout(60),
]

CALLS = 23  # a prime: no accidental agreement with batch sizes or pool sizes
NODE = shutil.which("node")
CURL = shutil.which("curl")
# The server notes the time just before and just after writing each SSE event. Its own side's
# kernel stamp (taken when the write returns) must fall between the two; the client's (taken
# when its read returns) cannot come before the write began, and comes at most a few
# milliseconds after it ended (more on a busy machine).
CLIENT_SIDE_TOLERANCE_NS = 50_000_000  # the reader may wait for a core: 21 ms seen under load


@dataclass
class Collected:
    """Exchanges delivered by the capture, safe to read while it runs."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    items: list[HttpExchange] = field(default_factory=list)

    def add(self, ex: HttpExchange) -> None:
        with self.lock:
            self.items.append(ex)

    def of(self, pid: int, role: Role) -> list[HttpExchange]:
        with self.lock:
            return [ex for ex in self.items if ex.conn.pid == pid and ex.conn.role is role]

    def wait(self, pred: Callable[[], bool], timeout_s: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return pred()


@dataclass
class Env:
    service: CaptureService
    collected: Collected
    plain_port: int
    tls_port: int
    cert: Path
    key: Path
    tmp: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("capture")
    cert, key = make_cert(tmp)
    plain_port, tls_port = free_port(), free_port()
    collected = Collected()
    service = CaptureService(
        CaptureConfig(filter_ports=frozenset({plain_port, tls_port})), sink=collected.add
    )
    service.start()
    try:
        yield Env(service, collected, plain_port, tls_port, cert, key, tmp)
    finally:
        service.stop()
    stats = service.stats()
    assert stats.kernel_drops == 0
    assert stats.queue_drops == 0


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    timings: Path
    tls: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def sse_times(self) -> dict[int, list[tuple[int, int]]]:
        """seq -> (before, after) the write of each event, as the server noted them."""
        out: dict[int, list[tuple[int, int]]] = {}
        if self.timings.exists():
            for line in self.timings.read_text().splitlines():
                doc = json.loads(line)
                out[int(doc["seq"])] = [
                    (int(b), int(a)) for b, a in zip(doc["before"], doc["times"], strict=True)
                ]
        return out


@pytest.fixture
def start_server(env: Env) -> Iterator[Callable[[bool], Server]]:
    started: list[Server] = []

    def start(tls: bool, port: int | None = None) -> Server:
        port = port or (env.tls_port if tls else env.plain_port)
        timings = env.tmp / f"timings-{port}-{len(started)}-{time.monotonic_ns()}.jsonl"
        cmd = [
            sys.executable,
            "-m",
            "tests.capture.traffic",
            "server",
            "--port",
            str(port),
            "--timings",
            str(timings),
        ]
        if tls:
            cmd += ["--cert", str(env.cert), "--key", str(env.key)]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert json.loads(line)["port"] == port
        server = Server(proc, port, timings, tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.proc.terminate()
        server.proc.wait(10)


def _node_attached(service: CaptureService) -> bool:
    st = os.stat(NODE or "/nonexistent")
    targets = getattr(service.source, "tls_targets", lambda: [])()
    return any((t.dev, t.ino) == (st.st_dev, st.st_ino) for t in targets)


def _spawn_python_client(
    env: Env, server: Server, lib: str, *extra: str, environ: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """The test's Python client process (`tests.capture.traffic client`), pipes open."""
    cmd = [
        sys.executable,
        "-m",
        "tests.capture.traffic",
        "client",
        "--lib",
        lib,
        "--url",
        server.url,
        "--count",
        str(CALLS),
        *extra,
    ]
    if server.tls:
        cmd += ["--ca", str(env.cert)]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )


def _run_python_client(env: Env, server: Server, lib: str, *extra: str) -> tuple[int, str]:
    proc = _spawn_python_client(env, server, lib, *extra)
    out, err = proc.communicate(timeout=45)
    assert proc.returncode == 0, err
    return proc.pid, out


def _run_curl(env: Env, server: Server) -> tuple[int, str]:
    args: list[str] = [CURL or "curl"]
    for seq in range(CALLS):
        _method, path, body = request_for(seq)
        if seq:
            args.append("--next")
        args += ["-sS", "-N", "-o", "/dev/null", "-w", "%{http_code}\n", "-H", f"x-test-seq: {seq}"]
        if server.tls:
            args += ["--cacert", str(env.cert)]
        if body is not None:
            args += ["-H", "content-type: application/json", "--data-binary", body.decode()]
        args.append(server.url + path)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=45)
    assert proc.returncode == 0, err
    assert out.split() == ["200"] * CALLS
    return proc.pid, out


def _run_node(env: Env, server: Server) -> tuple[int, str]:
    proc = subprocess.Popen(
        [NODE or "node", str(REPO / "tests/capture/node_client.mjs"), server.url, str(CALLS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NODE_EXTRA_CA_CERTS": str(env.cert)},
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"
    if server.tls:
        # Node carries OpenSSL inside its executable: the capture must notice the exec and
        # attach to it before the first call.
        assert env.collected.wait(lambda: _node_attached(env.service), 10.0), (
            "the capture did not attach to node's OpenSSL"
        )
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=45)
    assert proc.returncode == 0, err
    results = json.loads(out)
    assert [r["status"] for r in results] == [200] * CALLS
    return proc.pid, out


def _check_exchange(ex: HttpExchange, server: Server, tls: bool) -> int:
    seq = int(ex.request_headers["x-test-seq"])
    method, path, body = request_for(seq)
    assert (ex.method, ex.path, ex.status) == (method, path, 200)
    assert ex.conn.tls is tls
    assert not ex.request_truncated
    assert not ex.response_truncated
    assert not ex.response_missing
    assert ex.start_mono_ns <= ex.request_end_mono_ns
    assert ex.first_byte_mono_ns is not None
    assert ex.end_mono_ns is not None
    assert ex.request_end_mono_ns <= ex.first_byte_mono_ns <= ex.end_mono_ns
    if body is not None:
        assert json.loads(ex.request_body) == json.loads(body)
    if kind_of(seq) == "sse":
        assert [e.data for e in ex.stream_events] == sse_payloads(seq)
        assert [e.event for e in ex.stream_events] == ["delta"] * (len(sse_payloads(seq)) - 1) + [
            None
        ]
        assert ex.is_streaming
    else:
        assert ex.response_body == expected_body(seq, path)
        assert ex.stream_events == []
        if kind_of(seq) == "gzip":
            assert ex.response_headers["content-encoding"] == "gzip"
        if kind_of(seq) == "chunked":
            assert ex.response_headers["transfer-encoding"] == "chunked"
    return seq


def _check_sse_times(exchanges: list[HttpExchange], server: Server, late_ns: int) -> int:
    """Every event's stamp lies in [write began, write ended + late_ns]; returns how many
    streamed exchanges were checked."""
    recorded = server.sse_times()
    checked = 0
    for ex in exchanges:
        seq = int(ex.request_headers["x-test-seq"])
        if kind_of(seq) != "sse":
            continue
        windows = recorded[seq]
        seen = [e.arrival_mono_ns for e in ex.stream_events]
        assert len(seen) == len(windows)
        for stamp, (before, after) in zip(seen, windows, strict=True):
            assert before <= stamp <= after + late_ns, (seq, stamp - before, after - before)
        # The events were written 30 ms apart and must not be stamped together.
        assert all(b - a >= 10_000_000 for a, b in itertools.pairwise(seen)), seen
        checked += 1
    return checked


CLIENTS = ["requests", "httpx", "curl", "node"]


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
@pytest.mark.parametrize("client", CLIENTS)
def test_calls_are_reassembled_on_both_sides(
    env: Env, start_server: Callable[[bool], Server], client: str, tls: bool
) -> None:
    if client == "curl" and CURL is None:
        pytest.skip("curl is not installed")
    if client == "node" and NODE is None:
        pytest.skip("node is not installed")
    server = start_server(tls)
    if client in ("requests", "httpx"):
        client_pid, _ = _run_python_client(env, server, client)
    elif client == "curl":
        client_pid, _ = _run_curl(env, server)
    else:
        client_pid, _ = _run_node(env, server)

    col = env.collected
    server_pid = server.proc.pid
    col.wait(
        lambda: (
            len(col.of(client_pid, Role.CLIENT)) >= CALLS
            and len(col.of(server_pid, Role.SERVER)) >= CALLS
        )
    )
    time.sleep(0.3)  # anything extra would show up now
    client_side = col.of(client_pid, Role.CLIENT)
    server_side = col.of(server_pid, Role.SERVER)
    assert len(client_side) == CALLS, env.service.stats()
    assert len(server_side) == CALLS, env.service.stats()

    assert sorted(_check_exchange(ex, server, tls) for ex in client_side) == list(range(CALLS))
    assert sorted(_check_exchange(ex, server, tls) for ex in server_side) == list(range(CALLS))
    assert {ex.conn.peer_port for ex in client_side} == {server.port}
    assert {ex.conn.local_port for ex in server_side} == {server.port}
    assert {ex.conn.peer_port for ex in server_side} == {ex.conn.local_port for ex in client_side}
    assert {ex.conn.peer_addr for ex in client_side} == {"127.0.0.1"}

    sse_calls = sum(1 for s in range(CALLS) if kind_of(s) == "sse")
    assert _check_sse_times(server_side, server, 0) == sse_calls
    assert _check_sse_times(client_side, server, CLIENT_SIDE_TOLERANCE_NS) == sse_calls


def test_large_body_is_cut_without_losing_the_connection(
    env: Env, start_server: Callable[[bool], Server]
) -> None:
    server = start_server(False)
    size = 400_000  # more than max_pieces_per_call * max_payload_bytes in one call
    before = env.service.stats()
    client_pid, out = _run_python_client(env, server, "requests", "--big-body-bytes", str(size))
    assert json.loads(json.loads(out)[0]["body"]) == {"received": size}
    col = env.collected
    col.wait(lambda: len(col.of(client_pid, Role.CLIENT)) >= CALLS + 1)
    time.sleep(0.3)
    client_side = col.of(client_pid, Role.CLIENT)
    assert len(client_side) == CALLS + 1
    big = [ex for ex in client_side if ex.path == "/v1/echo-size"]
    assert len(big) == 1
    assert big[0].request_truncated
    assert json.loads(big[0].response_body) == {"received": size}
    # The calls after it on the same connection are intact.
    rest = [ex for ex in client_side if ex.path != "/v1/echo-size"]
    assert sorted(_check_exchange(ex, server, False) for ex in rest) == list(range(CALLS))
    after = env.service.stats()
    assert after.kernel_truncated_calls > before.kernel_truncated_calls
    assert after.bytes_lost > before.bytes_lost


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_http2_is_detected_and_counted(env: Env, start_server: Callable[[bool], Server]) -> None:
    server = start_server(False)
    before = env.service.stats().http2_seen
    proc = subprocess.Popen(
        [
            CURL or "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "--http2-prior-knowledge",
            server.url + "/v1/models",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.communicate(timeout=20)
    # Both ends saw the preface: curl's connection and the server's.
    assert env.collected.wait(lambda: env.service.stats().http2_seen >= before + 2, 10.0), (
        env.service.stats()
    )
    assert env.collected.of(proc.pid, Role.CLIENT) == []
    assert env.collected.of(server.proc.pid, Role.SERVER) == []


def test_existing_connection_and_pid_filter(env: Env, start_server: Callable[..., Server]) -> None:
    """A keep-alive connection opened before the capture starts is still captured, and the
    pid filter keeps other processes out (a curl call to the same server)."""
    port = free_port()
    server = start_server(False, port)
    client = _spawn_python_client(env, server, "requests", "--pause-after", "3")
    assert client.stdout is not None
    assert client.stdin is not None
    assert client.stdout.readline().strip() == "paused"
    collected = Collected()
    service = CaptureService(
        CaptureConfig(filter_pids=frozenset({client.pid, server.proc.pid})),
        sink=collected.add,
    )
    service.start()
    try:
        client.stdin.write("go\n")
        client.stdin.flush()
        _out, err = client.communicate(timeout=45)
        assert client.returncode == 0, err
        if CURL is not None:
            subprocess.run(
                [
                    CURL,
                    "-s",
                    "-o",
                    "/dev/null",
                    "-H",
                    "x-test-seq: 0",
                    server.url + "/v1/models?seq=0",
                ],
                check=True,
                timeout=20,
            )
        collected.wait(
            lambda: (
                len(collected.of(client.pid, Role.CLIENT)) >= CALLS - 3
                and len(collected.of(server.proc.pid, Role.SERVER)) >= CALLS - 4 + bool(CURL)
            )
        )
        time.sleep(0.3)
    finally:
        service.stop()
    client_side = collected.of(client.pid, Role.CLIENT)
    server_side = collected.of(server.proc.pid, Role.SERVER)
    assert sorted(_check_exchange(ex, server, False) for ex in client_side) == list(range(3, CALLS))
    curl_side = [
        ex
        for ex in server_side
        if ex.conn.peer_port not in {c.conn.local_port for c in client_side}
    ]
    assert len(curl_side) == (1 if CURL else 0)
    seeded_side = [ex for ex in server_side if ex not in curl_side]
    # The server's thread was already blocked in read() for call 3 when the capture started:
    # that read's arguments were never seen, so its request is lost (its response is then an
    # orphan and dropped). Every later call is there, exactly once.
    seqs = sorted(_check_exchange(ex, server, False) for ex in seeded_side)
    assert seqs in (list(range(3, CALLS)), list(range(4, CALLS)))
    with collected.lock:
        pids = {ex.conn.pid for ex in collected.items}
    assert pids == {client.pid, server.proc.pid}


def test_gzip_response_bytes_on_the_wire_are_compressed(
    env: Env, start_server: Callable[[bool], Server]
) -> None:
    """Sanity of the server itself: what the capture decodes really was gzip on the wire."""
    server = start_server(False)
    from tests.capture.traffic import raw_exchange

    raw = raw_exchange(
        server.port,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-test-seq: 5\r\nConnection: close\r\n\r\n",
        read_until_close=True,
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    assert gzip.decompress(body) == expected_body(5, "/v1/models")


def test_a_private_libssl_is_found_when_it_is_opened(
    env: Env, start_server: Callable[[bool], Server], tmp_path: Path
) -> None:
    """A process that brings its own copy of libssl (as a container image does) is captured
    from its first call: the capture sees the library being opened and attaches at once."""
    system_lib = _loaded_libssl()
    private = tmp_path / "lib"
    private.mkdir()
    shutil.copy2(system_lib, private / Path(system_lib).name)
    copy_ino = os.stat(private / Path(system_lib).name).st_ino
    server = start_server(True)
    proc = _spawn_python_client(
        env, server, "httpx", environ={**os.environ, "LD_LIBRARY_PATH": str(private)}
    )
    _out, err = proc.communicate(timeout=45)
    assert proc.returncode == 0, err
    targets = getattr(env.service.source, "tls_targets", lambda: [])()
    assert [t.found_by for t in targets if t.ino == copy_ino] == ["open"]
    col = env.collected
    col.wait(lambda: len(col.of(proc.pid, Role.CLIENT)) >= CALLS)
    time.sleep(0.3)
    client_side = col.of(proc.pid, Role.CLIENT)
    assert sorted(_check_exchange(ex, server, True) for ex in client_side) == list(range(CALLS))


def _loaded_libssl() -> str:
    import ssl

    assert ssl.OPENSSL_VERSION
    # The library Python's ssl module loads by soname; wheels (psycopg's, for one) may have
    # mapped their own renamed copies into this process too.
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and Path(parts[5].strip()).name.startswith("libssl.so"):
            return parts[5].strip()
    pytest.skip("this Python links OpenSSL statically")


def test_cgroup_filter_keeps_only_that_cgroup(
    env: Env, start_server: Callable[..., Server]
) -> None:
    """With a cgroup filter, only tasks in that cgroup (a pod's containers) are captured: the
    client moved into a fresh cgroup is, the server outside it is not."""
    root = cgroup2_root()
    if root is None or not os.access(root, os.W_OK):
        pytest.skip("no writable cgroup v2 hierarchy")
    group = Path(root) / f"infersight-test-{os.getpid()}-{time.monotonic_ns()}"
    group.mkdir()
    try:
        port = free_port()
        server = start_server(False, port)
        client = _spawn_python_client(env, server, "httpx", "--wait-for-go")
        assert client.stdout is not None
        assert client.stdin is not None
        assert client.stdout.readline().strip() == "ready"
        (group / "cgroup.procs").write_text(str(client.pid))
        cg_id = cgroup_id_of(client.pid)
        assert cg_id == group.stat().st_ino
        collected = Collected()
        service = CaptureService(
            CaptureConfig(filter_cgroup_ids=frozenset({cg_id}), seed_existing=False),
            sink=collected.add,
        )
        service.start()
        try:
            client.stdin.write("go\n")
            client.stdin.flush()
            _out, err = client.communicate(timeout=45)
            assert client.returncode == 0, err
            collected.wait(lambda: len(collected.of(client.pid, Role.CLIENT)) >= CALLS)
            time.sleep(0.3)
        finally:
            service.stop()
        client_side = collected.of(client.pid, Role.CLIENT)
        assert sorted(_check_exchange(ex, server, False) for ex in client_side) == list(
            range(CALLS)
        )
        assert {ex.conn.cgroup_id for ex in client_side} == {cg_id}
        with collected.lock:
            assert {ex.conn.pid for ex in collected.items} == {client.pid}
    finally:
        if (group / "cgroup.procs").exists():
            for pid in (group / "cgroup.procs").read_text().split():
                (Path(root) / "cgroup.procs").write_text(pid)
        group.rmdir()
