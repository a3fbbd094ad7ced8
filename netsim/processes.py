"""Starting the project's servers as real processes: one place for how each is launched,
how its readiness is seen and how it is stopped. The lab and the tests both use it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from turn.launcher import stop_process


class MissingProgram(RuntimeError):
    """A program the project needs is not installed (`make lab` or `make test` installs it)."""


stop = stop_process  # one way to stop our children (SIGTERM, then SIGKILL), by their PID


def find_program(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise MissingProgram(f"{name} is not installed (make lab / make test install it)")
    return path


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private redis-server on a unix socket in `workdir` (keep its path short: unix sockets
    allow about 100 bytes); yields its URL."""
    sock = workdir / "redis.sock"
    proc = subprocess.Popen(
        [
            find_program("redis-server"),
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"unix://{sock}"
    finally:
        stop(proc)


SENTINEL_SERVICE = "fileshare"


@dataclass
class SentinelGroup:
    """A primary, its replica and three sentinels on loopback TCP ports (Sentinel hands out
    host:port addresses, so no unix sockets here)."""

    primary: subprocess.Popen[bytes]
    replica: subprocess.Popen[bytes]
    sentinels: list[subprocess.Popen[bytes]]
    ports: dict[str, int]  # "primary", "replica", "sentinel0".."sentinel2"

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{self.ports[f'sentinel{i}']}" for i in range(3))
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}/0"


def _start_redis(workdir: Path, name: str, port: int, *args: str) -> subprocess.Popen[bytes]:
    (workdir / name).mkdir(exist_ok=True)
    with (workdir / f"{name}.log").open("wb") as log_file:
        proc = subprocess.Popen(
            [find_program("redis-server"), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir / name,
        )
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"{name} did not start:\n{(workdir / f'{name}.log').read_text()}")
        time.sleep(0.02)


def _data_node(port: int, workdir: Path, name: str) -> list[str]:
    data = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return [*data, "--dir", str(workdir / name)]


SENTINEL_CONFIG = """\
port {port}
bind 127.0.0.1
dir {dir}
sentinel monitor {service} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {service} {down_after_ms}
sentinel failover-timeout {service} 10000
sentinel parallel-syncs {service} 1
"""


@contextlib.contextmanager
def redis_sentinel_group(workdir: Path, down_after_ms: int = 500) -> Iterator[SentinelGroup]:
    """Replication and three sentinels (quorum 2) that promote the replica `down_after_ms`
    after the primary stops answering; yields once every sentinel knows the others, so a
    failover can be agreed. Everything is stopped when the block ends, however it ends."""
    find_program("redis-sentinel")
    names = ("primary", "replica", "sentinel0", "sentinel1", "sentinel2")
    ports = {name: free_port() for name in names}
    started: list[subprocess.Popen[bytes]] = []
    try:
        started.append(
            _start_redis(
                workdir,
                "primary",
                ports["primary"],
                *_data_node(ports["primary"], workdir, "primary"),
            )
        )
        started.append(
            _start_redis(
                workdir,
                "replica",
                ports["replica"],
                *_data_node(ports["replica"], workdir, "replica"),
                "--replicaof",
                "127.0.0.1",
                str(ports["primary"]),
            )
        )
        for name in names[2:]:
            (workdir / name).mkdir(exist_ok=True)
            config = workdir / name / "sentinel.conf"  # sentinel rewrites it: its own copy
            config.write_text(
                SENTINEL_CONFIG.format(
                    port=ports[name],
                    dir=workdir / name,
                    service=SENTINEL_SERVICE,
                    primary=ports["primary"],
                    down_after_ms=down_after_ms,
                )
            )
            started.append(_start_redis(workdir, name, ports[name], str(config), "--sentinel"))
        group = SentinelGroup(started[0], started[1], started[2:], ports)
        _wait_for_sentinels(group)
        yield group
    finally:
        for proc in started:
            stop(proc)


def _wait_for_sentinels(group: SentinelGroup, timeout: float = 20.0) -> None:
    """Sentinels find each other through the primary (a hello every 2 s); until each knows the
    two others and the replica, a failover could not be agreed."""
    import redis  # (the product's client; only this helper needs it)

    deadline = time.monotonic() + timeout
    for index in range(3):
        client = redis.Redis(port=group.ports[f"sentinel{index}"], socket_timeout=1)
        try:
            while True:
                state = cast("dict[str, Any]", client.sentinel_master(SENTINEL_SERVICE))
                if int(state["num-other-sentinels"]) >= 2 and int(state["num-slaves"]) >= 1:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sentinels did not meet: {state}")
                time.sleep(0.1)
        finally:
            client.close()


@dataclass
class SignalEndpoint:
    """A signaling server's address (loopback, or the emulated internet's server address)."""

    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(kw_only=True)
class SignalProcess(SignalEndpoint):
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


async def start_signal(
    log_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 15.0,
    prefix: tuple[str, ...] = (),
    host: str = "127.0.0.1",
) -> SignalProcess:
    """`fileshare-signal` on a free port of `host` (several comma-separated: one port on each;
    inside a namespace when `prefix` is netns.in_namespace(...)); returns once it logs where
    it listens."""
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "signaling",
                "--host",
                host,
                "--port",
                "0",
                "--log-json",
                *args,
            ],
            stdout=log_file,
            stderr=log_file,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            for line in log_path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("event") == "listening":
                        first = host.split(",")[0]  # of several (a dual stack's): the first
                        port = int(entry["port"])
                        return SignalProcess(port, first, proc=proc, log_path=log_path)
            await asyncio.sleep(0.05)
        raise RuntimeError(f"fileshare-signal did not start:\n{log_path.read_text()}")
    except BaseException:  # also cancelled or interrupted while it starts: it must not stay
        stop(proc)
        raise


