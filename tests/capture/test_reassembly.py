"""HTTP/1.x reassembly from byte chunks: every framing, split anywhere, garbage never raises."""

from __future__ import annotations

import gzip
import itertools
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.events import Direction
from agent.capture.exchange import ConnectionInfo, HttpExchange, Role
from agent.capture.reassembly import H2_PREFACE, HttpConnection

OUT = Direction.EGRESS
IN = Direction.INGRESS


def client(**kw: int) -> HttpConnection:
    return HttpConnection(ConnectionInfo(pid=7, role=Role.CLIENT), Role.CLIENT, **kw)


def chunked(*parts: bytes, ext: bool = False, trailer: bytes = b"") -> bytes:
    out = b""
    for p in parts:
        out += b"%x%s\r\n%s\r\n" % (len(p), b";name=val" if ext else b"", p)
    return out + b"0\r\n" + trailer + b"\r\n"


def req(
    method: str = "POST",
    path: str = "/v1/chat/completions",
    body: bytes = b"{}",
    extra: bytes = b"",
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: api.example\r\n".encode() + extra
    if body:
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def resp(body: bytes = b'{"ok":true}', status: int = 200, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        % (status, len(body))
        + extra
        + b"\r\n"
        + body
    )


def run(
    h: HttpConnection, steps: list[tuple[Direction, bytes]], close: bool = True, t0: int = 1000
) -> list[HttpExchange]:
    out: list[HttpExchange] = []
    t = t0
    for direction, data in steps:
        out += h.feed(direction, data, t)
        t += 10
    if close:
        out += h.close(t)
    return out


def test_content_length_exchange_with_times() -> None:
    h = client()
    out = h.feed(OUT, req(body=b'{"a":1}')[:20], 100)
    out += h.feed(OUT, req(body=b'{"a":1}')[20:], 110)
    out += h.feed(IN, resp()[:30], 200)
    assert out == []
    out += h.feed(IN, resp()[30:], 250)
    assert len(out) == 1
    ex = out[0]
    assert (ex.method, ex.path, ex.status) == ("POST", "/v1/chat/completions", 200)
    assert ex.request_body == b'{"a":1}'
    assert ex.response_body == b'{"ok":true}'
    assert ex.request_headers["host"] == "api.example"
    assert ex.response_headers["content-type"] == "application/json"
    assert (ex.start_mono_ns, ex.request_end_mono_ns) == (100, 110)
    assert (ex.first_byte_mono_ns, ex.end_mono_ns) == (200, 250)
    assert not (ex.request_truncated)
    assert not (ex.response_truncated)
    assert not (ex.response_missing)
    assert ex.conn.role is Role.CLIENT
    assert not ex.is_streaming


def test_server_role_reads_requests_from_ingress() -> None:
    h = HttpConnection(ConnectionInfo(pid=1, role=Role.SERVER), Role.SERVER)
    out = run(h, [(IN, req()), (OUT, resp())])
    assert [(e.method, e.status) for e in out] == [("POST", 200)]


def test_role_is_inferred_from_the_first_bytes() -> None:
    h = HttpConnection(ConnectionInfo(pid=1), None)
    out = run(h, [(IN, req()), (OUT, resp())])
    assert len(out) == 1
    assert h.role is Role.SERVER
    assert out[0].conn.role is Role.SERVER
    h = HttpConnection(ConnectionInfo(pid=1), None)
    out = run(h, [(OUT, req()), (IN, resp())])
    assert h.role is Role.CLIENT
    assert len(out) == 1


def test_role_inferred_from_a_response_seen_first() -> None:
    h = HttpConnection(ConnectionInfo(pid=1), None)
    assert h.feed(IN, resp(), 1) == []  # an answer to something we never saw
    assert h.role is Role.CLIENT
    out = run(h, [(OUT, req(method="GET", body=b"")), (IN, resp(b"x"))])
    assert [(e.method, e.response_body) for e in out] == [("GET", b"x")]
    assert h.orphan_responses == 1


def test_chunked_response_with_extensions_and_trailers() -> None:
    body = chunked(b'{"ok"', b":true}", ext=True, trailer=b"X-Checksum: 1\r\n")
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    out = run(client(), [(OUT, req()), (IN, raw)], close=False)
    assert len(out) == 1
    assert out[0].response_body == b'{"ok":true}'
    assert not out[0].response_truncated


def test_chunked_request_body() -> None:
    raw = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(
        b"abc", b"defg"
    )
    out = run(client(), [(OUT, raw), (IN, resp())], close=False)
    assert out[0].request_body == b"abcdefg"


def test_gzip_response_with_content_length() -> None:
    payload = b'{"id":"x","choices":[]}' * 20
    raw = resp(gzip.compress(payload), extra=b"Content-Encoding: gzip\r\n")
    out = run(client(), [(OUT, req()), (IN, raw)], close=False)
    assert out[0].response_body == payload


def test_gzip_inside_chunked_fed_byte_by_byte() -> None:
    payload = b"hello compressed world " * 50
    comp = gzip.compress(payload)
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(comp[:17], comp[17:200], comp[200:])
    )
    h = client()
    out = h.feed(OUT, req(), 1)
    for i in range(len(raw)):
        out += h.feed(IN, raw[i : i + 1], 2 + i)
    assert len(out) == 1
    assert out[0].response_body == payload


