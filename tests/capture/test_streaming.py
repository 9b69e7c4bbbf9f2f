"""Body decoders: content encodings, server-sent events and NDJSON, fed in arbitrary pieces."""

from __future__ import annotations

import gzip
import itertools
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.capture.streaming import (
    ContentDecoder,
    NdjsonDecoder,
    SseDecoder,
    stream_decoder_for,
)


def feed_bytewise(dec: ContentDecoder, data: bytes) -> bytes:
    return b"".join(dec.feed(data[i : i + 1]) for i in range(len(data)))


def test_gzip_bytewise_and_identity() -> None:
    payload = b"the quick brown fox " * 100
    assert feed_bytewise(ContentDecoder("gzip", 1 << 20), gzip.compress(payload)) == payload
    assert feed_bytewise(ContentDecoder("x-gzip", 1 << 20), gzip.compress(payload)) == payload
    ident = ContentDecoder("identity", 1 << 20)
    assert ident.feed(b"abc") == b"abc"
    assert not ident.active


def test_deflate_both_framings_bytewise() -> None:
    payload = b"deflate me " * 80
    obj = zlib.compressobj(wbits=-15)
    raw = obj.compress(payload) + obj.flush()
    assert feed_bytewise(ContentDecoder("deflate", 1 << 20), zlib.compress(payload)) == payload
    assert feed_bytewise(ContentDecoder("deflate", 1 << 20), raw) == payload


def test_unknown_encoding_passes_through_and_says_so() -> None:
    dec = ContentDecoder("br", 1 << 20)
    assert dec.feed(b"\x8b\x02\x80") == b"\x8b\x02\x80"
    assert dec.undecoded
    assert ContentDecoder("gzip, br", 100).undecoded


def test_corrupt_input_fails_quietly() -> None:
    dec = ContentDecoder("gzip", 1 << 20)
    assert dec.feed(b"not gzip at all") == b""
    assert dec.failed
    assert dec.feed(b"more") == b""


def test_output_cap_against_decompression_bombs() -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)
    dec = ContentDecoder("gzip", 1000)
    out = dec.feed(bomb)
    assert len(out) == 1000
    assert dec.overflow


def test_sse_fields_line_endings_and_dispatch_rules() -> None:
    dec = SseDecoder()
    text = (
        b"\xef\xbb\xbf: comment\n\n"
        b"event: start\rdata: a\r\n\r\n"
        b"data: one\ndata:two\ndata\n\n"
        b"event: ping\n\n"  # no data: not dispatched, and the name does not leak
        b"id: 1\nretry: 5\ndata: last\n\n"
        b"data: unterminated"
    )
    events = dec.feed(text, 5)
    assert [(e.event, e.data) for e in events] == [
        ("start", b"a"),
        (None, b"one\ntwo\n"),
        (None, b"last"),
    ]
    assert dec.finish(6) == []


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=10))
def test_sse_any_split_same_events(cuts: list[int]) -> None:
    text = (
        b'event: a\r\ndata: {"x":1}\r\n\r\nevent: b\rdata: y\r\rdata: z\n\n'
        b": c\r\n\r\ndata: w\r\n\r\n"
    )
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    dec = SseDecoder()
    events = []
    for a, b in itertools.pairwise(points):
        events += dec.feed(text[a:b], a)
    assert [(e.event, e.data) for e in events] == [
        ("a", b'{"x":1}'),
        ("b", b"y"),
        (None, b"z"),
        (None, b"w"),
    ]


def test_ndjson_lines_and_final_line() -> None:
    dec = NdjsonDecoder()
    events = dec.feed(b'{"a":1}\r\n\n{"b"', 1) + dec.feed(b':2}\n{"c":3}', 2)
    events += dec.finish(3)
    assert [(e.data, e.arrival_mono_ns) for e in events] == [
        (b'{"a":1}', 1),
        (b'{"b":2}', 2),
        (b'{"c":3}', 3),
    ]


def test_stream_decoder_by_content_type() -> None:
    assert isinstance(stream_decoder_for("text/event-stream; charset=utf-8"), SseDecoder)
    assert isinstance(stream_decoder_for("application/x-ndjson"), NdjsonDecoder)
    assert stream_decoder_for("application/json") is None
