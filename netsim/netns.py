"""Network namespaces the project creates, named with a per-run prefix and always removed.

The smallest one, `isolated_loopback`, holds a whole loopback test (signaling server and both
peers): its only interface is `lo`, with one documentation-range address besides 127.0.0.1 so
that ICE (which ignores 127.0.0.1) has a host candidate. Nothing in it can reach the host.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Final

import pyroute2

from netsim.processes import find_program

RUN_PREFIX: Final = f"fs{os.getpid()}"
HOST_ADDRESS: Final = "198.51.100.10"
_names = itertools.count(1)


def in_namespace(name: str) -> list[str]:
    """The command prefix that runs a program inside the namespace."""
    return [find_program("ip"), "netns", "exec", name]


@contextlib.contextmanager
def namespace_group(
    label: str, roles: Sequence[str], ifname_suffix: int = 2
) -> Iterator[tuple[str, dict[str, str]]]:
    """Namespaces `<RUN_PREFIX>-<label><n>-<role>` with `lo` up, all deleted when the block ends
    (their veths and nft tables with them), however it ends. Also yields a short base for
    interface names: base + `ifname_suffix` characters must fit Linux's 15."""
    number = next(_names)
    base = f"{RUN_PREFIX}{label}{number}"
    if len(base) + ifname_suffix > 15:
        raise ValueError(f"label too long for interface names: {base!r}")
    names = {role: f"{RUN_PREFIX}-{label}{number}-{role}" for role in roles}
    created: list[str] = []
    try:
        for name in names.values():
            pyroute2.netns.create(name)
            created.append(name)
            with pyroute2.NetNS(name) as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        yield base, names
    finally:
        for name in reversed(created):
            with contextlib.suppress(OSError):
                pyroute2.netns.remove(name)


@contextlib.contextmanager
def isolated_loopback(label: str = "lo") -> Iterator[str]:
    with namespace_group(label, ("ns",)) as (_, names):
        name = names["ns"]
        with pyroute2.NetNS(name) as ns:
            ns.addr("add", index=ns.link_lookup(ifname="lo")[0], address=HOST_ADDRESS, prefixlen=32)
        yield name
