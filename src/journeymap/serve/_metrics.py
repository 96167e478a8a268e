"""The service's metrics in the Prometheus text format (``GET /metrics``), with no client library.

Counters and histograms are kept under one lock (updates are a dict lookup and an add); gauges are
read when the page is rendered. Labels are bounded: routes are path templates, never raw paths.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable

# Seconds: from a cached read to a slow analysis.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RATE_WINDOW_S = 10.0  # events per second are averaged over this window

# name -> (type, help); every metric the service writes is declared here.
METRICS: dict[str, tuple[str, str]] = {
    "journeymap_events_accepted_total": ("counter", "Events stored by POST /v1/events."),
    "journeymap_events_duplicate_total": ("counter", "Events already in the store (same event id), stored once."),
    "journeymap_events_rejected_total": ("counter", "Events rejected by validation and quarantined, by field."),
    "journeymap_events_per_second": ("gauge", f"Events stored per second over the last {RATE_WINDOW_S:g} s."),
    "journeymap_write_batches_total": ("counter", "Store transactions committed by the event writer."),
    "journeymap_write_duration_seconds": ("histogram", "Time to validate, store and commit one writer batch."),
    "journeymap_http_requests_total": ("counter", "HTTP requests by route, method and status code."),
    "journeymap_http_errors_total": ("counter", "HTTP requests that failed on the server (5xx), by route."),
    "journeymap_http_request_duration_seconds": ("histogram", "HTTP request latency by route and method."),
    "journeymap_decision_duration_seconds": ("histogram", "Latency of POST /v1/decisions."),
    "journeymap_fast_lane_requests_total": ("counter", "Event and decision requests by who answered them: the "
                                            "fast lane, or FastAPI (errors, other content types)."),
    "journeymap_profile_updates_total": ("counter", "Incremental profile updates run after new events."),
    "journeymap_profile_update_duration_seconds": ("histogram", "Time of one incremental profile update."),
    "journeymap_profile_update_errors_total": ("counter", "Profile updates that failed (retried with the next events)."),
    "journeymap_model_loads_total": ("counter", "Model files loaded (at start and on each newer file)."),
    "journeymap_model_load_errors_total": ("counter", "Newer model files that could not be loaded (the old model stays)."),
    "journeymap_model_version": ("gauge", "How many model files this process has loaded (0: none)."),
    "journeymap_bus_errors_total": ("counter", "Failures publishing or consuming events on the bus."),
    "journeymap_bus_events_applied_total": ("counter", "Events applied to the online state by this process's consumer."),
    "journeymap_hook_errors_total": ("counter", "Failures of the decisions hook on new events (reward joins)."),
    "journeymap_uptime_seconds": ("gauge", "Seconds since the service started."),
}

Labels = tuple[tuple[str, str], ...]


class Metrics:
    """Counters, histograms and gauges, rendered as Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, Labels], float] = {}
        self._histograms: dict[tuple[str, Labels], list[float]] = {}  # bucket counts..., sum, count
        self._gauges: dict[str, Callable[[], float]] = {}
        self._rate: deque[tuple[float, int]] = deque()
        self.started = time.monotonic()
        self.gauge("journeymap_uptime_seconds", lambda: time.monotonic() - self.started)
        self.gauge("journeymap_events_per_second", self.events_per_second)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, _labels(labels))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = (name, _labels(labels))
        with self._lock:
            row = self._histograms.get(key)
            if row is None:
                row = self._histograms[key] = [0.0] * (len(BUCKETS) + 2)
            bucket = bisect.bisect_left(BUCKETS, seconds)
            if bucket < len(BUCKETS):  # slower than the last bound: only in +Inf (the count)
                row[bucket] += 1
            row[-2] += seconds
            row[-1] += 1

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def stored(self, n: int) -> None:
        """Count ``n`` newly stored events toward the events-per-second gauge."""
        now = time.monotonic()
        with self._lock:
            self._rate.append((now, n))
            self._trim(now)

    def events_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            total = sum(n for _, n in self._rate)
        window = min(RATE_WINDOW_S, max(now - self.started, 1e-3))
        return total / window

    def _trim(self, now: float) -> None:
        while self._rate and self._rate[0][0] < now - RATE_WINDOW_S:
            self._rate.popleft()

    def value(self, name: str, **labels: str) -> float:
        """A counter's current value (0 when never incremented); for tests and status pages."""
        with self._lock:
            if labels:
                return self._counters.get((name, _labels(labels)), 0.0)
            return sum(v for (n, _), v in self._counters.items() if n == name)

    def render(self) -> str:
        with self._lock:
            counters = dict(self._counters)
            histograms = {k: list(v) for k, v in self._histograms.items()}
        gauges = {}
        for name, read in self._gauges.items():
            try:
                gauges[name] = float(read())
            except Exception:  # noqa: BLE001 - a broken gauge must not take the page down
                continue
        lines: list[str] = []
        for name, (kind, help_text) in METRICS.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if kind == "counter":
                rows = sorted((labels, v) for (n, labels), v in counters.items() if n == name)
                for labels, v in rows or [((), 0.0)]:
                    lines.append(f"{name}{_text(labels)} {_num(v)}")
            elif kind == "gauge":
                if name in gauges:
                    lines.append(f"{name} {_num(gauges[name])}")
            else:
                for labels, row in sorted((labels, row) for (n, labels), row in histograms.items() if n == name):
                    cumulative = 0.0
                    for bound, count in zip(BUCKETS, row):
                        cumulative += count
                        lines.append(f"{name}_bucket{_text(labels + (('le', _num(bound)),))} {_num(cumulative)}")
                    lines.append(f"{name}_bucket{_text(labels + (('le', '+Inf'),))} {_num(row[-1])}")
                    lines.append(f"{name}_sum{_text(labels)} {_num(row[-2])}")
                    lines.append(f"{name}_count{_text(labels)} {_num(row[-1])}")
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _text(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
               for k, v in labels)
    return "{" + ",".join(escaped) + "}"


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
