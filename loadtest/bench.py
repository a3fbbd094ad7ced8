"""`make bench-signaling`: the capacity of the signaling server on this machine, next to a bare
aiohttp WebSocket echo server as the ceiling, in one run.

Two cores: everything server-side (the instance, or three instances with redis-server and
haproxy, or the echo server) is pinned to CPU 0 and this load generator to CPU 1, so neither
steals the other's core and "server CPU" below is a share of one core. The per-address limits of
the server are raised by flags (all load comes from a few loopback addresses); they are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec
import uvloop

from loadtest import leanws, payloads
from loadtest.report import percentile
from loadtest.stack import stack
from loadtest.wsclient import RELAY_CLASSES
from signaling import schema

SERVER_CPU, CLIENT_CPU = 0, 1
LIMIT_FLAGS = (
    *("--max-connections-per-ip", "1000000", "--connections-per-second", "1000000"),
    *("--connection-burst", "1000000", "--max-sessions-per-ip", "1000000"),
    *("--messages-per-second", "1000000", "--message-burst", "1000000"),
    *("--send-queue-frames", "4096"),
)
SOURCES = [f"127.0.0.{i}" for i in range(2, 12)]  # loopback sources: ephemeral ports x 10
P99_TARGET = 0.050


def raise_nofile(wanted: int) -> int:
    """Raise this process's descriptor limit (children inherit it); root may raise the hard
    limit too. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, soft), max(wanted, hard)))
        return max(wanted, soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


# --- what one side of the comparison does -----------------------------------------------------


class Exchange(Protocol):
    """A session's worth of frames against one kind of server."""

    async def pair(self, n: int) -> tuple[leanws.LeanSocket, leanws.LeanSocket]: ...

    def receiver(self, a: leanws.LeanSocket, b: leanws.LeanSocket) -> leanws.LeanSocket: ...

    async def end(self, a: leanws.LeanSocket, b: leanws.LeanSocket) -> None: ...


def _relay_frame(kind: str, payload: dict[str, Any]) -> bytes:
    cls = RELAY_CLASSES[kind]
    return schema.encode(cls(v=schema.VERSION, payload=payloads.stamped(payload)))


_reply = msgspec.json.Decoder(schema.ServerMessage)
_TOKEN = secrets.token_urlsafe(16)  # echo only: the echo server checks nothing


class Signaling:
    """The real thing: create, join, relays to the other peer, leave."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def pair(self, n: int) -> tuple[leanws.LeanSocket, leanws.LeanSocket]:
        a = await leanws.connect(self.port, SOURCES[n % len(SOURCES)])
        a.send(schema.encode(schema.CreateSession(v=schema.VERSION, id=1)))
        created = _reply.decode(await a.recv())
        if not isinstance(created, schema.SessionCreated):
            raise RuntimeError(f"create refused: {created}")
        b = await leanws.connect(self.port, SOURCES[(n + 1) % len(SOURCES)])
        b.send(
            schema.encode(
                schema.JoinSession(
                    v=schema.VERSION, sessionId=created.sessionId, token=created.token, id=1
                )
            )
        )
        joined = _reply.decode(await b.recv())
        if not isinstance(joined, schema.SessionJoined):
            raise RuntimeError(f"join refused: {joined}")
        await a.recv()  # peer_joined
        return a, b

    def receiver(self, a: leanws.LeanSocket, b: leanws.LeanSocket) -> leanws.LeanSocket:
        return b

    async def end(self, a: leanws.LeanSocket, b: leanws.LeanSocket) -> None:
        a.send(schema.encode(schema.LeaveSession(v=schema.VERSION, id=2)))
        await a.recv()
        await b.recv()  # session_closed
        a.close()
        b.close()


class Echo:
    """The ceiling: the same frames, each answered by the echo server on its own socket."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def pair(self, n: int) -> tuple[leanws.LeanSocket, leanws.LeanSocket]:
        a = await leanws.connect(self.port, SOURCES[n % len(SOURCES)])
        a.send(schema.encode(schema.CreateSession(v=schema.VERSION, id=1)))
        await a.recv()
        b = await leanws.connect(self.port, SOURCES[(n + 1) % len(SOURCES)])
        b.send(schema.encode(schema.JoinSession(v=schema.VERSION, sessionId="1234", token=_TOKEN)))
        await b.recv()
        return a, b

    def receiver(self, a: leanws.LeanSocket, b: leanws.LeanSocket) -> leanws.LeanSocket:
        return a

    async def end(self, a: leanws.LeanSocket, b: leanws.LeanSocket) -> None:
        a.send(schema.encode(schema.LeaveSession(v=schema.VERSION, id=2)))
        await a.recv()
        a.close()
        b.close()


async def relay(
    ex: Exchange, sender: leanws.LeanSocket, other: leanws.LeanSocket, frames: list[bytes]
) -> list[float]:
    """Send frames from `sender`; the latencies of their arrival where the exchange delivers."""
    into = ex.receiver(sender, other)
    for f in frames:
        sender.send(f)
    return [payloads.frame_age(await into.recv()) for _ in frames]


async def session(ex: Exchange, n: int, latencies: list[float]) -> None:
    a, b = await ex.pair(n)
    try:
        latencies += await relay(ex, a, b, [_relay_frame("offer", payloads.description("offer"))])
        latencies += await relay(ex, b, a, [_relay_frame("answer", payloads.description("answer"))])
        for s, r in ((a, b), (b, a)):
            frames = [_relay_frame("ice_candidate", c) for c in payloads.candidates()]
            latencies += await relay(ex, s, r, frames)
        await ex.end(a, b)
    finally:
        a.abort()
        b.abort()


# --- the measurements -------------------------------------------------------------------------


@dataclass
class Setup:
    concurrency: int
    sessions_per_second: float
    relay_p99_ms: float
    errors: int
    server_cpu: float


async def setup_rate(ex: Exchange, pids: list[int], concurrency: int, seconds: float) -> Setup:
    """Sessions set up, hand-shaken (offer, answer, 8+8 candidates) and left, back to back by
    `concurrency` workers for `seconds`."""
    latencies: list[float] = []
    done = errors = 0
    deadline = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal done, errors
        n = w
        while time.monotonic() < deadline:
            try:
                await session(ex, n, latencies)
                done += 1
            except (ConnectionError, TimeoutError, RuntimeError, OSError):
                errors += 1
            n += concurrency

    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.monotonic() - t0
    return Setup(
        concurrency,
        done / elapsed,
        percentile(latencies, 99) * 1000,
        errors,
        (cpu_seconds(pids) - cpu0) / elapsed,
    )


async def open_pairs(
    ex: Exchange, count: int, parallel: int = 64
) -> list[tuple[leanws.LeanSocket, leanws.LeanSocket]]:
    pairs: list[tuple[leanws.LeanSocket, leanws.LeanSocket]] = []
    gate = asyncio.Semaphore(parallel)

    async def one(n: int) -> None:
        async with gate:
            pairs.append(await ex.pair(n))

    await asyncio.gather(*(one(n) for n in range(count)))
    return pairs


def close_pairs(pairs: list[tuple[leanws.LeanSocket, leanws.LeanSocket]]) -> None:
    for a, b in pairs:
        a.abort()
        b.abort()


@dataclass
class Idle:
    sockets: int
    rss_before_kib: int
    rss_after_kib: int
    seconds_to_open: float

    @property
    def bytes_per_socket(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) * 1024 / self.sockets


async def idle(ex: Exchange, pid: int, sessions: int) -> Idle:
    """Memory per socket: RSS with `sessions` idle sessions (2 sockets each) less RSS at none."""
    close_pairs(await open_pairs(ex, 200))  # warm up: code paths, caches, allocator arenas
    await asyncio.sleep(1.5)
    before = rss_kib(pid)
    t0 = time.monotonic()
    pairs = await open_pairs(ex, sessions)
    opened = time.monotonic() - t0
    await asyncio.sleep(2.0)
    after = rss_kib(pid)
    alive = sum(not a.closed and not b.closed for a, b in pairs)
    close_pairs(pairs)
    await asyncio.sleep(1.0)
    if alive < sessions:
        raise RuntimeError(f"only {alive} of {sessions} idle sessions stayed open")
    return Idle(2 * sessions, before, after, opened)


@dataclass
class Rate:
    offered_per_second: float
    delivered: int
    sent: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


async def fixed_rate(ex: Exchange, pairs_count: int, rate: float, seconds: float) -> Rate:
    """Candidates sent at `rate` a second in total, spread over `pairs_count` senders."""
    pairs = await open_pairs(ex, pairs_count)
    latencies: list[float] = []

    def record(frame: bytes) -> None:
        latencies.append(payloads.frame_age(frame))

    for a, b in pairs:
        ex.receiver(a, b).on_message = record
    tick, sent, n = 0.01, 0, 0
    batch = payloads.candidates(1)[0]
    start = time.monotonic()
    while (now := time.monotonic()) < start + seconds:
        due = int((now - start) * rate) - sent
        for _ in range(due):
            pairs[n % len(pairs)][0].send(_relay_frame("ice_candidate", batch))
            n += 1
        sent += due
        await asyncio.sleep(tick)
    await asyncio.sleep(1.0)
    close_pairs(pairs)
    return Rate(
        rate,
        len(latencies),
        sent,
        *(percentile(latencies, q) * 1000 for q in (50, 95, 99)),
    )


@dataclass
class Throughput:
    messages_per_second: float
    server_cpu: float


async def max_rate(
    ex: Exchange, pids: list[int], pairs_count: int, window: int, seconds: float
) -> Throughput:
    """Messages delivered per second with `window` in flight per sender: the server's ceiling."""
    pairs = await open_pairs(ex, pairs_count)
    frame = _relay_frame("ice_candidate", payloads.candidates(1)[0])
    delivered = 0
    deadline = time.monotonic() + seconds

    async def pump(a: leanws.LeanSocket, b: leanws.LeanSocket) -> None:
        nonlocal delivered
        into = ex.receiver(a, b)
        while time.monotonic() < deadline:
            for _ in range(window):
                a.send(frame)
            for _ in range(window):
                await into.recv()
            delivered += window

    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    await asyncio.gather(*(pump(a, b) for a, b in pairs))
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(pids) - cpu0) / elapsed
    close_pairs(pairs)
    return Throughput(delivered / elapsed, cpu)


