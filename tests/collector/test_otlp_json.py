"""OTLP/JSON through the real HTTP receiver: the encoding's quirks and JSON answers.

Hex ids in either case (not base64), 64-bit integers as strings or numbers, enums as numbers,
lowerCamelCase and snake_case keys, unknown fields ignored; responses and partial success come
back as JSON.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.collector.otlp_support import Receivers, running_receivers

JSON = {"Content-Type": "application/json"}
EXACT = 2**53 + 1  # not representable as a double: proves int64 stayed an integer


@pytest.fixture(scope="module")
def rx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receivers]:
    with running_receivers(tmp_path_factory.mktemp("json") / "store.duckdb") as r:
        yield r


def _post(rx: Receivers, path: str, doc: Any) -> requests.Response:
    return requests.post(f"{rx.http_url}{path}", data=json.dumps(doc), headers=JSON, timeout=30)


def _camel_trace(service: str) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": service}},
                        {"key": "k8s.node.name", "value": {"stringValue": "n1"}},
                    ]
                },
                "schemaUrl": "https://opentelemetry.io/schemas/1.37.0",
                "someFutureField": {"ignored": True},
                "scopeSpans": [
                    {
                        "scope": {"name": "json.scope", "version": "9"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "eee19b7ec3c1b173",
                                "traceState": "vendor=1",
                                "name": "chat json-model",
                                "kind": 3,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": 1544712661000000000,
                                "attributes": [
                                    {"key": "as.string", "value": {"intValue": str(EXACT)}},
                                    {"key": "as.number", "value": {"intValue": 42}},
                                    {"key": "d", "value": {"doubleValue": 0.5}},
                                    {"key": "nan", "value": {"doubleValue": "NaN"}},
                                    {"key": "b", "value": {"boolValue": True}},
                                    {
                                        "key": "raw",
                                        "value": {
                                            "bytesValue": base64.b64encode(b"\x00\xff").decode()
                                        },
                                    },
                                    {
                                        "key": "arr",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"stringValue": "x"}, {"intValue": "7"}]
                                            }
                                        },
                                    },
                                    {
                                        "key": "kv",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [
                                                    {"key": "inner", "value": {"stringValue": "y"}}
                                                ]
                                            }
                                        },
                                    },
                                    {"key": "empty", "value": {}},
                                ],
                                "events": [
                                    {
                                        "timeUnixNano": "1544712660500000000",
                                        "name": "ev",
                                        "attributes": [{"key": "i", "value": {"intValue": "1"}}],
                                    }
                                ],
                                "links": [
                                    {
                                        "traceId": "0AF7651916CD43DD8448EB211C80319C",
                                        "spanId": "B7AD6B7169203331",
                                    }
                                ],
                                "status": {"code": 2, "message": "boom"},
                                "unknownSpanField": 1,
                            }
                        ],
                    }
                ],
            }
        ]
    }


def test_json_trace_quirks(rx: Receivers) -> None:
    resp = _post(rx, "/v1/traces", _camel_trace("json-camel"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {}
    (row,) = rx.rows(
        "SELECT trace_id, span_id, parent_span_id, trace_state, kind, start_unix_ns, end_unix_ns,"
        " status_code, status_message, attributes, events, links, scope_name, scope_version,"
        " k8s_node FROM spans WHERE service_name = 'json-camel'"
    )
    assert row[:9] == (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        "eee19b7ec3c1b173",
        "vendor=1",
        "client",
        1544712660000000000,
        1544712661000000000,
        "error",
        "boom",
    )
    assert json.loads(row[9]) == {
        "as.string": EXACT,
        "as.number": 42,
        "d": 0.5,
        "nan": "NaN",
        "b": True,
        "raw": base64.b64encode(b"\x00\xff").decode(),
        "arr": ["x", 7],
        "kv": {"inner": "y"},
        "empty": None,
    }
    assert json.loads(row[10]) == [
        {"name": "ev", "time_unix_nano": 1544712660500000000, "attributes": {"i": 1}}
    ]
    links = json.loads(row[11])
    assert [(ln["trace_id"], ln["span_id"]) for ln in links] == [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    ]
    assert row[12:] == ("json.scope", "9", "n1")


def test_json_snake_case_keys(rx: Receivers) -> None:
    doc = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"string_value": "json-snake"}}]
                },
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": "5b8efff798038103d269b633813fc60d",
                                "span_id": "eee19b7ec3c1b175",
                                "name": "snake",
                                "kind": 2,
                                "start_time_unix_nano": "1000",
                                "end_time_unix_nano": "3000",
                                "attributes": [
                                    {"key": "n", "value": {"int_value": "9223372036854775807"}}
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    resp = _post(rx, "/v1/traces", doc)
    assert resp.status_code == 200, resp.text
    (row,) = rx.rows(
        "SELECT span_id, kind, duration_s, attributes FROM spans WHERE service_name = 'json-snake'"
    )
    assert row[:3] == ("eee19b7ec3c1b175", "server", 2e-6)
    assert json.loads(row[3]) == {"n": 2**63 - 1}


def test_json_partial_success_is_json(rx: Receivers) -> None:
    doc = _camel_trace("json-partial")
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    bad = dict(spans[0], spanId="eee19b7e", traceId="5b8efff798038103d269b633813fc60e")
    spans.append(bad)
    resp = _post(rx, "/v1/traces", doc)
    assert resp.status_code == 200
    body = resp.json()
    # int64 fields are strings in OTLP/JSON.
    assert body["partialSuccess"]["rejectedSpans"] == "1"
    assert "span_id" in body["partialSuccess"]["errorMessage"]
    assert rx.rows("SELECT count(*) FROM spans WHERE service_name = 'json-partial'") == [(1,)]


def test_json_metrics_quirks(rx: Receivers) -> None:
    doc = {
        "resourceMetrics": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "json-m"}}]
                },
                "scopeMetrics": [
                    {
                        "scope": {"name": "m"},
                        "metrics": [
                            {
                                "name": "c",
                                "unit": "1",
                                "sum": {
                                    "aggregationTemporality": 1,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {
                                            "asInt": str(EXACT),
                                            "timeUnixNano": "1700000000000000000",
                                            "startTimeUnixNano": "1699999990000000000",
                                            "exemplars": [
                                                {
                                                    "asDouble": 3.5,
                                                    "timeUnixNano": "1700000000000000000",
                                                    "traceId": "5B8EFFF798038103D269B633813FC60C",
                                                    "spanId": "EEE19B7EC3C1B174",
                                                }
                                            ],
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "h",
                                "histogram": {
                                    "aggregationTemporality": 2,
                                    "dataPoints": [
                                        {
                                            "count": "6",
                                            "sum": 12.5,
                                            "bucketCounts": ["1", 2, "3"],
                                            "explicitBounds": [1, 5],
                                            "timeUnixNano": "1700000000000000000",
                                            "min": 0.5,
                                            "max": 9,
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "e",
                                "exponentialHistogram": {
                                    "aggregationTemporality": 1,
                                    "dataPoints": [
                                        {
                                            "count": "4",
                                            "scale": -1,
                                            "zeroCount": "1",
                                            "positive": {"offset": 2, "bucketCounts": ["1", "1"]},
                                            "negative": {"offset": -3, "bucketCounts": [1]},
                                            "timeUnixNano": "1700000000000000000",
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "s",
                                "summary": {
                                    "dataPoints": [
                                        {
                                            "count": "3",
                                            "sum": 6,
                                            "timeUnixNano": "1700000000000000000",
                                            "quantileValues": [{"quantile": 0.5, "value": 2}],
                                        }
                                    ]
                                },
                            },
                        ],
                    }
                ],
            }
        ]
    }
    resp = _post(rx, "/v1/metrics", doc)
    assert resp.status_code == 200, resp.text
    rows = {
        r[0]: r[1:]
        for r in rx.rows(
            "SELECT metric_name, metric_type, temporality, is_monotonic, value, count, sum,"
            " bucket_counts, explicit_bounds, exp_scale, exp_zero_count, exp_positive_offset,"
            " exp_positive_bucket_counts, exp_negative_offset, exp_negative_bucket_counts,"
            " quantiles, quantile_values, exemplars, min, max"
            " FROM metric_points WHERE service_name = 'json-m'"
        )
    }
    assert rows["c"][:4] == ("sum", "delta", True, float(EXACT))
    assert json.loads(rows["c"][16]) == [
        {
            "time_unix_nano": 1700000000000000000,
            "value": 3.5,
            "filtered_attributes": {},
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
        }
    ]
    assert rows["h"][:2] == ("histogram", "cumulative")
    assert rows["h"][4:8] == (6, 12.5, [1, 2, 3], [1.0, 5.0])
    assert rows["h"][17:] == (0.5, 9.0)
    assert rows["e"][0] == "exponential_histogram"
    assert rows["e"][8:14] == (-1, 1, 2, [1, 1], -3, [1])
    assert rows["s"][0] == "summary"
    assert rows["s"][4:6] == (3, 6.0)
    assert rows["s"][14:16] == ([0.5], [2.0])


def test_json_logs_quirks(rx: Receivers) -> None:
    doc = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "json-l"}}]
                },
                "scopeLogs": [
                    {
                        "scope": {"name": "l"},
                        "logRecords": [
                            {
                                "timeUnixNano": "1700000000000000000",
                                "observedTimeUnixNano": 1700000000000000001,
                                "severityNumber": 17,
                                "severityText": "ERROR",
                                "eventName": "app.failed",
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "flags": 1,
                                "body": {
                                    "kvlistValue": {
                                        "values": [
                                            {"key": "n", "value": {"intValue": str(EXACT)}},
                                            {
                                                "key": "list",
                                                "value": {
                                                    "arrayValue": {"values": [{"boolValue": False}]}
                                                },
                                            },
                                        ]
                                    }
                                },
                            }
                        ],
                    }
                ],
            }
        ]
    }
    resp = _post(rx, "/v1/logs", doc)
    assert resp.status_code == 200, resp.text
    (row,) = rx.rows(
        "SELECT time_unix_ns, severity_number, severity_text, event_name, trace_id, span_id,"
        " flags, body FROM log_records WHERE service_name = 'json-l'"
    )
    assert row[:7] == (
        1700000000000000000,
        17,
        "ERROR",
        "app.failed",
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        1,
    )
    assert json.loads(row[7]) == {"n": EXACT, "list": [False]}
