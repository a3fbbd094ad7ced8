"""`ansible/site.yml` deployed for real, over SSH, onto systemd containers (tests.deploy_stack),
then proven from the outside: /readyz through the TLS front, STUN and TURN against the deployed
coturn, a relay-only fileshare transfer through the whole stack, the web app through the front
in Chromium sending to a CLI through coturn, `fileshare doctor` against the stack, the
firewalls; then a second run and a --check --diff run that change nothing, both steps of a TURN
secret rotation (a rolling update that keeps the service up, then the old secret retired), the
Redis primary killed while clients make sessions through the front (Sentinel's failover timed),
two more releases and what pruning leaves, and last the front switched to ACME against pebble
(issued over HTTP-01, renewed, haproxy reloaded).

One test, in order: each step needs the previous ones, and one stack is all 2 cores can hold.
Each step's time and the failover's recovery time are printed at the end of any pytest run
(recorded properties, tests/conftest.py), not only under -s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509
from playwright.async_api import async_playwright

from netsim import certs, docker_host
from netsim.browser_client import CHROMIUM
from netsim.lab import Client, sha256
from netsim.processes import MissingProgram, find_program
from tests.conftest import IN_CI, require_webapp
from tests.deploy_stack import SIGNALING_PORTS, Recap, Stack, deploy_stack


def unavailable(reason: str) -> None:
    """No Docker here: one line, a failure in CI and a skip elsewhere."""
    message = f"deploy test: {reason}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class Timeline:
    """Each step's time and each figure, printed as it comes (seen under -s) and recorded as a
    property of the test, which the run's summary prints (tests/conftest.py) and JUnit carries:
    a plain `pytest` in CI shows them."""

    def __init__(self, record: Callable[[str, object], None]) -> None:
        self.record = record
        self.started = self.last = time.monotonic()

    def step(self, key: str, said: str) -> None:
        now = time.monotonic()
        print(f"[{now - self.started:6.1f}s] {said}", flush=True)
        self.record(f"{key} (s)", round(now - self.last, 1))
        self.last = now

    def figure(self, name: str, value: object) -> None:
        print(f"{name}: {value}", flush=True)
        self.record(name, value)


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


def relay_only_receiver(stack: Stack, name: str, code: str, out: Path) -> Client:
    return start_client(
        stack, name, "receive", "--relay-only", "--out", str(out), env={"FILESHARE_CODE": code}
    )


def assert_relayed(client: Client) -> None:
    path = (client.first("connected") or {}).get("path", {})
    assert (path.get("local"), path.get("remote")) == ("relay", "relay"), path


async def relay_only_transfer(stack: Stack) -> None:
    src = stack.workdir / "payload.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024))
    out = stack.workdir / "received"
    sender = start_client(stack, "send", "send", "--relay-only", str(src), env={})
    try:
        code = (await sender.wait_event("code"))["code"]
        receiver = relay_only_receiver(stack, "recv", code, out)
        try:
            assert await receiver.wait() == 0, receiver.report()
            assert await sender.wait() == 0, sender.report()
        finally:
            receiver.kill()
    finally:
        sender.kill()
    assert sha256(out / src.name) == sha256(src)
    for client in (sender, receiver):
        assert_relayed(client)


async def browser_sends_to_cli(stack: Stack) -> None:
    """The web app, served through the TLS front, in Debian's Chromium on the test network: it
    sends a file to a relay-only CLI, so the data goes through the deployed coturn (its deny
    list refuses the lab's host addresses: the page relays too), and both show the same words."""
    src = stack.workdir / "from-browser.bin"
    src.write_bytes(os.urandom(512 * 1024))
    out = stack.workdir / "from-browser"
    wrapper = stack.workdir / "chromium-on-test-network"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(stack.client_prefix())} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=wrapper, headless=True)
        try:
            # The front's certificate is the test's own CA's (the page's checks are the same).
            page = await (await browser.new_context(ignore_https_errors=True)).new_page()
            await page.goto(stack.url("/"))
            await page.wait_for_selector("body[data-state=ready]")
            await page.set_input_files("#files", [str(src)])
            await page.wait_for_selector("#share:not([hidden])")
            code = str(await page.text_content("#code"))
            receiver = relay_only_receiver(stack, "browser-recv", code, out)
            try:
                assert await receiver.wait() == 0, receiver.report()
            finally:
                receiver.kill()
            await page.wait_for_selector(
                "body[data-state=done], body[data-state=failed]", timeout=60_000
            )
            assert await page.evaluate("document.body.dataset.state") == "done"
            assert (receiver.first("sas") or {}).get("words") == await page.text_content("#sas")
        finally:
            await browser.close()
    assert sha256(out / src.name) == sha256(src)
    assert_relayed(receiver)


