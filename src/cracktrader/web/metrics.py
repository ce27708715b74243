"""Request and run metrics: Prometheus collectors plus a cheap in-process summary for `/health`."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class RequestMetrics:
    """Counts and latencies by route template; one registry per app so tests can build many apps."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    started: float = field(default_factory=time.time)
    total: int = 0
    errors: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=2048))
    requests: Counter = field(init=False)
    latency: Histogram = field(init=False)
    runs: Counter = field(init=False)
    ws_clients: Gauge = field(init=False)
    _children: dict[tuple[str, str, int], tuple[Any, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "cracktrader_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cracktrader_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.runs = Counter(
            "cracktrader_runs_total", "Finished runs by outcome", ["mode", "outcome"], registry=self.registry
        )
        self.ws_clients = Gauge(
            "cracktrader_websocket_clients", "Connected WebSocket clients", ["stream"], registry=self.registry
        )
        # With `serve --workers N` each process keeps its own counters: this says which one answered a scrape.
        Gauge("cracktrader_process", "This server process (its pid)", ["pid"], registry=self.registry).labels(
            str(os.getpid())
        ).set(1)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished HTTP request."""
        self.total += 1
        if status >= 500:
            self.errors += 1
        self.recent.append(seconds)
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            # labels() hashes and locks on every call; route templates keep this map small.
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def summary(self, runs_by_outcome: dict[str, int]) -> dict[str, Any]:
        """Uptime, runs by outcome, and request counts and latency (over the last 2048 requests)."""
        recent = sorted(self.recent)
        n = len(recent)
        return {
            "uptime_seconds": round(time.time() - self.started, 3),
            "runs": runs_by_outcome,
            "requests_total": self.total,
            "requests_5xx": self.errors,
            "latency_ms": {
                "mean": round(1000 * sum(recent) / n, 3) if n else None,
                "p50": round(1000 * recent[n // 2], 3) if n else None,
                "p99": round(1000 * recent[min(n - 1, int(n * 0.99))], 3) if n else None,
            },
        }
