"""The measurement harness: the real `fileshare-signal` process (in-memory or with Redis, directly
or behind haproxy), one attacker process at full speed, and meanwhile /healthz probed every
20 ms and the server's RSS and descriptors sampled, before, at peak and after. /healthz is
probed the same way for a moment before the attack too: the latency the loaded machine gives
without an attacker, side by side with the latency under attack."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from netsim.processes import SignalProcess, haproxy, redis_server, start_signal, stop
from tests.adversarial.attacks import Outcome
from turn.config import TurnSettings
from turn.launcher import TurnEndpoint, running_turn

# /healthz and /metrics come from other addresses than the attacker's, a new one for each
# request: the server's per-address limits apply to every request, and the prober is not the
# attacker (a real monitor is few requests a second; this one is fifty).
_probers = (f"127.0.2.{n}" for n in itertools.cycle(range(1, 251)))
MODES = ("direct", "haproxy")
PROBE_INTERVAL = 0.02
IDLE_PROBE_SECONDS = 1.0


@dataclass(frozen=True)
class Patience:
    """How long the harness waits for the server: a probe with no answer after `probe` seconds
    counts as that long; after the attack, /healthz must answer again within `recovery`."""

    probe: float = 5.0
    recovery: float = 30.0


TURN_SECRET = "adversarial-suite-secret"


@dataclass
class Deployment:
    server: SignalProcess
    port: int  # where clients go: the server itself, or haproxy
    mode: str
    turn_port: int = 0

    @property
    def pid(self) -> int:
        return self.server.proc.pid


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fs-adv-"))  # short: unix socket paths are limited
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def local_coturn(where: Path) -> Iterator[TurnEndpoint]:
    """coturn on loopback with the project's default quotas, relaying on loopback only."""
    settings = TurnSettings(
        listening_ips=("127.0.0.1",),
        relay_ips=("127.0.0.1",),
        realm="adversarial.test",
        secrets=(TURN_SECRET,),
        port=free_udp_and_tcp_port(),
        min_port=40000,
        max_port=44999,
    )
    with running_turn(settings, where) as endpoint:
        yield endpoint


def free_udp_and_tcp_port() -> int:
    """A loopback port free for UDP and TCP alike: coturn listens on both. A port free for UDP
    alone was once a TCP connection's own port, and coturn could not start (EADDRINUSE)."""
    while True:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        ):
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@contextlib.asynccontextmanager
async def deployment(
    mode: str, store: str = "memory", turn: bool = False, args: tuple[str, ...] = ()
) -> AsyncIterator[Deployment]:
    """One server with every limit at its default (`args` may change some), directly reached
    or behind haproxy; with a private redis-server and a loopback coturn when asked."""
    with scratch() as where, contextlib.ExitStack() as stack:
        flags = list(args)
        if store == "redis":
            flags += ["--redis-url", stack.enter_context(redis_server(where))]
        if mode == "haproxy":
            flags += ["--trusted-proxies", "127.0.0.1"]
        turn_port = 0
        env = {}
        if turn:
            endpoint = stack.enter_context(local_coturn(where))
            turn_port = endpoint.port
            flags += ["--turn-urls", endpoint.udp_url]
            env["FILESHARE_TURN_SECRET"] = TURN_SECRET
        server = await start_signal(where / "signal.log", *flags, env=env)
        try:
            port = server.port
            if mode == "haproxy":
                port = stack.enter_context(haproxy(where, [server.port]))
            yield Deployment(server, port, mode, turn_port)
        finally:
            stop(server.proc, timeout=2.0)  # a server still digesting a flood is not drained


# --- probes and samples -------------------------------------------------------------------------


async def healthz_latency(port: int, timeout: float = Patience.probe) -> float:
    """Seconds from connecting to the end of a /healthz answer (`timeout` if none)."""
    started = time.monotonic()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(next(_probers), 0)
            )
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            if answer.startswith(b"HTTP/1.1 200"):
                return time.monotonic() - started
    return timeout


async def recovery_seconds(port: int, patience: Patience) -> float:
    """Until /healthz answers again (what the server took in before the attacker stopped may
    still be in its way); `patience.recovery` if it does not."""
    started = time.monotonic()
    while time.monotonic() - started < patience.recovery:
        if await healthz_latency(port, patience.probe) < patience.probe:
            return time.monotonic() - started
    return patience.recovery


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def metrics_text(port: int, timeout: float) -> str:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(next(_probers), 0)
    )
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return answer.partition(b"\r\n\r\n")[2].decode()


def rejections(text: str) -> dict[str, float]:
    """fileshare_signal_rejections_total by reason."""
    found = {}
    for line in text.splitlines():
        if line.startswith("fileshare_signal_rejections_total{"):
            labels, _, value = line.rpartition(" ")
            reason = labels.split('reason="', 1)[1].split('"', 1)[0]
            found[reason] = float(value)
    return found


