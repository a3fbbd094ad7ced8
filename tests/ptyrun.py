"""Programs on a pseudo-terminal, as a person runs them, and what the CLI tests read off it.

Two launchers: `on_tty`, a lab client whose output is a terminal (netsim.lab copies it to the
client's `err`, the file the suite's traceback guard reads), and `terminal`, a program whose
standard input is that terminal too, typed into with `Terminal.type` (the accept prompt, Tab
completion) and paused with `Terminal.pause` (Ctrl-S). The readers take either: `text` (as
written), `screen` (without control sequences; a redraw's `\\r` ends a line), `wait_screen` and
`code_on`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from netsim import netns
from netsim.lab import Client, Lab, copy_terminal

ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")
DUMB = {"TERM": "dumb", "NO_COLOR": "1"}  # any escape sequence shown came from elsewhere
STOP, START = "\x13", "\x11"  # Ctrl-S, Ctrl-Q


class Shown(Protocol):
    """A program whose terminal is copied to `err`."""

    @property
    def proc(self) -> subprocess.Popen[bytes]: ...

    @property
    def err(self) -> Path: ...


def text(program: Shown) -> str:
    """What the program wrote to its terminal, as written."""
    return program.err.read_bytes().decode(errors="replace") if program.err.exists() else ""


def screen(program: Shown) -> str:
    """The terminal's text without its control sequences; a redraw's `\\r` ends a line."""
    return cleaned(program.err.read_bytes() if program.err.exists() else b"")


def stopped(master: int, slave: int, timeout: float = 10) -> None:
    """Ctrl-S typed on `master`, returning once the terminal is stopped: the line discipline
    reads what is typed in its own time, so a write just after could still get through. The
    probe: a non-blocking write of `\\r` to `slave` (harmless on a screen) until it would block."""
    os.write(master, STOP.encode())
    os.set_blocking(slave, False)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                os.write(slave, b"\r")
            except BlockingIOError:
                return
            time.sleep(0.01)
        raise AssertionError("Ctrl-S did not stop the terminal")
    finally:
        os.set_blocking(slave, True)


def drained(fd: int) -> bytes:
    """All that can be read from `fd` (a pipe's end, a terminal's master) until its writers
    are gone; then it is closed."""
    chunks = []
    while True:
        try:
            block = os.read(fd, 65536)
        except OSError:  # a terminal's master reads EIO once the last slave end closed
            block = b""
        if not block:
            break
        chunks.append(block)
    os.close(fd)
    return b"".join(chunks)


def cleaned(raw: bytes) -> str:
    """`raw` terminal output without its control sequences; a redraw's `\\r` ends a line."""
    raw = ESCAPES.sub(b"", raw)
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode(errors="replace")


async def wait_screen(program: Shown, pattern: str, timeout: float = 60) -> re.Match[str]:
    """The first match of `pattern` on the screen, waiting for it while the program runs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        ended = program.proc.poll() is not None
        found = re.search(pattern, screen(program))
        if found:
            return found
        assert not ended, f"ended without {pattern!r}:\n{screen(program)[-3000:]}"
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {pattern!r} on the screen:\n{screen(program)[-3000:]}")


async def code_on(sender: Shown, timeout: float = 60) -> str:
    """The code a sender shows."""
    return (await wait_screen(sender, r"Code: (\S+)", timeout))[1]


def on_tty(
    lab: Lab,
    *args: str,
    name: str,
    code: str | None = None,
    env: dict[str, str] | None = None,
    state: str = "state",
    server: str | None = None,
    program: tuple[str, ...] = ("fileshare",),
) -> Client:
    """`fileshare ARGS` (or `program`) in the lab with its output on a terminal (TERM=dumb
    unless `env` says otherwise); `code` goes in FILESHARE_CODE."""
    given = {**(env or {}), **({"FILESHARE_CODE": code} if code else {})}
    return lab.run(
        *args,
        name=name,
        state=state,
        server=server,
        program=program,
        json_events=False,
        tty=True,
        env=given,
    )


@dataclass
class Terminal:
    """A program whose standard input, output and error are one pseudo-terminal."""

    proc: subprocess.Popen[bytes]
    err: Path
    master: int
    copier: threading.Thread

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def pause(self) -> None:
        """Ctrl-S: with IXON (a terminal's default) every write to it blocks from now on."""
        self.type(STOP)

    def resume(self) -> None:
        """Ctrl-Q: the writes go on."""
        self.type(START)

    async def wait(self, timeout: float = 120) -> int:
        """The exit status, once all it wrote is in `err`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None:
            assert loop.time() < deadline, screen(self)[-2000:]
            await asyncio.sleep(0.05)
        await asyncio.to_thread(self.copier.join, 10)
        return self.proc.returncode


@contextlib.contextmanager
def terminal(argv: list[str], env: dict[str, str], err: Path) -> Iterator[Terminal]:
    """`argv` on a terminal of its own, killed when the block ends if it still runs."""
    master, slave = os.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    copier = threading.Thread(target=copy_terminal, args=(master, err, False), daemon=True)
    copier.start()
    try:
        yield Terminal(proc, err, master, copier)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        copier.join(10)
        os.close(master)


def in_lab(
    lab: Lab,
    name: str,
    *args: str,
    code: str | None = None,
    env: dict[str, str] | None = None,
) -> contextlib.AbstractContextManager[Terminal]:
    """`fileshare ARGS` in the lab's namespace on a terminal it also reads (TERM=dumb unless
    `env` says otherwise); `code` goes in FILESHARE_CODE."""
    env = {
        **os.environ,
        "FILESHARE_STATE_DIR": str(lab.workdir / "state"),
        **lab.client_env,
        **({"FILESHARE_CODE": code} if code else {}),
        **DUMB,
        **(env or {}),
    }
    argv = [sys.executable, "-m", "fileshare", args[0], "--server", lab.server.url, *args[1:]]
    return terminal(
        [*netns.in_namespace(lab.namespace), *argv], env, lab.workdir / f"{name}-tty.err"
    )