def test_deflate_zlib_and_raw() -> None:
    payload = b"deflated body " * 30
    wrapped = zlib.compress(payload)
    raw_obj = zlib.compressobj(wbits=-15)
    raw_deflate = raw_obj.compress(payload) + raw_obj.flush()
    for comp in (wrapped, raw_deflate):
        raw = resp(comp, extra=b"Content-Encoding: deflate\r\n")
        out = run(client(), [(OUT, req()), (IN, raw)], close=False)
        assert out[0].response_body == payload


def test_corrupt_gzip_marks_truncated_and_never_raises() -> None:
    raw = resp(b"\x1f\x8b\x08\x00garbage-not-gzip", extra=b"Content-Encoding: gzip\r\n")
    out = run(client(), [(OUT, req()), (IN, raw)], close=False)
    assert len(out) == 1
    assert out[0].response_truncated


def test_keep_alive_reuse() -> None:
    h = client()
    steps = []
    for i in range(5):
        steps += [(OUT, req(path=f"/r{i}")), (IN, resp(f"b{i}".encode()))]
    out = run(h, steps)
    assert [(e.path, e.response_body) for e in out] == [
        (f"/r{i}", f"b{i}".encode()) for i in range(5)
    ]


def test_pipelining_with_head_in_the_middle() -> None:
    h = client()
    requests = (
        req(path="/a")
        + req(method="HEAD", path="/b", body=b"")
        + req(method="GET", path="/c", body=b"")
    )
    # A HEAD response announces a length but has no body.
    responses = (
        resp(b"AAA")
        + resp(b"", extra=b"").replace(b"Content-Length: 0", b"Content-Length: 999")
        + resp(b"C")
    )
    out = run(h, [(OUT, requests), (IN, responses)], close=False)
    assert [(e.method, e.path, e.response_body) for e in out] == [
        ("POST", "/a", b"AAA"),
        ("HEAD", "/b", b""),
        ("GET", "/c", b"C"),
    ]
    assert out[1].response_headers["content-length"] == "999"


def test_interim_100_continue() -> None:
    h = client()
    out = run(
        h,
        [
            (OUT, req(extra=b"Expect: 100-continue\r\n")),
            (IN, b"HTTP/1.1 100 Continue\r\n\r\n"),
            (IN, resp(b"done")),
        ],
        close=False,
    )
    assert [(e.status, e.response_body) for e in out] == [(200, b"done")]
    assert out[0].first_byte_mono_ns == 1020  # the final response's first byte


def test_statuses_without_body() -> None:
    raw = b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n"
    out = run(client(), [(OUT, req(path="/x") + req(path="/y")), (IN, raw)], close=False)
    assert [(e.status, e.response_body) for e in out] == [(204, b""), (304, b"")]


