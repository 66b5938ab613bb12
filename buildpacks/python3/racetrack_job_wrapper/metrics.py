"""Prometheus metrics of the job's calls, and the job's own `metrics()`, as exposition text.

Written by hand (the format is small) so that the wrapper needs no package a job might pin.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("racetrack.job")

DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
)  # fmt: skip
METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(DURATION_BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(DURATION_BUCKETS):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value


class JobMetrics:
    """Counters of the job's endpoints, safe to update from every request thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = defaultdict(int)
        self._durations: dict[str, _Histogram] = defaultdict(_Histogram)
        self._errors: dict[tuple[str, str], int] = defaultdict(int)
        self._in_flight = 0
        self._last_call: float | None = None

    def started(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._last_call = time.time()

    def finished(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self._in_flight -= 1
            self._requests[(endpoint, status)] += 1
            self._durations[endpoint].observe(seconds)
            if status >= 500:
                self._errors[(endpoint, "server")] += 1
            elif status >= 400:
                self._errors[(endpoint, "client")] += 1

    def render(self, job_metrics: Callable[[], Any] | None = None) -> str:
        lines = self._render_own()
        if job_metrics is not None:
            lines += render_job_metrics(job_metrics)
        return "\n".join(lines) + "\n"

    def _render_own(self) -> list[str]:
        with self._lock:
            lines = [
                "# HELP job_requests_total Calls of the job's endpoints, by endpoint and status.",
                "# TYPE job_requests_total counter",
            ]
            for (endpoint, status), count in sorted(self._requests.items()):
                labels = _labels({"endpoint": endpoint, "status": str(status)})
                lines.append(f"job_requests_total{labels} {count}")
            lines += [
                "# HELP job_request_errors_total Failed calls: client (4xx) or server (5xx).",
                "# TYPE job_request_errors_total counter",
            ]
            for (endpoint, kind), count in sorted(self._errors.items()):
                labels = _labels({"endpoint": endpoint, "kind": kind})
                lines.append(f"job_request_errors_total{labels} {count}")
            lines += [
                "# HELP job_request_duration_seconds How long calls took, by endpoint.",
                "# TYPE job_request_duration_seconds histogram",
            ]
            for endpoint, histogram in sorted(self._durations.items()):
                lines += self._histogram_lines(endpoint, histogram)
            lines += [
                "# HELP job_requests_in_flight Calls being handled now.",
                "# TYPE job_requests_in_flight gauge",
                f"job_requests_in_flight {self._in_flight}",
                "# HELP job_last_call_timestamp_seconds Unix time of the last call (0: never).",
                "# TYPE job_last_call_timestamp_seconds gauge",
                f"job_last_call_timestamp_seconds {_number(self._last_call or 0)}",
            ]
            return lines

    @staticmethod
    def _histogram_lines(endpoint: str, histogram: _Histogram) -> list[str]:
        lines = []
        for bound, count in zip(DURATION_BUCKETS, histogram.counts, strict=True):
            labels = _labels({"endpoint": endpoint, "le": _number(bound)})
            lines.append(f"job_request_duration_seconds_bucket{labels} {count}")
        labels = _labels({"endpoint": endpoint, "le": "+Inf"})
        lines.append(f"job_request_duration_seconds_bucket{labels} {histogram.total}")
        labels = _labels({"endpoint": endpoint})
        lines.append(f"job_request_duration_seconds_sum{labels} {_number(histogram.sum)}")
        lines.append(f"job_request_duration_seconds_count{labels} {histogram.total}")
        return lines


MAX_REPORTED = 1000
_reported: set[str] = set()


def _report_once(message: str, *args: Any) -> None:
    """A problem with the job's metrics, logged the first time only (scrapes come often)."""
    text = message % args
    if text not in _reported and len(_reported) < MAX_REPORTED:
        _reported.add(text)
        log.error("%s", text)


def render_job_metrics(job_metrics: Callable[[], Any]) -> list[str]:
    """The job's `metrics()` as gauges; entries that are not valid are logged and skipped."""
    try:
        entries = job_metrics()
    except Exception:
        log.exception("metrics() failed; exporting the wrapper's metrics only")
        return []
    if not isinstance(entries, Iterable) or isinstance(entries, str | bytes | dict):
        _report_once("metrics() must return a list of {name, value, ...}, not %s", type(entries))
        return []
    samples: dict[str, list[str]] = {}
    descriptions: dict[str, str] = {}
    try:
        for entry in entries:
            _add_sample(entry, samples, descriptions)
    except Exception:
        log.exception("metrics() returned something that failed while being read")
    lines: list[str] = []
    for name, name_lines in samples.items():
        help_text = descriptions[name].replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *name_lines]
    return lines


def _add_sample(entry: Any, samples: dict[str, list[str]], descriptions: dict[str, str]) -> None:
    try:
        sample = _job_sample(entry)
    except (ValueError, TypeError, OverflowError) as exc:
        _report_once("metrics(): %r cannot be exported: %s", entry, exc)
        return
    if sample is not None:
        name, line, description = sample
        samples.setdefault(name, []).append(line)
        descriptions.setdefault(name, description)


def _job_sample(entry: Any) -> tuple[str, str, str] | None:
    if not isinstance(entry, dict):
        _report_once("metrics(): %r is not a {name, value, ...} mapping", entry)
        return None
    name = entry.get("name")
    if not isinstance(name, str) or not METRIC_NAME_RE.fullmatch(name):
        _report_once("metrics(): %r is not a Prometheus metric name", name)
        return None
    if name.startswith("job_request") or name in ("job_last_call_timestamp_seconds",):
        _report_once("metrics(): %s is a name the wrapper uses", name)
        return None
    value = entry.get("value")
    if value is None:
        return None  # Racetrack's convention: a metric without a value is not exported
    if isinstance(value, bool) or not isinstance(value, int | float):
        _report_once("metrics(): the value of %s is not a number: %r", name, value)
        return None
    labels = entry.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and LABEL_NAME_RE.fullmatch(k) for k in labels
    ):
        _report_once("metrics(): the labels of %s are not a mapping of label names", name)
        return None
    description = str(entry.get("description") or name)
    return name, f"{name}{_labels(labels)} {_number(value)}", description
