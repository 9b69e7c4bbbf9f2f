"""The comparison of normalized GenAI columns with the test server's ground truth, shared by
the fixture tests (`tests/genai/`) and the end-to-end tests (`tests/instrumentation/`).

Takes a family name, a scenario, the server's record of the answer (`Served.to_json()`), the
canonical columns (from `normalize_span` or from a stored `spans` row) and the span's raw
attributes; fails with an assertion when a column differs from what really happened or holds
a value the library never sent.
"""

from __future__ import annotations

from typing import Any

from collector.genai import values
from tests.genai.expectations import (
    FAMILIES,
    OPERATIONS,
    TTFC_ABOVE_S,
    TTFC_BELOW_HEADERS_S,
    TTFC_BELOW_S,
)


def check_identity(
    family: str, scenario: str, served: dict[str, Any], cols: dict[str, Any]
) -> None:
    """Operation, provider, models, response id, error type, stream flag, server."""
    sends = FAMILIES[family]
    assert cols["gen_ai_operation_name"] == OPERATIONS[scenario]
    assert cols["gen_ai_provider_name"] == "openai"
    assert cols["gen_ai_request_model"] == served["request_model"]
    streamed = served["stream"]
    stream = cols.get("gen_ai_request_stream")
    if scenario == "embeddings":
        assert stream in (None, False)
    elif sends.stream_flag:
        assert stream is bool(streamed)
    else:
        assert stream in ((None, True) if streamed else (None, False))
    if sends.server:
        assert cols["server_address"] == "127.0.0.1"
        assert isinstance(cols["server_port"], int)
    if served["status"] != 200:
        assert cols.get("error_type")
        for key in (
            "gen_ai_response_id",
            "gen_ai_usage_input_tokens",
            "gen_ai_usage_output_tokens",
            "gen_ai_response_finish_reasons",
        ):
            assert cols.get(key) is None, key
        return
    assert cols.get("error_type") is None
    if scenario == "embeddings" and sends.embeddings_response_model_is_request:
        assert cols["gen_ai_response_model"] == served["request_model"]
    else:
        assert cols["gen_ai_response_model"] == served["response_model"]
    assert cols.get("gen_ai_response_id") == served["response_id"]


def check_usage(
    family: str,
    scenario: str,
    served: dict[str, Any],
    cols: dict[str, Any],
    raw_attrs: dict[str, Any],
) -> None:
    """Token counts: the truth when it was on the wire, nothing invented when it was not."""
    if served["status"] != 200:
        return
    sends = FAMILIES[family]
    if not served["stream"] or served["include_usage"]:
        assert cols["gen_ai_usage_input_tokens"] == served["input_tokens"]
        assert cols.get("gen_ai_usage_output_tokens") == served["output_tokens"]
        if sends.cache_read and scenario != "embeddings":
            assert cols["gen_ai_usage_cache_read_input_tokens"] == served["cached_input_tokens"]
    elif sends.estimates_unreported_usage:
        # The library counts tokens itself; what it reported is kept, though it is no truth.
        assert cols["gen_ai_usage_input_tokens"] == raw_attrs["gen_ai.usage.input_tokens"]
    else:
        assert cols.get("gen_ai_usage_input_tokens") is None
        assert cols.get("gen_ai_usage_output_tokens") is None


def check_finish_reasons(
    family: str, scenario: str, served: dict[str, Any], cols: dict[str, Any]
) -> None:
    """Finish reasons, rewritten to the conventions' enum."""
    if served["status"] != 200:
        return
    reasons = cols.get("gen_ai_response_finish_reasons")
    if scenario == "embeddings" or (
        served["stream"] and not FAMILIES[family].stream_finish_reasons
    ):
        assert reasons is None
    else:
        assert list(reasons) == values.finish_reasons(served["finish_reasons"])


def check_ttfc(family: str, served: dict[str, Any], cols: dict[str, Any]) -> None:
    """Time to first chunk: within tolerance of the server's for streams of libraries that
    measure it, absent otherwise."""
    ttfc = cols.get("gen_ai_response_time_to_first_chunk")
    sends = FAMILIES[family]
    if served["stream"] and served["status"] == 200 and sends.ttfc:
        truth = served["server_ttfc_s"]
        if sends.ttfc_from_headers:
            low = served["headers_to_first_chunk_s"] - TTFC_BELOW_HEADERS_S
        else:
            low = truth - TTFC_BELOW_S
        assert ttfc is not None, "time to first chunk missing"
        assert low <= ttfc <= truth + TTFC_ABOVE_S, (ttfc, low, truth)
    else:
        assert ttfc is None