def test_body_until_close() -> None:
    h = client()
    out = run(
        h,
        [
            (OUT, req()),
            (IN, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart1"),
            (IN, b"part2"),
        ],
        close=False,
    )
    assert out == []
    out = h.close(5000)
    assert len(out) == 1
    assert out[0].response_body == b"part1part2"
    assert not out[0].response_truncated
    assert out[0].end_mono_ns == 5000


def test_response_missing_on_close() -> None:
    h = client()
    out = run(h, [(OUT, req(path="/a")), (IN, resp()), (OUT, req(path="/b"))], close=False)
    assert len(out) == 1
    out = h.close(9999)
    assert len(out) == 1
    ex = out[0]
    assert ex.path == "/b"
    assert ex.response_missing
    assert ex.status is None
    assert ex.end_mono_ns == 9999


def test_response_cut_by_close_is_truncated() -> None:
    h = client()
    out = run(h, [(OUT, req()), (IN, resp(b"0123456789")[:-4])])
    assert len(out) == 1
    assert out[0].response_truncated
    assert out[0].response_body == b"012345"
    assert not out[0].response_missing


def test_idle_connection_expires_pending_requests() -> None:
    h = client()
    assert h.feed(OUT, req(), 1_000) == []
    assert h.expire(2_000, idle_ns=10_000) == []
    out = h.expire(20_000, idle_ns=10_000)
    assert len(out) == 1
    assert out[0].response_missing


def test_lost_bytes_inside_a_body_keep_the_connection_in_step() -> None:
    h = client()
    body = b"x" * 1000
    out = h.feed(OUT, req(), 1)
    raw = resp(body)
    head_len = len(raw) - len(body)
    out += h.feed(IN, raw[: head_len + 100], 2, lost_bytes=900)  # 900 body bytes uncopied
    assert len(out) == 1
    assert out[0].response_truncated
    assert out[0].response_body == b"x" * 100
    out = run(h, [(OUT, req(path="/next")), (IN, resp(b"fine"))])
    assert [(e.path, e.response_body, e.response_truncated) for e in out] == [
        ("/next", b"fine", False)
    ]


def test_lost_bytes_inside_a_chunk() -> None:
    h = client()
    h.feed(OUT, req(), 1)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = b"y" * 500
    out = h.feed(IN, head + b"1f4\r\n" + data[:50], 2, lost_bytes=450)
    out += h.feed(IN, b"\r\n3\r\nend\r\n0\r\n\r\n", 3)
    assert len(out) == 1
    assert out[0].response_truncated
    assert out[0].response_body == b"y" * 50 + b"end"


def test_lost_request_head_does_not_shift_pairing() -> None:
    h = client()
    out = h.feed(OUT, req(path="/a")[:10], 1, lost_bytes=len(req(path="/a")) - 10)
    out += h.feed(IN, resp(b"A"), 2)  # the answer to the request we could not read
    out += run(h, [(OUT, req(path="/b")), (IN, resp(b"B"))], close=False)
    assert [(e.path, e.response_body) for e in out] == [("/b", b"B")]
    assert h.lost_requests == 1


def test_lost_response_head_gives_up_its_request_only() -> None:
    h = client()
    out = h.feed(OUT, req(path="/a") + req(path="/b"), 1)
    out += h.feed(IN, resp(b"A")[:5], 2, lost_bytes=len(resp(b"A")) - 5)
    out += h.feed(IN, resp(b"B"), 3)
    assert [(e.path, e.response_truncated, e.response_body) for e in out] == [
        ("/a", True, b""),
        ("/b", False, b"B"),
    ]


def test_sse_events_with_arrival_times() -> None:
    h = client()
    h.feed(OUT, req(body=b'{"stream":true}'), 1)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    events = [
        b": keep-alive comment\r\n\r\n",
        b'event: message_start\r\ndata: {"a":1}\r\n\r\n',
        b"data: line one\ndata: line two\n\n",
        b'id: 7\nretry: 100\ndata: {"b"',  # completed by the next chunk
        b":2}\n\n",
        b"data: [DONE]\n\n",
    ]
    out = h.feed(IN, head, 100)
    for i, ev in enumerate(events):
        out += h.feed(IN, chunked(ev)[:-5], 200 + i * 100)  # chunk without the last-chunk
    out += h.feed(IN, b"0\r\n\r\n", 900)
    assert len(out) == 1
    ex = out[0]
    assert ex.is_streaming
    assert [(e.event, e.data, e.arrival_mono_ns) for e in ex.stream_events] == [
        ("message_start", b'{"a":1}', 300),
        (None, b"line one\nline two", 400),
        (None, b'{"b":2}', 600),
        (None, b"[DONE]", 700),
    ]
    assert ex.end_mono_ns == 900
    assert ex.response_body.startswith(b": keep-alive")


def test_ndjson_stream_with_arrival_times() -> None:
    h = client()
    h.feed(OUT, req(path="/api/chat"), 1)
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    out = h.feed(IN, head, 10)
    out += h.feed(IN, b'8\r\n{"n":1}\n\r\n', 20)
    out += h.feed(IN, b'4\r\n{"n"\r\n', 30)
    out += h.feed(IN, b"5\r\n:2}\n\n\r\n", 40)
    out += h.feed(IN, b'6\r\n{"n":3\r\n', 50)
    out += h.feed(IN, b"1\r\n}\r\n0\r\n\r\n", 60)  # last line without a newline
    assert len(out) == 1
    assert [(e.data, e.arrival_mono_ns) for e in out[0].stream_events] == [
        (b'{"n":1}', 20),
        (b'{"n":2}', 40),
        (b'{"n":3}', 60),
    ]


def test_http2_preface_is_detected_and_ignored() -> None:
    h = client()
    out = h.feed(OUT, H2_PREFACE[:10], 1)
    out += h.feed(OUT, H2_PREFACE[10:] + b"\x00\x00\x12\x04\x00\x00\x00\x00\x00", 2)
    out += h.feed(IN, b"\x00\x00\x00\x04\x01\x00\x00\x00\x00", 3)
    out += h.close(4)
    assert out == []
    assert h.http2
    h2 = HttpConnection(ConnectionInfo(pid=1), None)
    h2.feed(IN, H2_PREFACE, 1)
    assert h2.http2
    assert h2.role is Role.SERVER


def test_upgrade_ends_http_parsing() -> None:
    h = client()
    up = req(method="GET", path="/ws", body=b"", extra=b"Upgrade: websocket\r\n")
    out = run(
        h,
        [
            (OUT, up),
            (IN, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
            (OUT, b"\x81\x85binary-frame"),
            (IN, b"\x81\x02hi"),
        ],
    )
    assert [(e.path, e.status) for e in out] == [("/ws", 101)]
    assert h.upgraded


def test_body_cap_marks_truncated() -> None:
    h = client(max_body_bytes=10)
    out = run(h, [(OUT, req()), (IN, resp(b"0123456789ABCDEF"))], close=False)
    assert out[0].response_body == b"0123456789"
    assert out[0].response_truncated


def test_headers_lowercased_repeats_joined_folding() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSET-COOKIE: b=2\r\nX-Long: one\r\n"
        b"  two\r\nContent-Length: 0\r\n\r\n"
    )
    out = run(client(), [(OUT, req()), (IN, raw)], close=False)
    assert out[0].response_headers["set-cookie"] == "a=1, b=2"
    assert out[0].response_headers["x-long"] == "one two"


def test_bare_lf_messages() -> None:
    raw_req = b"GET /lf HTTP/1.1\nHost: h\n\n"
    raw_resp = b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"
    out = run(client(), [(OUT, raw_req), (IN, raw_resp)], close=False)
    assert [(e.path, e.response_body) for e in out] == [("/lf", b"ok")]


def test_not_http_gives_nothing() -> None:
    h = client()
    out = run(
        h,
        [
            (OUT, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            (IN, b"\x16\x03\x03\x00\x7a\x02"),
            (OUT, b"*1\r\n$4\r\nPING\r\n"),
        ],
    )
    assert out == []
    assert not h.is_http


def test_resync_after_garbage_at_a_chunk_boundary() -> None:
    h = client()
    out = run(
        h,
        [
            (OUT, b"garbage-start"),
            (IN, b"more garbage"),
            (OUT, req(path="/ok")),
            (IN, resp(b"fine")),
        ],
        close=False,
    )
    assert [(e.path, e.response_body) for e in out] == [("/ok", b"fine")]


# -- every byte boundary --------------------------------------------------------------------

SSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    + chunked(b'event: delta\r\ndata: {"t":"he"}\r\n\r\n', b"data: [DONE]\n\n")
)
GZIP_RESPONSE = resp(
    gzip.compress(b'{"usage":{"total_tokens":42}}'), extra=b"Content-Encoding: gzip\r\n"
)
CHUNKED_RESPONSE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(
    b'{"a":', b'"b"}', ext=True
)
CONVERSATIONS = {
    "content-length": (req(body=b'{"model":"m"}'), resp(b'{"id":"r"}')),
    "sse": (req(body=b'{"stream":true}'), SSE_RESPONSE),
    "gzip": (req(method="GET", path="/v1/models", body=b""), GZIP_RESPONSE),
    "chunked": (req(), CHUNKED_RESPONSE),
}


def _summary(out: list[HttpExchange]) -> list[tuple[object, ...]]:
    return [
        (
            e.method,
            e.path,
            e.request_body,
            e.status,
            e.response_body,
            [(s.event, s.data) for s in e.stream_events],
            e.request_truncated,
            e.response_truncated,
            e.response_missing,
        )
        for e in out
    ]


def _reference(name: str) -> list[tuple[object, ...]]:
    request, response = CONVERSATIONS[name]
    return _summary(run(client(), [(OUT, request), (IN, response)]))


def test_every_single_split_point_gives_the_same_exchange() -> None:
    for name, (request, response) in CONVERSATIONS.items():
        expected = _reference(name)
        assert len(expected) == 1
        assert not expected[0][-3]
        for i in range(len(request) + 1):
            got = run(client(), [(OUT, request[:i]), (OUT, request[i:]), (IN, response)])
            assert _summary(got) == expected, (name, "request", i)
        for i in range(len(response) + 1):
            got = run(client(), [(OUT, request), (IN, response[:i]), (IN, response[i:])])
            assert _summary(got) == expected, (name, "response", i)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(CONVERSATIONS)),
    req_cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    resp_cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_random_splits_give_the_same_exchange(
    name: str, req_cuts: list[int], resp_cuts: list[int]
) -> None:
    request, response = CONVERSATIONS[name]

    def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
        points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
        return [data[a:b] for a, b in itertools.pairwise(points)]

    steps = [(OUT, p) for p in pieces(request, req_cuts)]
    steps += [(IN, p) for p in pieces(response, resp_cuts)]
    assert _summary(run(client(), steps)) == _reference(name)


