"""Prometheus metrics of one instance, in a registry of its own (several apps, one process).

What every relayed message counts (messages received, relayed by type, relay latency) is kept
in plain numbers, read only when /metrics is scraped: prometheus_client's counters and
histograms take a lock and build label keys on each update, 2-13 µs a message, as much as the
rest of a relay's own work. One event loop updates them: no lock is needed."""

from __future__ import annotations

import bisect
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
PREFIX = "fileshare_signal_"


class LatencyHistogram:
    """Counts per bucket (not cumulative until rendered) and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: over every bound (+Inf)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class MessageFigures(Collector):
    """The per-message figures, as Prometheus metrics at scrape time."""

    def __init__(self) -> None:
        self.received = 0
        self.relayed: Tally[str] = Tally()  # by relay type
        self.latency = LatencyHistogram(_LATENCY_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            PREFIX + "messages_received", "Client messages received", value=self.received
        )
        relayed = CounterMetricFamily(
            PREFIX + "messages_relayed", "Messages relayed to the other peer", labels=["type"]
        )
        for kind, count in sorted(self.relayed.items()):
            relayed.add_metric([kind], count)
        yield relayed
        yield HistogramMetricFamily(
            PREFIX + "relay_latency_seconds",
            "From a relayed message's arrival to its hand-off to the other peer's socket",
            buckets=self.latency.cumulative(),
            sum_value=self.latency.total,
        )


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = PREFIX
        self.messages = MessageFigures()
        r.register(self.messages)
        self.connections = Gauge(p + "connections", "Open WebSocket connections", registry=r)
        self.connections_total = Counter(
            p + "connections_opened", "WebSocket connections accepted", registry=r
        )
        self.local_peers = Gauge(
            p + "session_peers", "Peers in a session connected to this instance", registry=r
        )
        self.sessions_created = Counter(p + "sessions_created", "Sessions created", registry=r)
        self.sessions_joined = Counter(
            p + "sessions_joined", "Successful joins and rejoins", ["kind"], registry=r
        )
        self.sessions_closed = Counter(
            p + "sessions_closed", "Sessions ended, by reason", ["reason"], registry=r
        )
        self.failed_joins = Counter(p + "failed_joins", "Refused joins and rejoins", registry=r)
        self.rejections = Counter(
            p + "rejections", "Refused messages and connections, by reason", ["reason"], registry=r
        )
        self.ready = Gauge(
            p + "ready", "1 while /readyz would answer 200 (checked at each scrape)", registry=r
        )
        self.store_errors = Counter(
            p + "store_errors",
            "Operations that failed because the session store did not answer",
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
