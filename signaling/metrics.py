"""Prometheus metrics of one instance, in a registry of its own (several apps, one process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "fileshare_signal_"
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
        self.messages_received = Counter(
            p + "messages_received", "Client messages received", registry=r
        )
        self.messages_relayed = Counter(
            p + "messages_relayed", "Messages relayed to the other peer", ["type"], registry=r
        )
        self.rejections = Counter(
            p + "rejections", "Refused messages and connections, by reason", ["reason"], registry=r
        )
        self.relay_latency = Histogram(
            p + "relay_latency_seconds",
            "From a relayed message's arrival to its hand-off to the other peer's socket",
            buckets=_LATENCY_BUCKETS,
            registry=r,
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
