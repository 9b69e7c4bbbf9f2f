"""`ExportMetricsServiceRequest` to a `metric_points` Arrow table.

Takes a parsed metrics export, the receiver limits and the receive time; gives a `Decoded` with
one `metric_points` row per data point of every type: gauge and sum (`value`, plus temporality
and monotonicity for sums), histogram (`count`, `sum`, `min`, `max`, `bucket_counts`,
`explicit_bounds`), exponential histogram (`exp_*` columns), and summary (`quantiles`,
`quantile_values`). Attributes, resource and exemplars are JSON. A point over a limit, with an
out-of-range timestamp, or a histogram whose bucket counts do not fit its bounds, is rejected.
Pure and single-pass: no I/O, no per-point Arrow calls.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from collector.otlp.limits import ReceiverLimits
from collector.otlp.resource import ResourceInfo, resource_info
from collector.otlp.values import INT64_MAX, Decoded, RejectedItemError, attributes, json_text
from store.schema import METRIC_POINTS

_TEMPORALITY = ("unspecified", "delta", "cumulative")
_ZERO16 = bytes(16)
_ZERO8 = bytes(8)

# Row layout: every METRIC_POINTS column but received_time, in schema order.
_COLUMNS = tuple(n for n in METRIC_POINTS.names if n != "received_time")
_IDX = {name: i for i, name in enumerate(_COLUMNS)}
_WIDTH = len(_COLUMNS)


def _number(p: Any) -> float | None:
    kind = p.WhichOneof("value")
    if kind == "as_double":
        return float(p.as_double)
    if kind == "as_int":
        return float(p.as_int)
    return None


def _exemplars(p: Any, limits: ReceiverLimits) -> bytes:
    out: list[dict[str, Any]] = []
    for ex in p.exemplars:
        entry: dict[str, Any] = {
            "time_unix_nano": ex.time_unix_nano,
            "value": _number(ex),
            "filtered_attributes": attributes(
                ex.filtered_attributes, limits.max_attributes, limits.max_value_depth
            ),
        }
        if ex.trace_id and ex.trace_id != _ZERO16:
            if len(ex.trace_id) != 16:
                raise RejectedItemError("invalid_trace_id")
            entry["trace_id"] = ex.trace_id.hex()
        if ex.span_id and ex.span_id != _ZERO8:
            if len(ex.span_id) != 8:
                raise RejectedItemError("invalid_span_id")
            entry["span_id"] = ex.span_id.hex()
        out.append(entry)
    return json_text(out)


class _MetricContext:
    """The columns shared by every point of one metric."""

    __slots__ = ("base",)

    def __init__(
        self,
        res: ResourceInfo,
        scope_name: str | None,
        metric: Any,
        kind: str,
        temporality: str | None,
        monotonic: bool | None,
    ) -> None:
        base: list[Any] = [None] * _WIDTH
        base[_IDX["service_name"]] = res.service_name
        base[_IDX["scope_name"]] = scope_name
        base[_IDX["metric_name"]] = metric.name
        base[_IDX["description"]] = metric.description or None
        base[_IDX["unit"]] = metric.unit or None
        base[_IDX["metric_type"]] = kind
        base[_IDX["temporality"]] = temporality
        base[_IDX["is_monotonic"]] = monotonic
        base[_IDX["resource"]] = res.json
        base[_IDX["k8s_namespace"]] = res.k8s_namespace
        base[_IDX["k8s_pod"]] = res.k8s_pod
        base[_IDX["k8s_node"]] = res.k8s_node
        self.base = base


_I_TIME = _IDX["time"]
_I_START = _IDX["start_time"]
_I_TIME_NS = _IDX["time_unix_ns"]
_I_VALUE = _IDX["value"]
_I_COUNT = _IDX["count"]
_I_SUM = _IDX["sum"]
_I_MIN = _IDX["min"]
_I_MAX = _IDX["max"]
_I_BUCKETS = _IDX["bucket_counts"]
_I_BOUNDS = _IDX["explicit_bounds"]
_I_EXP_SCALE = _IDX["exp_scale"]
_I_EXP_ZERO = _IDX["exp_zero_count"]
_I_EXP_POS_OFF = _IDX["exp_positive_offset"]
_I_EXP_POS = _IDX["exp_positive_bucket_counts"]
_I_EXP_NEG_OFF = _IDX["exp_negative_offset"]
_I_EXP_NEG = _IDX["exp_negative_bucket_counts"]
_I_QUANTILES = _IDX["quantiles"]
_I_QVALUES = _IDX["quantile_values"]
_I_FLAGS = _IDX["flags"]
_I_EXEMPLARS = _IDX["exemplars"]
_I_ATTRS = _IDX["attributes"]


def _point_row(ctx: _MetricContext, p: Any, kind: str, limits: ReceiverLimits) -> list[Any]:
    time_ns = p.time_unix_nano
    start_ns = p.start_time_unix_nano
    if time_ns > INT64_MAX or start_ns > INT64_MAX:
        raise RejectedItemError("invalid_timestamp")
    row = ctx.base.copy()
    row[_I_ATTRS] = json_text(
        attributes(p.attributes, limits.max_attributes, limits.max_value_depth)
    )
    row[_I_TIME] = time_ns or None
    row[_I_TIME_NS] = time_ns or None
    row[_I_START] = start_ns or None
    row[_I_FLAGS] = p.flags
    if kind in ("gauge", "sum"):
        row[_I_VALUE] = _number(p)
        row[_I_EXEMPLARS] = _exemplars(p, limits)
    elif kind == "histogram":
        counts = list(p.bucket_counts)
        bounds = list(p.explicit_bounds)
        if counts and len(counts) != len(bounds) + 1:
            raise RejectedItemError("invalid_histogram")
        row[_I_COUNT] = p.count
        row[_I_SUM] = p.sum if p.HasField("sum") else None
        row[_I_MIN] = p.min if p.HasField("min") else None
        row[_I_MAX] = p.max if p.HasField("max") else None
        row[_I_BUCKETS] = counts
        row[_I_BOUNDS] = bounds
        row[_I_EXEMPLARS] = _exemplars(p, limits)
    elif kind == "exponential_histogram":
        row[_I_COUNT] = p.count
        row[_I_SUM] = p.sum if p.HasField("sum") else None
        row[_I_MIN] = p.min if p.HasField("min") else None
        row[_I_MAX] = p.max if p.HasField("max") else None
        row[_I_EXP_SCALE] = p.scale
        row[_I_EXP_ZERO] = p.zero_count
        row[_I_EXP_POS_OFF] = p.positive.offset
        row[_I_EXP_POS] = list(p.positive.bucket_counts)
        row[_I_EXP_NEG_OFF] = p.negative.offset
        row[_I_EXP_NEG] = list(p.negative.bucket_counts)
        row[_I_EXEMPLARS] = _exemplars(p, limits)
    else:  # summary
        row[_I_COUNT] = p.count
        row[_I_SUM] = p.sum
        qs = p.quantile_values
        row[_I_QUANTILES] = [q.quantile for q in qs]
        row[_I_QVALUES] = [q.value for q in qs]
    return row


def decode_metrics(request: Any, limits: ReceiverLimits, received_unix_ns: int) -> Decoded:
    """Decode an `ExportMetricsServiceRequest` (see the module docstring)."""
    out = Decoded()
    rows: list[list[Any]] = []
    for rm in request.resource_metrics:
        try:
            res = resource_info(rm.resource, limits)
        except RejectedItemError as exc:
            out.reject(
                exc.reason, sum(_count_points(m) for sm in rm.scope_metrics for m in sm.metrics)
            )
            continue
        for sm in rm.scope_metrics:
            scope_name = sm.scope.name or None
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(metric, kind)
                temporality: str | None = None
                monotonic: bool | None = None
                if kind in ("sum", "histogram", "exponential_histogram"):
                    t = data.aggregation_temporality
                    temporality = _TEMPORALITY[t] if 0 <= t < 3 else "unspecified"
                if kind == "sum":
                    monotonic = data.is_monotonic
                ctx = _MetricContext(res, scope_name, metric, kind, temporality, monotonic)
                for p in data.data_points:
                    try:
                        rows.append(_point_row(ctx, p, kind, limits))
                    except RejectedItemError as exc:
                        out.reject(exc.reason)
    out.accepted = len(rows)
    if rows:
        data_cols: dict[str, Any] = dict(zip(_COLUMNS, zip(*rows, strict=True), strict=True))
        data_cols["received_time"] = [received_unix_ns] * len(rows)
        out.tables["metric_points"] = pa.Table.from_pydict(
            {name: data_cols[name] for name in METRIC_POINTS.names}, schema=METRIC_POINTS
        )
    return out


def _count_points(metric: Any) -> int:
    kind = metric.WhichOneof("data")
    return 0 if kind is None else len(getattr(metric, kind).data_points)
