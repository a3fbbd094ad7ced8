"""Network namespaces the project creates, named with a per-run prefix and always removed.

The smallest one, `isolated_loopback`, holds a whole loopback test (signaling server and both
peers): its only interface is `lo`, with one documentation-range address besides 127.0.0.1 so
that ICE (which ignores 127.0.0.1) has a host candidate. Nothing in it can reach the host.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final, Protocol

import pyroute2

from netsim.processes import find_program

RUN_PREFIX: Final = f"fs{os.getpid()}"
HOST_ADDRESS: Final = "198.51.100.10"
_names = itertools.count(1)
_OURS: Final = re.compile(r"^fs(\d+)-")


def namespaces() -> list[str]:
    """The names `ip netns list` shows, ours or not."""
    listing = subprocess.run(
        [find_program("ip"), "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def leftovers(names: Iterable[str]) -> list[str]:
    """Our namespaces whose creating process is gone."""
    dead = []
    for name in names:
        match = _OURS.match(name)
        if match and not Path(f"/proc/{match[1]}").exists():
            dead.append(name)
    return dead


def of_process(pid: int, names: Iterable[str]) -> list[str]:
    """The namespaces process `pid` created (named with its prefix)."""
    return [name for name in names if name.startswith(f"fs{pid}-")]


def delete(name: str) -> None:
    """Remove a namespace that is not in use by this process (`ip netns delete`: its links
    and tables go with it); one already gone is no error."""
    subprocess.run([find_program("ip"), "netns", "delete", name], check=False, capture_output=True)


class Backend(Protocol):
    """What a named namespace is: a plain one, or a container's (netsim.docker_backend)."""

    def create(self, name: str) -> None: ...

    def remove(self, name: str) -> None: ...

    def prefix(self, name: str) -> list[str]: ...


class Plain:
    """Namespaces of our own (the default backend)."""

    def create(self, name: str) -> None:
        pyroute2.netns.create(name)

    def remove(self, name: str) -> None:
        pyroute2.netns.remove(name)

    def prefix(self, name: str) -> list[str]:
        return net_only(name)


_backend: Backend = Plain()


@contextlib.contextmanager
def using(backend: Backend) -> Iterator[None]:
    """Namespaces created in the block are `backend`'s, and programs run in them its way."""
    global _backend
    previous, _backend = _backend, backend
    try:
        yield
    finally:
        _backend = previous


def in_namespace(name: str) -> list[str]:
    """The command prefix that runs a program inside the namespace."""
    return _backend.prefix(name)


def net_only(name: str) -> list[str]:
    """A host program on the namespace's network only, whatever the backend: for what needs
    the host's files, e.g. writing /proc/sys (read-only in a container)."""
    return [find_program("ip"), "netns", "exec", name]


IFNAMSIZ: Final = 15  # Linux's limit on an interface name (16 with its NUL)


def interface_base(number: int) -> str:
    """What the interfaces of group `number` are named from. Neither the PID nor the label: a
    long-lived process (an xdist worker) reached group 100, and with a five-digit PID and the
    label `turn` that made 16 characters. Interfaces are made only inside the group's own
    namespaces, so the group's number (hex) alone keeps them apart; the namespaces' names
    carry the PID and label."""
    return f"fs{number:x}"


@contextlib.contextmanager
def namespace_group(
    label: str, roles: Sequence[str], ifname_suffix: int = 2
) -> Iterator[tuple[str, dict[str, str]]]:
    """Namespaces `<RUN_PREFIX>-<label><n>-<role>` with `lo` up, all deleted when the block ends
    (their veths and nft tables with them), however it ends. Also yields a short base for
    interface names: base + `ifname_suffix` characters must fit Linux's 15."""
    number = next(_names)
    base = interface_base(number)
    if len(base) + ifname_suffix > IFNAMSIZ:
        raise ValueError(f"interface names of group {number} would exceed {IFNAMSIZ}: {base!r}")
    names = {role: f"{RUN_PREFIX}-{label}{number}-{role}" for role in roles}
    created: list[str] = []
    try:
        for name in names.values():
            created.append(name)  # first: one interrupted while it is made is removed too
            _backend.create(name)
            with pyroute2.NetNS(name) as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        yield base, names
    finally:
        for name in reversed(created):
            with contextlib.suppress(OSError):  # (not there: it was not made)
                _backend.remove(name)


@contextlib.contextmanager
def isolated_loopback(label: str = "lo") -> Iterator[str]:
    with namespace_group(label, ("ns",)) as (_, names):
        name = names["ns"]
        with pyroute2.NetNS(name) as ns:
            ns.addr("add", index=ns.link_lookup(ifname="lo")[0], address=HOST_ADDRESS, prefixlen=32)
        yield name