# --- servers ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[tuple[int, int]]:
    """The echo server as a process: yields its port and pid."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.echo", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        yield int(json.loads(line)["port"]), proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


# --- the run ----------------------------------------------------------------------------------


async def measure_one(ex: Exchange, pids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ladder = [await setup_rate(ex, pids, c, args.step_seconds) for c in args.concurrency]
    out["setup"] = [asdict(s) for s in ladder]
    good = [s for s in ladder if s.relay_p99_ms < P99_TARGET * 1000 and not s.errors]
    out["best_setup"] = asdict(max(good, key=lambda s: s.sessions_per_second)) if good else None
    if args.sessions:
        result = await idle(ex, pids[0], args.sessions)
        out["idle"] = {**asdict(result), "bytes_per_socket": result.bytes_per_socket}
    out["fixed_rate"] = asdict(await fixed_rate(ex, args.rate_pairs, args.rate, args.rate_seconds))
    out["max_rate"] = asdict(await max_rate(ex, pids, 100, 16, args.step_seconds))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"server_flags": list(LIMIT_FLAGS)}
    os.sched_setaffinity(0, {CLIENT_CPU})

    @contextlib.asynccontextmanager
    async def pinned_stack(mode: str) -> AsyncIterator[Any]:
        os.sched_setaffinity(0, {SERVER_CPU})
        try:
            async with stack(mode, LIMIT_FLAGS) as target:
                os.sched_setaffinity(0, {CLIENT_CPU})
                yield target
        finally:
            os.sched_setaffinity(0, {CLIENT_CPU})

    @contextlib.asynccontextmanager
    async def pinned_echo() -> AsyncIterator[tuple[int, int]]:
        os.sched_setaffinity(0, {SERVER_CPU})
        try:
            async with echo_server() as port:
                os.sched_setaffinity(0, {CLIENT_CPU})
                yield port
        finally:
            os.sched_setaffinity(0, {CLIENT_CPU})

    print("signaling, one instance (memory store) ...", flush=True)
    async with pinned_stack("memory") as target:
        server = target.servers[0]
        results["signaling"] = await measure_one(Signaling(server.port), [server.proc.pid], args)
    print("bare aiohttp echo server ...", flush=True)
    async with pinned_echo() as (port, pid):
        results["echo"] = await measure_one(Echo(port), [pid], args)
    if args.cluster:
        print("signaling, 3 instances + redis + haproxy ...", flush=True)
        async with pinned_stack("redis") as target:
            port = int(target.url.rsplit(":", 1)[1].split("/")[0])
            pids = [s.proc.pid for s in target.servers]
            ladder = [
                await setup_rate(Signaling(port), pids, c, args.step_seconds)
                for c in args.concurrency
            ]
            good = [s for s in ladder if s.relay_p99_ms < P99_TARGET * 1000 and not s.errors]
            results["cluster"] = {
                "setup": [asdict(s) for s in ladder],
                "best_setup": asdict(max(good, key=lambda s: s.sessions_per_second))
                if good
                else None,
            }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument("--sessions", type=int, default=10000, help="idle sessions (x2 sockets)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="messages/s, fixed-rate run")
    parser.add_argument("--rate-pairs", type=int, default=500)
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    parser.add_argument("--no-cluster", dest="cluster", action="store_false")
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/bench.json"))
    args = parser.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        print("bench: needs 2 CPUs (one for the servers, one for the load)", file=sys.stderr)
        return 2
    limit = raise_nofile(2 * args.sessions + 100)
    if limit < 2 * args.sessions + 100:
        # One process holds all client sockets, and the server needs a few descriptors more.
        args.sessions = (limit - 100) // 2
        print(f"bench: descriptor limit {limit}: idle sessions cut to {args.sessions}")
    try:
        results = uvloop.run(run(args))
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    text = render(results)
    args.out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    return 0


def render(r: dict[str, Any]) -> str:
    """The four figures, for the signaling server and the echo ceiling, and their ratios."""
    sig, echo, cluster = r["signaling"], r["echo"], r.get("cluster")
    out = [
        "FileShare signaling capacity: servers pinned to CPU 0, load generator to CPU 1",
        "server flags raised for the benchmark: " + " ".join(r["server_flags"]),
        "",
        "setup ladder (sessions: create, join, offer, answer, 8+8 candidates, leave):",
    ]
    for label, res in (("signaling", sig), ("echo", echo), ("3+redis", cluster)):
        for st in res["setup"] if res else ():
            out.append(
                f"  {label:<9} c={st['concurrency']:<3} {st['sessions_per_second']:7.0f}/s"
                f"  relay p99 {st['relay_p99_ms']:7.2f} ms  errors {st['errors']}"
                f"  server CPU {st['server_cpu']:.2f}"
            )

    def best(res: dict[str, Any] | None) -> float:
        return float(res["best_setup"]["sessions_per_second"]) if res and res["best_setup"] else 0.0

    out.append("")
    out.append(f"{'':44}{'signaling':>12}{'echo':>12}{'ratio':>8}")

    def row(name: str, a: float, b: float, unit: str) -> None:
        ratio = a / b if b else float("nan")
        out.append(f"{name:<44}{a:>10.1f}{unit:>2}{b:>10.1f}{unit:>2}{ratio:>8.2f}")

    row("sessions/s at relay p99 < 50 ms", best(sig), best(echo), "")
    if "idle" in sig:
        row(
            f"idle sockets held ({sig['idle']['sockets']})",
            sig["idle"]["sockets"],
            echo["idle"]["sockets"],
            "",
        )
        row(
            "memory per idle socket, bytes",
            sig["idle"]["bytes_per_socket"],
            echo["idle"]["bytes_per_socket"],
            "",
        )
    fr_s, fr_e = sig["fixed_rate"], echo["fixed_rate"]
    for q in ("p50", "p95", "p99"):
        row(
            f"relay {q} at {fr_s['offered_per_second']:.0f} msg/s, ms",
            fr_s[f"{q}_ms"],
            fr_e[f"{q}_ms"],
            "",
        )
    row(
        "max relay rate, msg/s",
        sig["max_rate"]["messages_per_second"],
        echo["max_rate"]["messages_per_second"],
        "",
    )
    row(
        "  server CPU during it (cores)",
        sig["max_rate"]["server_cpu"],
        echo["max_rate"]["server_cpu"],
        "",
    )
    if cluster:
        out.append(
            f"3 instances + redis + haproxy: {best(cluster):.0f} sessions/s at relay "
            f"p99 < 50 ms (one instance: {best(sig):.0f}/s), all on the server CPU"
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
