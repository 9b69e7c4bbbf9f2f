"""What each instrumentation family really sends, as seen in its captured fixtures.

The normalizer can only report what reached it: these tables say, per family, which facts
the library puts on its spans, so the tests can demand the ground truth where it is sent and
demand nothing invented where it is not. When a library release changes what it sends, the
fixture tests fail until the table (and, if needed, the normalizer) follow.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_SCENARIOS = frozenset(
    {
        "chat",
        "chat_stream_usage",
        "chat_stream",
        "chat_tools",
        "chat_length",
        "completion",
        "embeddings",
        "chat_error",
    }
)

#: Tolerance on a time to first chunk measured by a client library against the server's own
#: measurement. The client's clock starts before the server receives the request and stops
#: after the first chunk arrives, so it can only be longer, apart from clock granularity
#: (OpenLIT uses `time.time()` floats: 2 ms covers it). The excess is loopback latency plus
#: the client's request building and SSE parsing: single milliseconds, but the machine is
#: shared, so 100 ms keeps scheduling stalls from failing the test while a value that is
#: off by a whole delay (150 ms or more) still fails it.
TTFC_BELOW_S = 0.002
TTFC_ABOVE_S = 0.100
#: For a library whose clock starts once `create()` has returned (`Sends.ttfc_from_headers`),
#: the start is a Python statement run after the response headers arrived: a client thread
#: that is scheduled late there (the machine is shared) makes the value shorter than the
#: server's headers-to-first-chunk time by that delay. 30 ms covers such stalls; a value
#: measured from the wrong event (e.g. after the first chunk) is still off by far more.
TTFC_BELOW_HEADERS_S = 0.030


@dataclass(frozen=True)
class Sends:
    scenarios: frozenset[str]
    """Scenarios the library makes a span for."""
    stream_finish_reasons: bool
    """Finish reasons of streamed calls (attribute or output messages)."""
    cache_read: bool
    stream_flag: bool
    ttfc: bool
    server: bool
    """server.address/port (or a base URL they can be read from)."""
    estimates_unreported_usage: bool = False
    """Counts tokens itself when the stream carried no usage."""
    embeddings_response_model_is_request: bool = False
    ttfc_from_headers: bool = False
    """Starts its time-to-first-chunk clock when the response headers have arrived (the
    client's `create()` returned), not when the request was sent: it can be shorter than
    the server's request-to-first-chunk time, never shorter than headers-to-first-chunk."""


FAMILIES: dict[str, Sends] = {
    "openai-v2": Sends(
        ALL_SCENARIOS - {"completion"},
        stream_finish_reasons=True,
        cache_read=False,
        stream_flag=False,
        ttfc=False,
        server=False,
    ),
    "openai-v2-legacy": Sends(
        ALL_SCENARIOS - {"completion"},
        stream_finish_reasons=False,
        cache_read=False,
        stream_flag=False,
        ttfc=False,
        server=False,
    ),
    "openllmetry": Sends(
        ALL_SCENARIOS,
        stream_finish_reasons=True,
        cache_read=True,
        stream_flag=True,
        ttfc=True,
        server=True,
    ),
    "openlit": Sends(
        ALL_SCENARIOS - {"completion"},
        stream_finish_reasons=True,
        cache_read=True,
        stream_flag=True,
        ttfc=True,
        server=True,
        estimates_unreported_usage=True,
        embeddings_response_model_is_request=True,
        ttfc_from_headers=True,
    ),
    "openinference": Sends(
        ALL_SCENARIOS,
        stream_finish_reasons=True,
        cache_read=True,
        stream_flag=True,
        ttfc=True,
        server=False,
    ),
}

#: The dialect each family's spans must be recognised as.
DIALECTS: dict[str, str] = {
    "openai-v2": "otel_genai",
    "openai-v2-legacy": "otel_genai_legacy",
    "openllmetry": "openllmetry",
    "openlit": "openlit",
    "openinference": "openinference",
}

OPERATIONS: dict[str, str] = {
    "chat": "chat",
    "chat_stream_usage": "chat",
    "chat_stream": "chat",
    "chat_tools": "chat",
    "chat_length": "chat",
    "completion": "text_completion",
    "embeddings": "embeddings",
    "chat_error": "chat",
}