def messages_received(text: str) -> float:
    """fileshare_signal_messages_received_total: the messages the server read and handled."""
    for line in text.splitlines():
        if line.startswith("fileshare_signal_messages_received_total "):
            return float(line.rpartition(" ")[2])
    return 0.0


def percentile_ms(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class Measurement:
    attack: str
    mode: str
    seconds: float
    rss_before: int
    rss_peak: int
    rss_after: int
    fds_before: int
    fds_peak: int
    fds_after: int
    latencies: list[float]
    patience: Patience
    log_bytes: int
    log_tail: str
    tracebacks: int
    alive: bool
    recovery_seconds: float  # after the attacker stopped, until /healthz answered again
    rejections: dict[str, float]
    messages: float  # client messages the server handled meanwhile (all of them the attacker's)
    elapsed: float  # from the attacker's start to the /healthz answer after it (its sends may
    # outlast `seconds`: a write blocked by backpressure ends when the server reads again)
    idle_latencies: list[float]  # /healthz just before the attack
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def rss_growth_mib(self) -> float:
        return (self.rss_peak - self.rss_before) / 2**20

    def latency_ms(self, q: float) -> float:
        if not self.latencies:
            return self.patience.probe * 1000
        return percentile_ms(self.latencies, q)

    @property
    def idle_p99_ms(self) -> float:
        """/healthz p99 on the same machine a moment before, without the attacker."""
        return percentile_ms(self.idle_latencies, 0.99)

    @property
    def p50_ms(self) -> float:
        if not self.latencies:
            return self.patience.probe * 1000
        return statistics.median(self.latencies) * 1000

    @property
    def p99_ms(self) -> float:
        return self.latency_ms(0.99)

    @property
    def max_ms(self) -> float:
        return self.latency_ms(1.0)


async def measure(
    target: Deployment, attack: str, seconds: float, patience: Patience = Patience()
) -> Measurement:
    """Run `attack` for `seconds` against `target` while probing and sampling the server."""
    pid, log_path = target.pid, target.server.log_path
    await asyncio.sleep(0.3)  # the server's start-up allocations settle
    idle_latencies = []
    idle_until = time.monotonic() + IDLE_PROBE_SECONDS
    while time.monotonic() < idle_until:
        idle_latencies.append(await healthz_latency(target.port, patience.probe))
        await asyncio.sleep(PROBE_INTERVAL)
    rss_before, fds_before = rss_bytes(pid), fd_count(pid)
    log_before = log_path.stat().st_size
    metrics_before = await metrics_text(target.server.port, patience.probe)
    rejected_before = rejections(metrics_before)
    rss_peak, fds_peak = rss_before, fds_before
    latencies: list[float] = []
    command = [sys.executable, "-m", "tests.adversarial.attacker", attack, str(target.port)]
    started = time.monotonic()
    attacker = await asyncio.create_subprocess_exec(
        *command, str(seconds), str(target.turn_port), stdout=asyncio.subprocess.PIPE
    )
    output = asyncio.create_task(attacker.communicate())
    while not output.done():
        latencies.append(await healthz_latency(target.port, patience.probe))
        with contextlib.suppress(OSError):
            rss_peak, fds_peak = max(rss_peak, rss_bytes(pid)), max(fds_peak, fd_count(pid))
        await asyncio.sleep(PROBE_INTERVAL)
    stdout, _ = await output
    recovery = await recovery_seconds(target.port, patience)
    elapsed = time.monotonic() - started
    alive = target.server.proc.poll() is None
    rss_after = rss_bytes(pid) if alive else 0
    fds_after = fd_count(pid) if alive else 0
    rejected, handled = {}, 0.0
    if alive and recovery < patience.recovery:
        with contextlib.suppress(OSError, TimeoutError):  # unanswered: no rejection is seen
            metrics_after = await metrics_text(target.server.port, patience.probe)
            rejected = rejections(metrics_after)
            handled = messages_received(metrics_after) - messages_received(metrics_before)
    log = log_path.read_bytes()[log_before:]
    return Measurement(
        attack=attack,
        mode=target.mode,
        seconds=seconds,
        rss_before=rss_before,
        rss_peak=max(rss_peak, rss_after),
        rss_after=rss_after,
        fds_before=fds_before,
        fds_peak=max(fds_peak, fds_after),
        fds_after=fds_after,
        latencies=latencies,
        patience=patience,
        log_bytes=len(log),
        log_tail=log[-2000:].decode(errors="replace"),
        tracebacks=log.count(b"Traceback"),
        alive=alive,
        recovery_seconds=recovery,
        rejections={k: v - rejected_before.get(k, 0.0) for k, v in rejected.items()},
        messages=handled,
        elapsed=elapsed,
        idle_latencies=idle_latencies,
        outcome=Outcome.from_json(stdout) if attacker.returncode == 0 else Outcome(),
    )
