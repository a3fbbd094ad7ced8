"""`ansible/site.yml` deployed for real, over SSH, onto systemd containers (tests.deploy_stack),
then proven from the outside: /readyz through the TLS front, STUN and TURN against the deployed
coturn, a relay-only fileshare transfer through the whole stack, the firewalls; then a second
run and a --check --diff run that change nothing, and a TURN secret rotation as a rolling update
that keeps the service up; last, the Redis primary is killed while clients make sessions
through the front, and Sentinel's failover is timed.

One test, in order: each step needs the previous ones, and one stack is all 2 cores can hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from netsim import docker_host
from netsim.lab import Client, sha256
from netsim.processes import MissingProgram, find_program
from tests.conftest import IN_CI
from tests.deploy_stack import SIGNALING_PORTS, Recap, Stack, deploy_stack


def unavailable(reason: str) -> None:
    """No Docker here: one line, a failure in CI and a skip elsewhere."""
    message = f"deploy test: {reason}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def log(step: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {step}", flush=True)


def assert_ran(recap: Recap, what: str) -> None:
    assert recap.returncode == 0 and recap.hosts, f"{what} failed:\n{recap.tail()}"
    assert recap.total("failed") == 0 and recap.total("unreachable") == 0, recap.tail()


def get(stack: Stack, path: str, timeout: float = 5) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(stack.ca))
    try:
        with urllib.request.urlopen(stack.url(path), timeout=timeout, context=context) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def blocked(ip: str, port: int) -> bool:
    """True when the firewall drops a TCP connection (no answer at all, not even a refusal)."""
    try:
        socket.create_connection((ip, port), timeout=2).close()
    except TimeoutError:
        return True
    except OSError:
        return False
    return False


def run_tool(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m ...` from this venv, on the test network only."""
    return subprocess.run(
        [*stack.client_prefix(), sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parent.parent,
    )


def start_client(stack: Stack, name: str, *args: str, env: dict[str, str]) -> Client:
    out, err = stack.workdir / f"{name}.out", stack.workdir / f"{name}.err"
    full_env = {
        **os.environ,
        "SSL_CERT_FILE": str(stack.ca),
        "FILESHARE_STATE_DIR": str(stack.workdir / f"state-{name}"),
        **env,
    }
    argv = [*stack.client_prefix(), sys.executable, "-m", "fileshare", args[0], "--json"]
    argv += ["--server", stack.url("/ws"), *args[1:]]
    with out.open("wb") as out_file, err.open("wb") as err_file:
        proc = subprocess.Popen(
            argv, stdout=out_file, stderr=err_file, env=full_env, stdin=subprocess.DEVNULL
        )
    return Client(proc, out, err)


async def relay_only_transfer(stack: Stack) -> None:
    src = stack.workdir / "payload.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    out = stack.workdir / "received"
    sender = start_client(stack, "send", "send", "--relay-only", str(src), env={})
    try:
        code = (await sender.wait_event("code"))["code"]
        receiver = start_client(
            stack,
            "recv",
            "receive",
            "--relay-only",
            "--out",
            str(out),
            env={"FILESHARE_CODE": code},
        )
        try:
            assert await receiver.wait() == 0, receiver.err.read_text()
            assert await sender.wait() == 0, sender.err.read_text()
        finally:
            receiver.kill()
    finally:
        sender.kill()
    assert sha256(out / src.name) == sha256(src)
    for client in (sender, receiver):
        path = (client.first("connected") or {}).get("path", {})
        assert (path.get("local"), path.get("remote")) == ("relay", "relay"), path


@contextlib.contextmanager
def readiness_watch(stack: Stack) -> Iterator[list[tuple[float, int]]]:
    """Polls /readyz through the TLS front until the block ends; yields (time, status) pairs,
    status 0 when no answer came."""
    seen: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.2):
            try:
                status, _ = get(stack, "/readyz", timeout=3)
            except OSError:
                status = 0
            seen.append((time.monotonic(), status))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.timeout(1800)
