"""Query parameters of the analytics API: time ranges, steps, groupings, and their errors.

Takes the raw strings of a request (`start`, `end` as RFC3339 or unix seconds, `step` as a
Prometheus-style duration or seconds, a group name); gives validated values (`TimeRange`) or
raises `BadParameterError`, which the routers answer with 400 and the message. Pure: the clock is
an argument.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

#: the most buckets one time series may have (Prometheus caps a range query at 11,000 points;
#: a smaller cap keeps responses of many groups small)
MAX_BUCKETS = 2000
MIN_STEP_S = 1.0
DEFAULT_RANGE_S = 3600.0
DEFAULT_STEP_S = 60.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}

#: group name accepted by the API -> column of `llm_calls`
GROUP_COLUMNS: dict[str, str] = {
    "model": "model",
    "provider": "provider",
    "service": "service_name",
    "namespace": "k8s_namespace",
    "pod": "k8s_pod",
    "operation": "operation",
}


class BadParameterError(ValueError):
    """A request parameter is missing, malformed or out of range; answered with 400."""

    status = 400


class NotFoundError(LookupError):
    """The thing asked for does not exist; answered with 404."""

    status = 404


def parse_duration_s(text: str, name: str = "step") -> float:
    """Seconds in `text`: '90', '1.5', '500ms', '30s', '5m', '1h30m', '1d'."""
    raw = text.strip()
    if not raw:
        raise BadParameterError(f"{name}: empty duration")
    try:
        value = float(raw)
    except ValueError:
        pos = 0
        value = 0.0
        for match in _DURATION_PART.finditer(raw):
            if match.start() != pos:
                break
            value += float(match.group(1)) * _UNIT_S[match.group(2)]
            pos = match.end()
        if pos != len(raw) or pos == 0:
            raise BadParameterError(
                f"{name}: {text!r} is not a duration (use seconds, or e.g. 30s, 5m, 1h)"
            ) from None
    if not math.isfinite(value) or value <= 0:
        raise BadParameterError(f"{name}: {text!r} must be a positive duration")
    return value


def parse_time(text: str | None, name: str, now: datetime) -> datetime | None:
    """A UTC datetime from RFC3339, unix seconds, 'now' or 'now-<duration>'; None if absent."""
    if text is None or not text.strip():
        return None
    raw = text.strip()
    if raw == "now":
        return now
    if raw.startswith("now-"):
        return now - timedelta(seconds=parse_duration_s(raw[4:], name))
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise BadParameterError(f"{name}: {text!r} is not a time")
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise BadParameterError(f"{name}: {text!r} is out of range") from None
    try:
        parsed = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise BadParameterError(
            f"{name}: {text!r} is not RFC3339 (2025-01-31T12:00:00Z) or unix seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TimeRange:
    """[start, end) cut into `buckets` steps of `step_s` seconds (the last may be shorter)."""

    start: datetime
    end: datetime
    step_s: float

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def buckets(self) -> int:
        return max(1, math.ceil(self.seconds / self.step_s - 1e-9))

    def bucket_start(self, index: int) -> datetime:
        return self.start + timedelta(seconds=index * self.step_s)

    def bucket_width_s(self, index: int) -> float:
        return min(self.step_s, self.seconds - index * self.step_s)


def parse_range(
    start: str | None,
    end: str | None,
    now: datetime,
    *,
    default_range_s: float = DEFAULT_RANGE_S,
) -> tuple[datetime, datetime]:
    """Start and end of a request (default: the last `default_range_s` up to now)."""
    end_t = parse_time(end, "end", now) or now
    start_t = parse_time(start, "start", now) or end_t - timedelta(seconds=default_range_s)
    if end_t <= start_t:
        raise BadParameterError(
            f"end ({end_t.isoformat()}) must be after start ({start_t.isoformat()})"
        )
    return start_t, end_t


def parse_time_range(
    start: str | None,
    end: str | None,
    step: str | None,
    now: datetime,
    *,
    max_buckets: int = MAX_BUCKETS,
) -> TimeRange:
    """A validated range and step; refuses steps that would make more than `max_buckets`."""
    start_t, end_t = parse_range(start, end, now)
    step_s = parse_duration_s(step) if step else DEFAULT_STEP_S
    if step_s < MIN_STEP_S:
        raise BadParameterError(f"step: {step_s:g} s is below the minimum of {MIN_STEP_S:g} s")
    tr = TimeRange(start_t, end_t, step_s)
    if tr.buckets > max_buckets:
        smallest = math.ceil(tr.seconds / max_buckets)
        raise BadParameterError(
            f"step: {step_s:g} s over {tr.seconds:g} s makes {tr.buckets} buckets; at most "
            f"{max_buckets} are allowed, so use a step of {smallest} s or more"
        )
    return tr


def group_column(group_by: str) -> str:
    """The `llm_calls` column of an API group name."""
    column = GROUP_COLUMNS.get(group_by)
    if column is None:
        raise BadParameterError(
            f"group_by: unknown group {group_by!r}; use one of {', '.join(GROUP_COLUMNS)}"
        )
    return column


def parse_limit(value: int | None, default: int, maximum: int) -> int:
    """A row limit within [1, maximum]."""
    if value is None:
        return default
    if value < 1 or value > maximum:
        raise BadParameterError(f"limit: {value} is outside 1..{maximum}")
    return value


def rfc3339(value: Any) -> Any:
    """A datetime as RFC3339 UTC text ('...Z'); other values unchanged."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value
