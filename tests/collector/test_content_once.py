"""Content stored once, plain GenAI columns read in one pass, JSON columns stored as sent.

Decoder-level checks of which content attributes leave `spans.attributes` (only those whose
`genai_content` value is exactly what was sent), property checks of the normalizer's one-pass
column rules against their plain definition, and the writer's hand-over of JSON columns to a
real DuckDB file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.genai import normalize as nz
from collector.genai.content import read_parts_list, read_semconv_messages
from collector.otlp.decode_traces import decode_traces
from collector.otlp.limits import ReceiverLimits
from store.database import Database
from store.writer import StoreWriter
from tests.collector.otlp_support.payloads import first_span, trace_request

SEMCONV_IN = [{"role": "user", "parts": [{"type": "text", "content": "Name a colour."}]}]
SEMCONV_OUT = [
    {"role": "assistant", "parts": [{"type": "text", "content": "Teal."}], "finish_reason": "stop"}
]


def _decode(attrs: dict[str, str], limits: ReceiverLimits | None = None) -> tuple[Any, Any]:
    req = trace_request(1)
    span = first_span(req)
    for key, value in {"gen_ai.operation.name": "chat", **attrs}.items():
        span.attributes.add(key=key).value.string_value = value
    out = decode_traces(req, limits or ReceiverLimits(), 0)
    (row,) = out.tables["spans"].to_pylist()
    (content,) = out.tables["genai_content"].to_pylist()
    return json.loads(row["attributes"]), content


def test_content_sent_in_the_schema_is_stored_once_as_sent() -> None:
    sent_in = json.dumps(SEMCONV_IN)  # with the default separators: spaces kept as sent
    sent_out = json.dumps(SEMCONV_OUT, separators=(",", ":"))
    system = json.dumps([{"type": "text", "content": "Be brief."}])
    attrs, content = _decode(
        {
            "gen_ai.input.messages": sent_in,
            "gen_ai.output.messages": sent_out,
            "gen_ai.system_instructions": system,
        }
    )
    for key in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"):
        assert key not in attrs
    assert attrs == {"k": "v", "gen_ai.operation.name": "chat"}
    assert content["input_messages"] == sent_in
    assert content["output_messages"] == sent_out
    assert content["system_instructions"] == system


def test_rewritten_content_keeps_the_original_attribute() -> None:
    openai_shaped = json.dumps([{"role": "user", "content": "Name a colour."}])
    other_words = json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": "Teal."}],
                "finish_reason": "end_turn",
            }
        ]
    )
    attrs, content = _decode(
        {"gen_ai.input.messages": openai_shaped, "gen_ai.output.messages": other_words}
    )
    assert attrs["gen_ai.input.messages"] == openai_shaped
    assert attrs["gen_ai.output.messages"] == other_words
    assert json.loads(content["input_messages"]) == SEMCONV_IN
    assert json.loads(content["output_messages"])[0]["finish_reason"] == "stop"


def test_both_copies_on_request() -> None:
    sent = json.dumps(SEMCONV_IN)
    attrs, content = _decode(
        {"gen_ai.input.messages": sent}, ReceiverLimits(content_in_attributes=True)
    )
    assert attrs["gen_ai.input.messages"] == sent
    assert json.loads(content["input_messages"]) == SEMCONV_IN


# -- the normalizer's pieces against their plain definitions ---------------------------------

_known = sorted(nz._PLAIN_BY_KEY)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=2**64),
    st.floats(allow_nan=True),
    st.sampled_from(["", "12", " 7 ", "true", "gpt-4o", "1e3", "nan"]),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=500, deadline=None)
@given(
    attrs=st.dictionaries(st.one_of(st.sampled_from(_known), st.text(max_size=8)), _values),
    pad=st.integers(min_value=0, max_value=60),
)
def test_one_pass_columns_follow_the_key_preference(attrs: dict[str, Any], pad: int) -> None:
    attrs = {**{f"x.{i}": i for i in range(pad)}, **attrs}  # wide spans take the other path
    got: dict[str, Any] = {}
    nz._plain_columns(attrs, got)
    expected = {}
    for column, keys, conv in nz._PLAIN_COLUMNS:
        for key in keys:
            if key in attrs and conv(attrs[key]) is not None:
                expected[column] = conv(attrs[key])
                break
    assert got == expected


_parts = st.lists(
    st.one_of(st.fixed_dictionaries({"type": st.just("text"), "content": st.text()}), st.text()),
    max_size=3,
)
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.one_of(st.sampled_from(["user", "assistant", ""]), st.none()), "parts": _parts},
        optional={"finish_reason": st.sampled_from(["stop", "length", "end_turn", "STOP", "x"])},
    ),
    max_size=3,
)


@settings(max_examples=500, deadline=None)
@given(messages=_messages, output=st.booleans(), as_text=st.booleans())
def test_as_sent_means_unchanged(
    messages: list[dict[str, Any]], output: bool, as_text: bool
) -> None:
    value: Any = json.dumps(messages) if as_text else messages
    read, as_sent = read_semconv_messages(value, output)
    # "As sent" exactly when normalization changed nothing: any rewrite (a role filled in, a
    # loose part dropped, a finish reason respelled) leaves the attribute where it was.
    assert as_sent == (bool(messages) and read == messages)


def test_parts_lists_as_sent() -> None:
    parts = [{"type": "text", "content": "Be brief."}]
    assert read_parts_list(json.dumps(parts)) == (parts, True)
    assert read_parts_list("Be brief.") == ([{"type": "text", "content": "Be brief."}], False)
    assert read_parts_list(json.dumps({"type": "text", "content": "x"}))[1] is False
    assert read_parts_list(json.dumps([parts[0], "loose"])) == (parts, False)


# -- the writer hands JSON columns over as JSON ---------------------------------------------


def test_writer_stores_json_columns_as_json(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    writer = StoreWriter(db)
    writer.start()
    try:
        out = decode_traces(trace_request(3), ReceiverLimits(), 0)
        assert writer.submit(out.tables).result(30) == 3
        cur = db.cursor()
        rows = cur.execute(
            "SELECT typeof(attributes), json_valid(attributes), attributes->>'$.k',"
            " json_array_length(events) FROM spans"
        ).fetchall()
        assert rows == [("JSON", True, "v", 0)] * 3
        # Schema-conformant tables without the marking still go in (tests, other producers).
        plain = out.tables["spans"].slice(0, 1)
        assert pa.types.is_string(plain.schema.field("attributes").type)
        assert writer.submit({"spans": plain}).result(30) == 1
    finally:
        writer.stop()
        db.close()
    reopened = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert reopened.execute("SELECT count(*) FROM spans WHERE json_valid(resource)").fetchone() == (
        4,
    )
    reopened.close()