def test_site_yml_deploys_the_stack_and_is_idempotent(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    started = time.monotonic()
    if os.geteuid() != 0:
        unavailable("needs root (it starts dockerd and boots containers)")
    for program in ("dockerd", "debootstrap", "nsenter", "ssh"):
        try:
            find_program(program)
        except MissingProgram as exc:
            unavailable(str(exc))
    workdir = tmp_path_factory.mktemp("deploy", numbered=True)
    try:
        with deploy_stack(workdir) as stack:
            log("containers up, reachable over SSH", started)
            check_stack(stack, started)
    except docker_host.EngineUnavailable as exc:
        unavailable(str(exc))


def check_stack(stack: Stack, started: float) -> None:
    first = stack.playbook("deploy")
    assert_ran(first, "the first deploy")
    assert set(first.hosts) == {"lb1", "signal1", "signal2", "turn1", "redis1", "redis2"}
    log(f"deployed ({first.total('changed')} changes)", started)

    status, body = get(stack, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready", body
    assert get(stack, "/metrics")[0] == 404  # the front serves /ws and /readyz, nothing else

    turn = stack.ips["turn1"]
    ping = run_tool(stack, "turn", "ping", f"{turn}:3478", "--transport", "udp")
    assert ping.returncode == 0 and json.loads(ping.stdout)["ok"], ping.stdout + ping.stderr
    secret = ("--secret-file", str(stack.turn_secret_file))
    for port, transport in (
        (3478, ("udp",)),
        (3478, ("tcp",)),
        (5349, ("tls", "--ca", str(stack.ca))),
    ):
        probe = run_tool(
            stack, "turn", "probe", f"{turn}:{port}", "--transport", *transport, *secret
        )
        assert probe.returncode == 0, probe.stdout + probe.stderr
    log("TLS front ready, STUN binding and TURN allocations (UDP, TCP, TLS) granted", started)

    asyncio.run(relay_only_transfer(stack))
    log("relay-only transfer through the deployed stack", started)

    check_firewalls(stack)
    log("firewalls and scrape targets", started)

    second = stack.playbook("rerun")
    assert_ran(second, "the second run")
    assert second.total("changed") == 0, f"not idempotent: {second.hosts}\n{second.tail(200)}"
    log("second run: nothing changed", started)

    check = stack.playbook("check", "--check", "--diff")
    assert_ran(check, "--check --diff")
    assert check.total("changed") == 0, f"--check --diff: {check.hosts}\n{check.tail(200)}"
    log("--check --diff: nothing to change", started)

    check_rolling_update(stack)
    log("TURN secret rotation as a rolling update: /readyz up, a held session got 1012", started)

    recovered = check_redis_failover(stack)
    log(f"Redis primary SIGKILLed under load: sessions again after {recovered:.1f} s", started)


def check_firewalls(stack: Stack) -> None:
    ips = stack.ips
    # The controller is none of the stack's hosts: Redis and the instances are closed to it.
    assert blocked(ips["redis1"], 6379)
    assert blocked(ips["signal1"], SIGNALING_PORTS[0])
    assert blocked(ips["lb1"], 80)
    # Prometheus (the lb host here) scrapes every instance directly.
    for host in ("signal1", "signal2"):
        for port in SIGNALING_PORTS:
            url = f"http://{ips[host]}:{port}/metrics"
            code, output = stack.exec(
                "lb1",
                "python3",
                "-c",
                f"import urllib.request as u; print(u.urlopen('{url}').read().decode())",
            )
            assert code == 0 and "fileshare" in output, output[-500:]
    code, text = stack.exec("lb1", "cat", "/etc/prometheus/file_sd/fileshare-signaling.yml")
    targets = {t for group in yaml.safe_load(text) for t in group["targets"]}
    assert targets == {f"{ips[h]}:{p}" for h in ("signal1", "signal2") for p in SIGNALING_PORTS}


async def held_session(stack: Stack, ready: asyncio.Event) -> int | None:
    """A client that created a session through the front and stays connected: returns the
    close code its instance sent when it drained."""
    context = ssl.create_default_context(cafile=str(stack.ca))
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(stack.url("/ws"), ssl=context) as ws,
    ):
        await ws.send_json({"v": 1, "type": "create_session", "id": 1})
        assert (await ws.receive_json(timeout=10))["type"] == "session_created"
        ready.set()
        async for _ in ws:
            pass
        return ws.close_code


async def rolling_update(stack: Stack, extra: Path) -> tuple[Recap, int | None]:
    ready = asyncio.Event()
    held = asyncio.create_task(held_session(stack, ready))
    await asyncio.wait_for(ready.wait(), 10)
    update = await asyncio.to_thread(stack.playbook, "update", "-e", f"@{extra}")
    return update, await asyncio.wait_for(held, 60)


def main_pid(stack: Stack, host: str) -> str:
    unit = f"fileshare-signal@{SIGNALING_PORTS[0]}"
    return stack.exec(host, "systemctl", "show", "-P", "MainPID", unit)[1]


def write_secret(path: Path, secret: str) -> Path:
    path.write_text(secret)
    path.chmod(0o600)
    return path


def turn_probe(stack: Stack, secret_file: Path) -> subprocess.CompletedProcess[str]:
    return run_tool(
        stack, "turn", "probe", f"{stack.ips['turn1']}:3478", "--secret-file", str(secret_file)
    )


def check_rolling_update(stack: Stack) -> None:
    """Step 1 of a TURN secret rotation (ansible/README.md), as a rolling update: coturn accepts
    the new and the old secret, the signaling instances restart host by host with the new one,
    each drained by SIGTERM (a client holding a session gets 1012: reconnect), the TLS front
    keeps answering /readyz, and nothing else restarts."""
    old = stack.turn_secret_file.read_text()
    new = secrets.token_hex(32)
    extra = write_secret(
        stack.workdir / "rotation.yml",
        json.dumps({"fileshare_turn_secret": new, "fileshare_turn_previous_secrets": [old]}),
    )
    before = {host: main_pid(stack, host) for host in ("signal1", "signal2")}
    with readiness_watch(stack) as seen:
        update, close_code = asyncio.run(rolling_update(stack, extra))
    assert_ran(update, "the rolling update")
    assert update.changed_hosts() == {"signal1", "signal2", "turn1"}, update.hosts
    failures = [status for _, status in seen if status != 200]
    assert seen and not failures, f"{len(failures)} of {len(seen)} /readyz polls failed: {failures}"
    assert close_code == 1012, close_code
    for host in ("signal1", "signal2"):
        assert main_pid(stack, host) != before[host], f"{host} was not restarted"
        code, _ = stack.exec(
            host, "grep", "-q", f"^FILESHARE_TURN_SECRET={new}$", "/etc/fileshare/signal.env"
        )
        assert code == 0, f"{host} does not sign with the new secret"
    for secret_file in (stack.turn_secret_file, write_secret(stack.workdir / "new-secret", new)):
        probe = turn_probe(stack, secret_file)
        assert probe.returncode == 0, probe.stdout + probe.stderr


# Polls each instance's /readyz from the lb host (the instances are closed to the controller)
# every 0.1 s for the given seconds; prints one "time url status" line per change.
READYZ_WATCH = """
import sys, time, urllib.request
until, urls, last = time.monotonic() + float(sys.argv[1]), sys.argv[2:], {}
while time.monotonic() < until:
    for url in urls:
        try:
            status = urllib.request.urlopen(url, timeout=1).status
        except Exception as exc:
            status = getattr(exc, "code", 0)
        if last.get(url) != status:
            last[url] = status
            print(f"{time.time():.3f} {url} {status}", flush=True)
    time.sleep(0.1)
"""


async def _next_of(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next message of this type (or an error, which ends the wait too)."""
    while True:
        event: dict[str, Any] = await ws.receive_json()
        if event["type"] in (kind, "error"):
            return event


async def session_round(stack: Stack, context: ssl.SSLContext) -> str:
    """One session made and used through the front: "ok", or what refused it."""
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.ws_connect(stack.url("/ws"), ssl=context) as a,
            http.ws_connect(stack.url("/ws"), ssl=context) as b,
        ):
            await a.send_json({"v": 1, "type": "create_session", "id": 1})
            created = await a.receive_json(timeout=10)
            if created["type"] != "session_created":
                return str(created.get("code"))
            join = {"sessionId": created["sessionId"], "token": created["token"]}
            await b.send_json({"v": 1, "type": "join_session", "id": 1, **join})
            joined = await b.receive_json(timeout=10)
            if joined["type"] != "session_joined":
                return str(joined.get("code"))
            await b.send_json({"v": 1, "type": "signal", "id": 2, "payload": {"n": 1}})
            delivered = asyncio.create_task(_next_of(a, "signal"))
            refused = asyncio.create_task(_next_of(b, "error"))  # b's relay refused
            done, pending = await asyncio.wait(
                {delivered, refused}, timeout=10, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if not done:
                return "TimeoutError"
            event = done.pop().result()
            if event["type"] != "signal":
                return str(event.get("code"))
            await a.send_json({"v": 1, "type": "leave_session", "id": 3})  # frees its place
            left = await asyncio.wait_for(_next_of(a, "left"), 10)
            return "ok" if left["type"] == "left" else str(left.get("code"))
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
        return exc.__class__.__name__


SESSIONS_PER_SECOND = 3.0  # two connections each: 6 a second, under the 10 a second per address


async def sessions_through(
    stack: Stack, seconds: float, users: int
) -> list[tuple[float, float, str]]:
    """`users` clients making sessions, together SESSIONS_PER_SECOND (all from this one address,
    so within its per-source limits: the front's and the servers' connection rates):
    (start, end, outcome) of each."""
    context = ssl.create_default_context(cafile=str(stack.ca))
    rounds: list[tuple[float, float, str]] = []
    until = time.monotonic() + seconds

    async def user() -> None:
        while time.monotonic() < until:
            began = time.monotonic()
            outcome = await session_round(stack, context)
            rounds.append((began, time.monotonic(), outcome))
            await asyncio.sleep(max(0.0, began + users / SESSIONS_PER_SECOND - time.monotonic()))

    await asyncio.gather(*(user() for _ in range(users)))
    return rounds


def redis_roles(stack: Stack, timeout: float = 60) -> tuple[str, str]:
    """(primary, replica) as the sentinels and the nodes themselves agree on them; waits for a
    node that comes back (systemd restarts a killed one after 3 x down-after) to replicate."""
    deadline = time.monotonic() + timeout
    while True:
        _, answer = stack.exec(
            "redis1", "redis-cli", "-p", "26379", "sentinel", "get-master-addr-by-name", "fileshare"
        )
        primary = next(h for h in ("redis1", "redis2") if stack.ips[h] in answer.split())
        replica = "redis2" if primary == "redis1" else "redis1"
        _, info = stack.exec(
            replica, "redis-cli", "-p", "26379", "sentinel", "replicas", "fileshare"
        )
        if stack.ips[replica] in info and "s_down" not in info:
            return primary, replica
        assert time.monotonic() < deadline, f"no replica of {primary}: {info}"
        time.sleep(1)


def check_redis_failover(stack: Stack) -> float:
    """SIGKILL the Redis primary (by its PID) while clients make sessions through the front:
    requests in the outage fail with a clear error (or their session is refused), Sentinel
    promotes the replica, the instances follow it without a restart, /readyz of each shows the
    outage and the recovery, and the old primary returns as a replica. Returns the seconds from
    the kill to the first session made after it that worked."""
    ips = stack.ips
    primary, replica = redis_roles(stack)
    pids = {host: main_pid(stack, host) for host in ("signal1", "signal2")}
    redis_pid = stack.exec(primary, "systemctl", "show", "-P", "MainPID", "redis-server")[1]
    urls = [f"http://{ips[h]}:{p}/readyz" for h in ("signal1", "signal2") for p in SIGNALING_PORTS]
    watch = threading.Thread(
        target=lambda: watched.append(
            stack.exec("lb1", "python3", "-c", READYZ_WATCH, "25", *urls)[1]
        )
    )
    watched: list[str] = []
    watch.start()
    killed_at = 0.0

    async def load_and_kill() -> list[tuple[float, float, str]]:
        nonlocal killed_at
        load = asyncio.create_task(sessions_through(stack, 20.0, users=4))
        await asyncio.sleep(5.0)
        killed_at = time.monotonic()
        code, output = stack.exec(primary, "kill", "-KILL", redis_pid.strip())
        assert code == 0, output
        wall_killed_at.append(time.time())
        return await load

    wall_killed_at: list[float] = []
    rounds = asyncio.run(load_and_kill())
    watch.join(60)
    before = [o for _, end, o in rounds if end < killed_at]
    after = [(began, end, o) for began, end, o in rounds if began >= killed_at]
    assert before and set(before) == {"ok"}, before
    failed = [o for _, _, o in after if o != "ok"]
    assert set(failed) <= {"store_unavailable", "peer_unavailable", "session_not_found"}, failed
    first_ok = min(end for _, end, o in after if o == "ok")
    assert all(o == "ok" for began, _, o in after if began > first_ok + 2), after
    recovered = first_ok - killed_at
    # Each instance's /readyz went 503 after the kill and back to 200 (no restart: same PIDs).
    changes = [line.split() for line in watched[0].splitlines()]
    for url in urls:
        seen = [
            int(status)
            for when, u, status in changes
            if u == url and float(when) > wall_killed_at[0]
        ]
        assert seen and seen[0] != 200 and seen[-1] == 200, (url, watched[0])
    assert {host: main_pid(stack, host) for host in pids} == pids, "an instance restarted"
    assert redis_roles(stack) == (replica, primary)  # promoted; the old one back as replica
    print(
        f"redis failover: first session {recovered:.1f} s after the primary's SIGKILL; "
        f"{len(failed)} of {len(after)} sessions after it refused ({sorted(set(failed))}); "
        f"readyz changes: {watched[0].strip()!r}",
        flush=True,
    )
    return recovered
