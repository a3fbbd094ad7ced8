"""`ansible/site.yml` deployed for real, over SSH, onto systemd containers (tests.deploy_stack),
then proven from the outside: /readyz through the TLS front, STUN and TURN against the deployed
coturn, a relay-only fileshare transfer through the whole stack, the firewalls; then a second
run and a --check --diff run that change nothing, and a TURN secret rotation as a rolling update
that keeps the service up.

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
    assert set(first.hosts) == {"lb1", "signal1", "signal2", "turn1", "redis1"}
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
