"""Stopping a run cleanly: what `netsim run` does with SIGINT and SIGTERM, and how what a
scenario's process left behind is found and removed.

Each scenario runs in a process of its own (`netsim.worker`) that leads a session of its own,
so everything it started (servers, clients, pyroute2's forks, `ip netns exec`) is found by its
session id in /proc, whatever became of their parents, and its namespaces by its `fs<pid>-`
prefix. Processes are only ever ended by PID, never by name."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from netsim import netns

_PR_SET_PDEATHSIG: Final = 1
_PR_SET_CHILD_SUBREAPER: Final = 36
STOPPING: Final = (signal.SIGINT, signal.SIGTERM)


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value})")


class _SigSet(ctypes.Structure):
    _fields_ = [("bits", ctypes.c_ulong * 16)]  # glibc's sigset_t: 1024 bits


def raw_sigmask(how: signal.Sigmasks, signals: Iterable[signal.Signals]) -> Callable[[], object]:
    """pthread_sigmask(how, signals) as a bare C call: Python's own runs the handlers of the
    signals it unblocks before it returns, in whatever called it; this one leaves them to the
    next line of Python code."""
    libc = ctypes.CDLL(None, use_errno=True)
    chosen = ctypes.pointer(_SigSet())
    libc.sigemptyset(chosen)
    for number in signals:
        libc.sigaddset(chosen, int(number))
    return functools.partial(libc.pthread_sigmask, int(how), chosen, None)


def die_with_parent(how: signal.Signals) -> None:
    """The kernel sends `how` to this process when the thread that started it ends, however it
    ends (SIGKILL included)."""
    _prctl(_PR_SET_PDEATHSIG, how)


def adopt_orphans() -> None:
    """Processes our children leave behind become ours (not init's) when their parent ends, so
    that we can reap them: here init does not."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def session_of(stat: str) -> tuple[int, str]:
    """The session id and state letter in a /proc/PID/stat line (its command name, in
    parentheses, may hold spaces and parentheses: the fields are counted from the last `)`)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[3]), fields[0]


def members(session: int) -> dict[int, str]:
    """The processes of `session` other than this one, with their state (`Z`: a zombie)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError, ValueError):  # gone meanwhile
            sid, state = session_of((entry / "stat").read_text())
            if sid == session:
                found[int(entry.name)] = state
    return found


@dataclass(frozen=True)
class Swept:
    processes: int
    namespaces: list[str]

    def __bool__(self) -> bool:
        return bool(self.processes or self.namespaces)


def sweep(session: int, patience: float = 5.0) -> Swept:
    """Kill what is left of `session` (SIGKILL, by PID, until only zombies are left; those that
    are our children reaped) and remove the namespaces its leader created."""
    killed: set[int] = set()
    deadline = time.monotonic() + patience
    while True:
        found = members(session)
        for pid, state in found.items():
            if state != "Z":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            with contextlib.suppress(ChildProcessError):  # not ours to reap: init's
                os.waitpid(pid, 0)
        if all(state == "Z" for state in found.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    names = netns.of_process(session, netns.namespaces())
    for name in names:
        netns.delete(name)
    return Swept(len(killed), names)


class Stop:
    """How the run was told to stop: the first SIGINT or SIGTERM counts; a later one only says,
    once, that the run is already stopping. `raising` (while a scenario runs in this very
    process): the first signal raises KeyboardInterrupt there, so that its blocks unwind."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self.raising = False
        self._told = False

    @property
    def status(self) -> int:
        """The exit status of a run stopped by the signal: 128 + its number, as a shell's."""
        return 0 if self.signal is None else 128 + self.signal

    def _handle(self, number: int, _frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signal.Signals(number)
            if self.raising:
                raise KeyboardInterrupt
        elif not self._told:
            self._told = True  # a raw write: a handler may run in the middle of a print
            os.write(2, f"netsim: already stopping ({signal.Signals(number).name})\n".encode())

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stop]:
        """Once a signal came, the run is ending: after the block (its report is out), further
        ones are ignored. Not the handler: Python puts back the default action of a signal
        with a Python handler as it exits, and a second signal in that moment killed the run
        that was already stopping; an ignored signal stays ignored to the end."""
        previous = {how: signal.signal(how, self._handle) for how in STOPPING}
        try:
            yield self
        finally:
            for how, handler in previous.items():
                signal.signal(how, handler if self.signal is None else signal.SIG_IGN)

    @contextlib.contextmanager
    def in_place(self) -> Iterator[None]:
        """The block is where a first signal raises KeyboardInterrupt."""
        self.raising = True
        try:
            yield
        finally:
            self.raising = False