def check_doctor(stack: Stack) -> None:
    """`fileshare doctor --json` against the deployed stack from the test network (no NAT):
    the server is reached through the front (its version and clock from /healthz), STUN maps
    us to our own address, TURN allocates over UDP, TCP and TLS. This coturn listens on one
    address (no RFC 5780), so the NAT's behaviour cannot be told: the verdict says so, and that
    relayed transfers will work."""
    env = {**os.environ, "SSL_CERT_FILE": str(stack.ca)}
    argv = [*stack.client_prefix(), sys.executable, "-m", "fileshare", "doctor", "--json"]
    done = subprocess.run(
        [*argv, "--server", stack.url("/ws")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    signaling = report["findings"]["signaling"]
    assert signaling["reachable"] and signaling["version"], signaling
    assert abs(signaling["clock_offset_s"]) < 5, signaling
    stun = report["findings"]["stun"]
    assert [s["mapped"].rpartition(":")[0] for s in stun] == [stack.mirror_ip], stun
    turns = {t["transport"]: t for t in report["findings"]["turn"]}
    assert set(turns) == {"udp", "tcp", "tls"}, turns
    assert all(t["ok"] for t in turns.values()), turns
    verdict = report["verdict"]
    assert verdict["kind"] == "unknown_nat", verdict
    assert "relayed transfers will work" in verdict["headline"], verdict


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


@pytest.mark.timeout(3600)  # about 15 minutes on a quiet machine; 40 under load 15
def test_site_yml_deploys_the_stack_and_is_idempotent(
    tmp_path_factory: pytest.TempPathFactory, record_property: Callable[[str, object], None]
) -> None:
    timeline = Timeline(record_property)
    if os.geteuid() != 0:
        unavailable("needs root (it starts dockerd and boots containers)")
    for program in ("dockerd", "debootstrap", "nsenter", "ssh", CHROMIUM, "pebble"):
        try:
            find_program(program)
        except MissingProgram as exc:
            unavailable(str(exc))
    require_webapp()  # the wheel carries the web app the front serves
    workdir = tmp_path_factory.mktemp("deploy", numbered=True)
    try:
        with deploy_stack(workdir) as stack:
            timeline.step("boot", "containers up, reachable over SSH")
            check_stack(stack, timeline)
    except docker_host.EngineUnavailable as exc:
        unavailable(str(exc))


def check_stack(stack: Stack, timeline: Timeline) -> None:
    first = stack.playbook("deploy")
    assert_ran(first, "the first deploy")
    assert set(first.hosts) == {"lb1", "signal1", "signal2", "turn1", "redis1", "redis2"}
    timeline.step("first deploy", f"deployed ({first.total('changed')} changes)")

    status, body = get(stack, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready", body
    assert get(stack, "/metrics")[0] == 404  # the front serves the app, /ws, /readyz, /healthz

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
    timeline.step("turn probes", "TLS front ready, STUN and TURN allocations (UDP, TCP, TLS)")

    asyncio.run(relay_only_transfer(stack))
    timeline.step("relay-only transfer", "relay-only CLI transfer through the deployed stack")

    asyncio.run(browser_sends_to_cli(stack))
    timeline.step("browser transfer", "the web app in Chromium sent to a CLI through coturn")

    check_doctor(stack)
    timeline.step("doctor", "fileshare doctor --json: reached, TURN over UDP/TCP/TLS, relays work")

    check_firewalls(stack)
    timeline.step("firewalls", "firewalls and scrape targets")

    second = stack.playbook("rerun")
    assert_ran(second, "the second run")
    assert second.total("changed") == 0, f"not idempotent: {second.hosts}\n{second.tail(200)}"
    timeline.step("second run", "second run: nothing changed")

    check = stack.playbook("check", "--check", "--diff")
    assert_ran(check, "--check --diff")
    assert check.total("changed") == 0, f"--check --diff: {check.hosts}\n{check.tail(200)}"
    timeline.step("check run", "--check --diff: nothing to change")

    old_secret, new_secret = check_rolling_update(stack)
    timeline.step("rotation step 1", "TURN secret rotation step 1, rolling: /readyz up, 1012")

    check_secret_retired(stack, old_secret, new_secret)
    timeline.step("rotation step 2", "rotation step 2: the old secret refused, the new one works")

    recovered = check_redis_failover(stack)
    timeline.figure("redis failover recovery (s)", round(recovered, 2))
    timeline.step("redis failover", "Redis primary SIGKILLed under load, sessions again")

    check_pruning(stack)
    timeline.step("pruning", "two more releases: old releases and wheels pruned")

    with pebble(stack) as (directory, pebble_ca):
        check_acme(stack, directory, pebble_ca)
    timeline.step("acme", "ACME: issued by pebble over HTTP-01, renewed, haproxy reloaded")

    check_turn_renewal(stack)
    timeline.step("turn renewal", "coturn's renewal hook: the new certificate served, no restart")


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


async def rolling_update(stack: Stack) -> tuple[Recap, int | None]:
    ready = asyncio.Event()
    held = asyncio.create_task(held_session(stack, ready))
    await asyncio.wait_for(ready.wait(), 10)
    update = await asyncio.to_thread(stack.playbook, "rotate-1")
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


def check_rolling_update(stack: Stack) -> tuple[Path, Path]:
    """Step 1 of a TURN secret rotation (ansible/README.md), as a rolling update: coturn accepts
    the new and the old secret, the signaling instances restart host by host with the new one,
    each drained by SIGTERM (a client holding a session gets 1012: reconnect), the TLS front
    keeps answering /readyz, and nothing else restarts. Returns the old and new secret files."""
    old = stack.turn_secret_file.read_text()
    new = secrets.token_hex(32)
    stack.configure(fileshare_turn_secret=new, fileshare_turn_previous_secrets=[old])
    before = {host: main_pid(stack, host) for host in ("signal1", "signal2")}
    with readiness_watch(stack) as seen:
        update, close_code = asyncio.run(rolling_update(stack))
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
    old_file = stack.turn_secret_file
    stack.turn_secret_file = write_secret(stack.workdir / "turn-secret-new", new)
    for secret_file in (old_file, stack.turn_secret_file):
        probe = turn_probe(stack, secret_file)
        assert probe.returncode == 0, probe.stdout + probe.stderr
    return old_file, stack.turn_secret_file


def check_secret_retired(stack: Stack, old_file: Path, new_file: Path) -> None:
    """Step 2 of the rotation (run once the credentials' longest lifetime has passed; here at
    once): the old secret leaves coturn's list. Only the TURN host changes (the instances sign
    with the new secret since step 1), the front keeps answering /readyz, credentials signed
    with the old secret are refused (401, the probe's exit 3) and new ones allocate."""
    stack.configure(fileshare_turn_previous_secrets=[])
    with readiness_watch(stack) as seen:
        update = stack.playbook("rotate-2")
    assert_ran(update, "the rotation's second step")
    assert update.changed_hosts() == {"turn1"}, update.hosts
    failures = [status for _, status in seen if status != 200]
    assert seen and not failures, f"{len(failures)} of {len(seen)} /readyz polls failed: {failures}"
    _, count = stack.exec("turn1", "grep", "-c", "^static-auth-secret=", "/etc/turnserver.conf")
    assert count.strip() == "1", count
    refused = turn_probe(stack, old_file)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    granted = turn_probe(stack, new_file)
    assert granted.returncode == 0, granted.stdout + granted.stderr


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
    if len(last) == len(urls) and "watching" not in last:
        last["watching"] = True
        print("watching", flush=True)
    time.sleep(0.1)
"""


class ReadyzWatch(threading.Thread):
    """READYZ_WATCH on `host`, its lines gathered as they come; `started()` waits for its first
    look at every URL (starting a process in a container takes seconds on a loaded machine: a
    watch that starts after the event sees only its end)."""

    def __init__(self, stack: Stack, host: str, seconds: float, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.argv = ["python3", "-c", READYZ_WATCH, str(seconds), *urls]
        self.container = stack.containers[host]
        self.output = ""
        self.watching = threading.Event()

    def run(self) -> None:
        for chunk in self.container.exec_run(self.argv, stream=True).output:
            assert isinstance(chunk, bytes), chunk
            self.output += chunk.decode(errors="replace")
            if "watching\n" in self.output:
                self.watching.set()

    def started(self, timeout: float = 60) -> None:
        self.start()
        assert self.watching.wait(timeout), f"the /readyz watch did not start: {self.output}"

    def changes(self) -> list[list[str]]:
        return [line.split() for line in self.output.splitlines() if line != "watching"]


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
    watch = ReadyzWatch(stack, "lb1", 40, urls)
    watch.started()
    killed_at = 0.0

    async def load_and_kill() -> list[tuple[float, float, str]]:
        nonlocal killed_at
        load = asyncio.create_task(sessions_through(stack, 20.0, users=4))
        await asyncio.sleep(5.0)
        killed_at = time.monotonic()
        wall_killed_at.append(time.time())
        code, output = stack.exec(primary, "kill", "-KILL", redis_pid.strip())
        assert code == 0, output
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
    changes = watch.changes()
    for url in urls:
        seen = [
            int(status)
            for when, u, status in changes
            if u == url and float(when) > wall_killed_at[0]
        ]
        assert seen and seen[0] != 200 and seen[-1] == 200, (url, watch.output)
    assert {host: main_pid(stack, host) for host in pids} == pids, "an instance restarted"
    assert redis_roles(stack) == (replica, primary)  # promoted; the old one back as replica
    print(
        f"redis failover: first session {recovered:.1f} s after the primary's SIGKILL; "
        f"{len(failed)} of {len(after)} sessions after it refused ({sorted(set(failed))}); "
        f"readyz changes: {watch.output.strip()!r}",
        flush=True,
    )
    return recovered


def rebuilt(wheel: Path, build: int, where: Path) -> Path:
    """The same wheel as a new release: a build tag in its name and a zip comment in its bytes
    (the role names a release by the wheel's hash)."""
    name, version, rest = wheel.name.split("-", 2)
    copy = where / f"{name}-{version}-{build}-{rest}"
    shutil.copyfile(wheel, copy)
    with zipfile.ZipFile(copy, "a") as archive:
        archive.comment = f"release {build}".encode()
    return copy


def listing(stack: Stack, host: str, folder: str) -> set[str]:
    code, output = stack.exec(host, "ls", "-1", folder)
    assert code == 0, output
    return set(output.split())


def check_pruning(stack: Stack) -> None:
    """Two more releases onto signal1, keeping one besides the current: the oldest release and
    its wheel are removed, the current and the one before stay, the host's wheelhouse is
    exactly the controller's, and the instances run the newest release."""
    wheel = Path(stack.settings()["signaling_wheel"])
    wheelhouse = Path(stack.settings()["signaling_wheelhouse"])
    root = "/opt/fileshare"
    first = listing(stack, "signal1", f"{root}/releases")
    assert len(first) == 1, first
    builds = [rebuilt(wheel, build, stack.workdir) for build in (1, 2)]
    for build in builds:
        settings = {"signaling_wheel": str(build), "signaling_keep_releases": 1}
        release = stack.playbook(build.stem, "--limit", "signal1", "-e", json.dumps(settings))
        assert_ran(release, f"the release of {build.name}")
    releases = listing(stack, "signal1", f"{root}/releases")
    assert len(releases) == 2 and not releases & first, releases
    _, current = stack.exec("signal1", "readlink", f"{root}/current")
    assert current.strip().rpartition("/")[2] in releases, current
    assert listing(stack, "signal1", f"{root}/dist") == {b.name for b in builds}
    assert listing(stack, "signal1", f"{root}/wheelhouse") == {w.name for w in wheelhouse.iterdir()}
    # The instance restarted into it: its interpreter is the new release's venv.
    _, cmdline = stack.exec("signal1", "cat", f"/proc/{main_pid(stack, 'signal1').strip()}/cmdline")
    assert cmdline.startswith(current.strip() + "/bin/python"), cmdline
    assert get(stack, "/readyz")[0] == 200


PEBBLE_PORT, PEBBLE_MANAGEMENT_PORT, PEBBLE_DNS = 14000, 15000, "127.0.0.1:8053"


def _wait_https(url: str, cafile: Path, timeout: float = 30) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3, context=context) as answer:
                return bytes(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextlib.contextmanager
def pebble(stack: Stack) -> Iterator[tuple[str, Path]]:
    """Debian's pebble (Let's Encrypt's ACME test server, which really validates HTTP-01) and
    its DNS (pebble-challtestsrv: every name is the front's address), run from the host on the
    test network (the mirror's namespace) and stopped by PID; yields the directory URL and the
    CA file of pebble's own HTTPS certificate."""
    where = stack.workdir / "pebble"
    where.mkdir()
    cert, key = certs.self_signed(where, ips=(stack.mirror_ip,))
    config = {
        "pebble": {
            "listenAddress": f"0.0.0.0:{PEBBLE_PORT}",
            "managementListenAddress": f"0.0.0.0:{PEBBLE_MANAGEMENT_PORT}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (where / "pebble.json").write_text(json.dumps(config))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    dns = ("-dns01", PEBBLE_DNS, "-management", "127.0.0.1:8055", "-defaultIPv6", "")
    off = ("-http01", "", "-https01", "", "-tlsalpn01", "")
    argvs = [
        ["pebble-challtestsrv", "-defaultIPv4", stack.ips["lb1"], *dns, *off],
        ["pebble", "-config", str(where / "pebble.json"), "-dnsserver", PEBBLE_DNS],
    ]
    procs = []
    try:
        for n, argv in enumerate(argvs):
            with (where / f"{n}.log").open("wb") as log_file:
                procs.append(
                    subprocess.Popen(
                        [*stack.client_prefix(), *argv],
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                    )
                )
        directory = f"https://{stack.mirror_ip}:{PEBBLE_PORT}/dir"
        _wait_https(directory, cert)
        yield directory, cert
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def served_serial(stack: Stack, cafile: Path, host: str = "lb1", port: int = 443) -> int:
    """The serial of the certificate `host` (the front) serves for fileshare.test, verified
    against `cafile` (the chain and the name)."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection((stack.ips[host], port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="fileshare.test") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def check_turn_renewal(stack: Stack) -> None:
    """What an ACME client on a TURN host does after a renewal: the coturn role's hook with
    the new full chain and key; coturn then serves the new certificate on 5349 (verified
    against it) from the same process (a reload, SIGUSR2: allocations stay)."""
    renewed = stack.workdir / "turn-renewed"
    renewed.mkdir()
    cert, key = certs.self_signed(renewed, dns=("fileshare.test",), ips=(stack.ips["turn1"],))
    docker_host.put_files(
        stack.containers["turn1"],
        {
            "/root/renewed.pem": (cert.read_bytes(), 0o644),
            "/root/renewed.key": (key.read_bytes(), 0o600),
        },
    )
    show_pid = ("systemctl", "show", "--property", "MainPID", "--value", "coturn")
    pid = stack.exec("turn1", *show_pid)[1].strip()
    code, output = stack.exec(
        "turn1",
        "/usr/local/sbin/fileshare-coturn-certificate",
        "/root/renewed.pem",
        "/root/renewed.key",
    )
    assert code == 0, output
    deadline = time.monotonic() + 10
    while True:
        try:
            served_serial(stack, cert, "turn1", 5349)
            break
        except ssl.SSLCertVerificationError:
            assert time.monotonic() < deadline, "coturn does not serve the renewed certificate"
            time.sleep(0.5)
    assert stack.exec("turn1", *show_pid)[1].strip() == pid, "coturn was restarted"


def check_acme(stack: Stack, directory: str, pebble_ca: Path) -> None:
    """The front switched to ACME, as on a fresh front host (no certificate yet: the lb role
    makes a self-signed one to start with): the acme role registers with pebble and gets a
    certificate for fileshare.test over HTTP-01 (pebble fetches the answer from the front's
    port 80, which haproxy serves from its challenge map), installs it and reloads haproxy;
    a second run changes nothing; a renewal (forced: pebble's certificates are far from
    expiry) serves a new certificate; the daily timer is enabled and its service runs clean."""
    stack.configure(
        lb_tls_certificate="",
        lb_tls_key="",
        fileshare_acme_directory_url=directory,
        fileshare_acme_server_ca_certificate=pebble_ca.read_text(),
    )
    code, output = stack.exec("lb1", "rm", "/etc/haproxy/certs/fileshare.pem")
    assert code == 0, output
    issued = stack.playbook("acme", "--limit", "lb1")
    assert_ran(issued, "the switch to ACME")
    management = f"https://{stack.mirror_ip}:{PEBBLE_MANAGEMENT_PORT}"
    roots = stack.workdir / "pebble" / "roots.pem"
    roots.write_bytes(_wait_https(f"{management}/roots/0", pebble_ca))
    first = served_serial(stack, roots)
    again = stack.playbook("acme-rerun", "--limit", "lb1")
    assert_ran(again, "the second ACME run")
    assert again.total("changed") == 0, again.tail(200)
    code, output = stack.exec("lb1", "dehydrated", "--cron", "--force")
    assert code == 0, output
    deadline = time.monotonic() + 10  # the reload's new worker takes over the port
    while served_serial(stack, roots) == first:
        assert time.monotonic() < deadline, "the renewed certificate is not served"
        time.sleep(0.5)
    code, output = stack.exec("lb1", "systemctl", "is-enabled", "fileshare-acme.timer")
    assert output.strip() == "enabled", output
    code, output = stack.exec("lb1", "systemctl", "start", "fileshare-acme.service")
    assert code == 0, output
    # Plain HTTP: a challenge nobody asked for is no answer, everything goes to HTTPS.
    code, output = stack.exec(
        "lb1",
        "python3",
        "-c",
        "import http.client as h; c = h.HTTPConnection('127.0.0.1', 80);"
        " c.request('GET', '/.well-known/acme-challenge/x'); r = c.getresponse();"
        " print(r.status, r.getheader('location'))",
    )
    assert output.split()[0] == "301", output