def route_tags(count: int) -> list[str]:
    """The tags (`--route-tag`) of `count` instances behind one front: 1 to 9."""
    if not 0 < count <= 9:
        raise ValueError("route tags of one digit: 1 to 9 instances")
    return [str(index + 1) for index in range(count)]


@contextlib.asynccontextmanager
async def signal_instances(
    workdir: Path, count: int, *args: str, name: str = "signal", tagged: bool = False
) -> AsyncIterator[list[SignalProcess]]:
    """`count` signaling servers named `name0`, `name1`, ... with the same flags (`tagged`:
    each with its route_tags() tag); all stopped when the block ends, however it ends."""
    started: list[SignalProcess] = []
    tags = [("--route-tag", tag) for tag in route_tags(count)] if tagged else [()] * count
    try:
        for index, tag in enumerate(tags):
            log = workdir / f"{name}-{index}.log"
            started.append(await start_signal(log, "--instance-id", f"{name}{index}", *tag, *args))
        yield started
    finally:
        for item in started:
            stop(item.proc)


def free_port() -> int:
    """A loopback TCP port free right now, for programs that cannot report the one they took."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


HAPROXY_CONFIG = """\
global
    maxconn {maxconn}
defaults
    mode http
    option forwardfor
    option redispatch 1
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 5s
    timeout tunnel 1h
frontend signal
    bind {host}:{port}
{per_source}    default_backend signal
backend signal
    balance roundrobin
    option httpchk GET /readyz
    http-check expect rstring '"status": "(ready|store unreachable)"'
    http-response set-header X-Served-By %s
{routes}{servers}
"""
# As the Ansible front, the check takes out a draining, dead or hung instance, not one whose
# (shared) store is unreachable: that one still answers `store_unavailable` (ansible/roles/lb).
# As the Ansible front: a connection naming a session (`?s=<number>`) goes to the instance whose
# route tag the number begins with while that instance is up (haproxy skips a use-server rule
# whose server is down), else to any; a failed connect is retried (haproxy's default 3 times)
# on another (redispatch).
ROUTE = "    use-server s{index} if {{ urlp(s) -m beg {tag} }}\n"
# As the Ansible front (ansible/roles/lb, its defaults): per source address, connections at
# once and requests per 10 s; twice the connections are dropped unread.
PER_SOURCE_LIMITS = """\
    stick-table type ipv6 size 1m expire 60s store conn_cur,http_req_rate(10s)
    tcp-request connection track-sc0 src
    tcp-request connection reject if {{ sc0_conn_cur gt {twice} }}
    http-request deny deny_status 429 if {{ sc0_conn_cur gt {connections} }}
    http-request deny deny_status 429 if {{ sc0_http_req_rate gt {requests} }}
"""


def _listening(prefix: tuple[str, ...], host: str, port: int) -> bool:
    """Something accepts TCP on host:port (in the namespace `prefix` enters, with `ss`)."""
    if not prefix:
        with socket.socket() as probe:
            return probe.connect_ex((host, port)) == 0
    listed = subprocess.run(
        [*prefix, find_program("ss"), "-Hltn", f"sport = :{port}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return f"{host}:{port}" in listed.stdout


@contextlib.contextmanager
def haproxy(
    workdir: Path,
    backend_ports: list[int],
    per_source: tuple[int, int] | None = (100, 100),
    prefix: tuple[str, ...] = (),
    host: str = "127.0.0.1",
    tags: list[str] | None = None,
) -> Iterator[int]:
    """haproxy on a free port of `host` before signaling instances on 127.0.0.1 (round robin,
    checked on /readyz, WebSocket tunnels kept for an hour), inside a namespace when `prefix`
    is netns.in_namespace(...); it names the instance that served a connection in
    `X-Served-By`. `per_source`: connections at once and requests per 10 s one source address
    may have (None: unlimited, for load tests from one address). `tags`: the instances' route
    tags (route_tags()), in the order of their ports, for session affinity. Yields its port."""
    port = free_port()
    # Each proxied connection takes two descriptors; haproxy refuses a maxconn it cannot hold.
    maxconn = (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 100) // 2
    servers = "\n".join(
        f"    server s{i} 127.0.0.1:{p} check inter 1s" for i, p in enumerate(backend_ports)
    )
    routes = "".join(ROUTE.format(index=i, tag=tag) for i, tag in enumerate(tags or ()))
    config = workdir / "haproxy.cfg"
    limits = ""
    if per_source is not None:
        connections, requests = per_source
        limits = PER_SOURCE_LIMITS.format(
            twice=2 * connections, connections=connections, requests=requests
        )
    config.write_text(
        HAPROXY_CONFIG.format(
            maxconn=maxconn,
            host=host,
            port=port,
            routes=routes,
            servers=servers,
            per_source=limits,
        )
    )
    log_path = workdir / "haproxy.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [*prefix, find_program("haproxy"), "-db", "-q", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 10
        while not _listening(prefix, host, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{log_path.read_text()}")
            time.sleep(0.02)
        yield port
    finally:
        stop(proc)
