"""magic-wormhole as the peer fileshare is measured against: its own mailbox server and
transit relay (never the public ones), and one transfer between two namespaces, timed from
"Receiving file" to the receiver's exit (the code exchange is left out, as fileshare's is)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from netsim import netns
from netsim.processes import stop

MAILBOX_PORT, TRANSIT_PORT = 4000, 4001


@dataclass(frozen=True)
class Relay:
    ip: str

    def args(self) -> list[str]:
        return [
            str(Path(sys.executable).parent / "wormhole"),
            "--relay-url",
            f"ws://{self.ip}:{MAILBOX_PORT}/v1",
            "--transit-helper",
            f"tcp:{self.ip}:{TRANSIT_PORT}",
        ]


@dataclass(frozen=True)
class Run:
    seconds: float
    moved: int
    capped: bool


@contextmanager
def servers(namespace: str, ip: str, workdir: Path) -> Iterator[Relay]:
    """The mailbox and the transit relay (twistd) on `ip` in `namespace`."""
    twistd = str(Path(sys.executable).parent / "twistd")
    procs = []
    try:
        for name, plugin, port in (
            ("mailbox", "wormhole-mailbox", MAILBOX_PORT),
            ("transit", "transitrelay", TRANSIT_PORT),
        ):
            argv = [twistd, "-n", "--pidfile=", f"--logfile={workdir / name}.log", plugin]
            argv.append(f"--port=tcp:{port}:interface={ip}")
            if plugin == "wormhole-mailbox":
                argv.append(f"--channel-db={workdir / 'mailbox.sqlite'}")
            procs.append(
                subprocess.Popen(
                    [*netns.in_namespace(namespace), *argv],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=workdir,
                )
            )
        time.sleep(1.5)  # twistd is up well within this
        yield Relay(ip)
    finally:
        for proc in procs:
            stop(proc)


def transfer(
    relay: Relay, sender_ns: str, receiver_ns: str, source: Path, out: Path, code: str, cap: float
) -> Run:
    """`source` from `sender_ns` to `out/` in `receiver_ns`; stopped after `cap` seconds."""
    out.mkdir()
    send_args = ("--hide-progress", "--code", code, str(source))
    receive_args = ("--hide-progress", "--accept-file", "-o", str(out / "file"), code)
    sender = subprocess.Popen(
        [*netns.in_namespace(sender_ns), *relay.args(), "send", *send_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    receiver = subprocess.Popen(
        [*netns.in_namespace(receiver_ns), *relay.args(), "receive", *receive_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    started = when_line(receiver, b"Receiving")
    capped = not wait_all([receiver], cap + 30)
    ended = time.monotonic()
    stop(sender)
    stop(receiver)
    arrived = out / "file"
    moved = arrived.stat().st_size if arrived.exists() else 0
    remove(out)
    if started[0] is None:
        raise RuntimeError("magic-wormhole never started receiving")
    return Run(max(ended - started[0], 1e-3), moved, capped)


def when_line(proc: subprocess.Popen[bytes], needle: bytes) -> list[float | None]:
    """The monotonic time `needle` first shows in the process's stderr (filled in later)."""
    seen: list[float | None] = [None]

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if seen[0] is None and needle in line:
                seen[0] = time.monotonic()

    threading.Thread(target=read, daemon=True).start()
    return seen


def wait_all(procs: list[subprocess.Popen[bytes]], cap: float) -> bool:
    """Whether all exited within `cap` seconds."""
    deadline = time.monotonic() + cap
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
    return True


def remove(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
