"""Hostile input to the relay gets the status the OTLP specification asks for, reaches neither
the buffer nor the collector, and does not stop the relay from serving the next export."""

from __future__ import annotations

import gzip
import json
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import status_pb2  # type: ignore[import-untyped]

from agent.main import Agent
from tests.conftest import CollectorProcess, start_collector
from tests.relay.support import metrics, relay_agent, relay_items, trace_request, wait_for

pytestmark = pytest.mark.timeout(120)

PROTOBUF = "application/x-protobuf"
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Agent, CollectorProcess]]:
    tmp: Path = tmp_path_factory.mktemp("relay-hostile")
    collector = start_collector(tmp / "store.duckdb", tmp / "collector.log")
    agent = relay_agent(
        collector.otlp_http, relay={"max_body_bytes": LIMIT, "buffer_bytes": 4 * LIMIT}
    )
    agent.start()
    yield agent, collector
    agent.stop()
    collector.stop()


def _url(agent: Agent, signal: str = "traces") -> str:
    assert agent.relay is not None
    return f"http://127.0.0.1:{agent.relay.http_port}/v1/{signal}"


def _gzip_bomb() -> bytes:
    # 64 MiB of zeros inflate from about 64 KiB: far past the limit once inflated
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    return b"".join(z.compress(chunk) for _ in range(64)) + z.flush()


VALID = trace_request(3, service="hostile-valid").SerializeToString()

CASES = [
    # name, content type, content encoding, body, expected status
    ("garbage protobuf", PROTOBUF, None, b"\xff\xfe\xfd not protobuf \x00\x01", 400),
    ("truncated protobuf", PROTOBUF, None, VALID[: len(VALID) // 2], 400),
    ("wrong wire type", PROTOBUF, None, b"\x0a\x02\x08", 400),
    ("malformed json", "application/json", None, b'{"resourceSpans": [', 400),
    ("json of the wrong shape", "application/json", None, b'{"resourceSpans": 7}', 400),
    (
        "json id not hex",
        "application/json",
        None,
        json.dumps(
            {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "00"}]}]}]}
        ).encode(),
        400,
    ),
    ("wrong content type", "text/plain", None, VALID, 415),
    ("no content type", None, None, VALID, 415),
    ("unknown encoding", PROTOBUF, "br", VALID, 415),
    ("corrupt gzip", PROTOBUF, "gzip", b"\x1f\x8b\x08\x00garbage-not-deflate", 400),
    ("truncated gzip", PROTOBUF, "gzip", gzip.compress(VALID)[:-12], 400),
    ("gzip bomb", PROTOBUF, "gzip", _gzip_bomb(), 413),
    ("body over the limit", PROTOBUF, None, bytes(LIMIT + 10), 413),
]


@pytest.mark.parametrize(
    ("content_type", "encoding", "body", "status"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_hostile_http_bodies_get_the_right_status(
    stack: tuple[Agent, CollectorProcess],
    content_type: str | None,
    encoding: str | None,
    body: bytes,
    status: int,
) -> None:
    agent, _ = stack
    before = metrics(agent)['infersight_agent_relay_requests_total{outcome="invalid"}']
    headers = {}
    if content_type:
        headers["content-type"] = content_type
    if encoding:
        headers["content-encoding"] = encoding
    resp = httpx.post(_url(agent), content=body, headers=headers, timeout=30)
    assert resp.status_code == status, resp.text
    error = status_pb2.Status()
    if resp.headers["content-type"].startswith(PROTOBUF):
        error.ParseFromString(resp.content)
    else:
        error.message = resp.json()["message"]
    assert error.message
    after = metrics(agent)
    assert after['infersight_agent_relay_requests_total{outcome="invalid"}'] == before + 1
    assert relay_items(agent, "accepted") in (0, 3)  # only the valid export below counts
    assert after["infersight_agent_relay_buffer_bytes"] == 0


def test_declared_length_over_the_limit_is_refused_before_reading(
    stack: tuple[Agent, CollectorProcess],
) -> None:
    agent, _ = stack
    assert agent.relay is not None
    # only the head is sent: the answer must come without the body ever arriving
    with socket.create_connection(("127.0.0.1", agent.relay.http_port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: relay\r\nContent-Type: "
            + PROTOBUF.encode()
            + f"\r\nContent-Length: {LIMIT * 4}\r\n\r\n".encode()
        )
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head


def test_other_methods_and_paths(stack: tuple[Agent, CollectorProcess]) -> None:
    agent, _ = stack
    assert httpx.get(_url(agent)).status_code == 405
    assert httpx.post(_url(agent, "profiles"), content=VALID).status_code == 404


def test_hostile_grpc_messages(stack: tuple[Agent, CollectorProcess]) -> None:
    agent, _ = stack
    assert agent.relay is not None
    with grpc.insecure_channel(f"127.0.0.1:{agent.relay.grpc_port}") as channel:
        export = channel.unary_unary(TRACE_EXPORT)
        for body in (b"\xff\xfe garbage", VALID[: len(VALID) // 2]):
            with pytest.raises(grpc.RpcError) as bad:
                export(body, timeout=10)
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as big:
            export(bytes(LIMIT + 10), timeout=10)
        assert big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_after_all_that_a_valid_export_still_arrives_alone(
    stack: tuple[Agent, CollectorProcess],
) -> None:
    agent, collector = stack
    resp = httpx.post(_url(agent), content=VALID, headers={"content-type": PROTOBUF})
    assert resp.status_code == 200
    assert wait_for(lambda: relay_items(agent, "relayed") == 3)
    assert relay_items(agent, "accepted") == 3
    # nothing of the hostile requests reached the collector
    assert collector.sql("SELECT count(*) FROM spans")[0][0] == 3
