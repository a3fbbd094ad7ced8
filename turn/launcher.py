"""Running coturn: render the configuration into a work dir, start `turnserver` in the
foreground (inside a namespace with a command prefix), wait until it answers STUN Binding
requests, and stop it (SIGTERM, then SIGKILL, by PID: only the process we started).

The one coturn launcher of the project: `python -m turn run`, the test-bed and the tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fsproto import stun
from turn.config import TurnSettings, write_config

LOG_NAME = "turnserver.log"


class TurnStartError(RuntimeError):
    """coturn is missing, exited, or did not answer in time (the message ends with its log)."""


def find_turnserver() -> str:
    path = shutil.which("turnserver") or shutil.which("turnserver", path="/usr/sbin:/sbin")
    if path is None:
        raise TurnStartError("turnserver is not installed (apt-get install coturn; make test)")
    return path


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class TurnEndpoint:
    """A running coturn: where clients reach it, and its process and log."""

    host: str
    port: int
    tls_port: int | None
    process: TurnProcess = field(compare=False, repr=False)
    log_path: Path
    config_path: Path

    @property
    def pid(self) -> int:
        """The running process's (a new one after `process.restart()`)."""
        assert self.process.proc is not None
        return self.process.proc.pid

    @property
    def stun_url(self) -> str:
        return f"stun:{url_host(self.host)}:{self.port}"

    @property
    def udp_url(self) -> str:
        return f"turn:{url_host(self.host)}:{self.port}?transport=udp"

    @property
    def tcp_url(self) -> str:
        return f"turn:{url_host(self.host)}:{self.port}?transport=tcp"

    @property
    def tls_url(self) -> str | None:
        if self.tls_port is None:
            return None
        return f"turns:{url_host(self.host)}:{self.tls_port}?transport=tcp"

    @property
    def urls(self) -> list[str]:
        """TURN URLs in the order clients should try them: UDP, TCP, TLS."""
        return [self.udp_url, self.tcp_url, *([self.tls_url] if self.tls_url else [])]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not go; only ever our own child, by its PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ping(host: str, port: int, transports: Sequence[str], wait: float) -> stun.Message:
    """Until `wait` runs out, try a Binding request over each transport; StunError if one
    never answered. Returns the last answer."""
    deadline = time.monotonic() + wait
    answer: stun.Message | None = None
    for transport in transports:
        while True:
            try:
                with stun.Connection((host, port), transport, timeout=0.5) as conn:
                    answer = stun.binding(conn)
                break
            except (stun.StunError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    if answer is None:
        raise stun.StunError("no transport to ping")
    return answer


def _wait_ready(
    proc: subprocess.Popen[bytes],
    host: str,
    port: int,
    prefix: Sequence[str],
    timeout: float,
) -> None:
    """Ping from where coturn runs: in this process, or through `prefix` in its namespace."""
    transports = ("udp", "tcp")
    if not prefix:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            try:
                ping(host, port, transports, 0.2)
                return
            except (stun.StunError, OSError):
                if time.monotonic() > deadline:
                    raise TurnStartError("coturn did not answer STUN in time") from None
        raise TurnStartError(f"coturn exited with status {proc.returncode}")
    command = [*prefix, sys.executable, "-m", "turn", "ping", f"{url_host(host)}:{port}"]
    command += [*(a for t in transports for a in ("--transport", t)), "--wait", str(timeout)]
    pinger = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while pinger.poll() is None:
            if proc.poll() is not None:
                raise TurnStartError(f"coturn exited with status {proc.returncode}")
            time.sleep(0.05)
    finally:
        stop_process(pinger)
    if pinger.returncode != 0:
        raise TurnStartError("coturn did not answer STUN in time")


class TurnProcess:
    """coturn on a rendered config, started until stopped; `restart` stops it and starts it
    again on the same addresses, losing every allocation, as a redeploy of a TURN server
    does (the log goes on in the same file)."""

    def __init__(
        self,
        config: Path,
        settings: TurnSettings,
        workdir: Path,
        prefix: Sequence[str],
        timeout: float,
    ) -> None:
        self.config, self.settings, self.prefix, self.timeout = config, settings, prefix, timeout
        self.log_path = workdir / LOG_NAME
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab" if self.proc else "wb") as log_file:  # restarts: go on
            self.proc = subprocess.Popen(
                [*self.prefix, find_turnserver(), "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        settings = self.settings
        try:
            _wait_ready(
                self.proc, settings.listening_ips[0], settings.port, self.prefix, self.timeout
            )
        except TurnStartError as exc:
            log = self.log_path.read_text()[-3000:]
            raise TurnStartError(f"{exc}; its log:\n{log}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def running_config(
    config: Path,
    settings: TurnSettings,
    workdir: Path,
    prefix: Sequence[str] = (),
    timeout: float = 15.0,
) -> Iterator[TurnEndpoint]:
    """coturn on an already rendered `config` (tests may alter one); `settings` say where it
    listens."""
    process = TurnProcess(config, settings, workdir, prefix, timeout)
    try:
        process.start()
        yield TurnEndpoint(
            host=settings.host,
            port=settings.port,
            tls_port=settings.tls_port if settings.tls else None,
            process=process,
            log_path=process.log_path,
            config_path=config,
        )
    finally:
        process.stop()


@contextlib.contextmanager
def running_turn(
    settings: TurnSettings, workdir: Path, prefix: Sequence[str] = (), timeout: float = 15.0
) -> Iterator[TurnEndpoint]:
    """Render `settings` into `workdir` and run coturn there until the block ends."""
    config = write_config(settings, workdir)
    with running_config(config, settings, workdir, prefix, timeout) as endpoint:
        yield endpoint


def ready_line(endpoint: TurnEndpoint) -> str:
    """What `python -m turn run` prints once coturn answers (no secret in it)."""
    return json.dumps(
        {
            "event": "ready",
            "pid": endpoint.pid,
            "stun": endpoint.stun_url,
            "urls": endpoint.urls,
            "log": str(endpoint.log_path),
        }
    )