def test_sse_arrival_times_follow_the_split() -> None:
    request, response = CONVERSATIONS["sse"]
    # A lone CR already ends a line in SSE, so the blank line is complete at the second CR.
    first_event_end = response.index(b"}\r\n\r\n") + 4
    for cut in range(first_event_end - 3, first_event_end + 3):
        h = client()
        h.feed(OUT, request, 1)
        out = h.feed(IN, response[:cut], 100)
        out += h.feed(IN, response[cut:], 200)
        times = [e.arrival_mono_ns for e in out[0].stream_events]
        assert times[0] == (100 if cut >= first_event_end else 200), cut
        assert times[1] == 200


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([OUT, IN]),
            st.one_of(
                st.binary(max_size=64),
                st.sampled_from(
                    [
                        req(),
                        resp(),
                        H2_PREFACE,
                        b"HTTP/1.1 ",
                        b"GET ",
                        b"\r\n\r\n",
                        b"Transfer-Encoding: chunked\r\n",
                        b"0\r\n\r\n",
                        SSE_RESPONSE[:70],
                        GZIP_RESPONSE[:60],
                        b"ffffffff\r\n",
                    ]
                ),
            ),
            st.integers(min_value=0, max_value=3),
        ),
        max_size=25,
    ),
    role=st.sampled_from([Role.CLIENT, Role.SERVER, None]),
)
def test_garbage_never_raises(steps: list[tuple[Direction, bytes, int]], role: Role | None) -> None:
    h = HttpConnection(ConnectionInfo(pid=1), role, max_body_bytes=256)
    out: list[HttpExchange] = []
    for i, (direction, data, lost) in enumerate(steps):
        out += h.feed(direction, data, i, lost_bytes=lost * 7)
    out += h.expire(10_000, 1)
    out += h.close(20_000)
    for ex in out:
        assert isinstance(ex, HttpExchange)
        assert len(ex.response_body) <= 256
    assert h.close(30_000) == []
