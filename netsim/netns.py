"""Network namespaces the project creates, named with a per-run prefix and always removed.

The smallest one, `isolated_loopback`, holds a whole loopback test (signaling server and both
peers): its only interface is `lo`, with one documentation-range address besides 127.0.0.1 so
that ICE (which ignores 127.0.0.1) has a host candidate. Nothing in it can reach the host.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
from collections.abc import Iterator
from typing import Final

from netsim.processes import find_program

RUN_PREFIX: Final = f"fs{os.getpid()}"
HOST_ADDRESS: Final = "198.51.100.10"
_names = itertools.count(1)


def _ip(*args: str) -> None:
    subprocess.run([find_program("ip"), *args], check=True, capture_output=True, timeout=30)


def in_namespace(name: str) -> list[str]:
    """The command prefix that runs a program inside the namespace."""
    return [find_program("ip"), "netns", "exec", name]


@contextlib.contextmanager
def isolated_loopback(label: str = "lo") -> Iterator[str]:
    name = f"{RUN_PREFIX}-{label}{next(_names)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "addr", "add", f"{HOST_ADDRESS}/32", "dev", "lo")
        yield name
    finally:
        _ip("netns", "delete", name)
