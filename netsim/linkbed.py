"""Running `netsim.link` plans: two namespaces joined by one veth, impairments applied to
each end, `netsim.delayer` processes started and stopped by their PIDs.

    [a] NAMEa 198.51.100.1/24 --- 198.51.100.2/24 NAMEb [b]

Namespace names carry netns.RUN_PREFIX and a counter, the veth's its group's number; it is
created inside the namespaces (never in ours), and removing the namespaces removes everything,
however the block ends.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from netsim import link, netns
from netsim.processes import find_program, stop

A_IP: Final = "198.51.100.1"
B_IP: Final = "198.51.100.2"
_queues = itertools.count(1)


def run(command: link.Command) -> None:
    argv = [*netns.in_namespace(command.namespace), find_program(command.program), *command.args]
    proc = subprocess.run(
        argv, input=command.stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


@functools.cache  # the kernel does not change under a run: probed once per process
def netem_available() -> bool:
    """Whether this kernel has `sch_netem` (loaded, loadable, or built in): tried on the
    loopback of a namespace of our own, so no real interface is touched."""
    with contextlib.suppress(OSError), open("/proc/modules") as modules:
        if any(line.split()[0] == "sch_netem" for line in modules):
            return True
    with netns.isolated_loopback("nq") as name:
        try:
            run(link.Command(name, "tc", ("qdisc", "add", "dev", "lo", "root", "netem")))
        except RuntimeError:
            return False
        return True


@dataclass
class Pair:
    """A built veth pair: namespaces, interfaces, and the delayers started on it."""

    a: str
    b: str
    a_if: str
    b_if: str
    netem: bool
    delayers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def apply(self, a_to_b: link.LinkSpec, b_to_a: link.LinkSpec) -> str:
        """Impair both directions; returns the mechanism used."""
        used = link.mechanism(self.netem)
        for spec, namespace, ifname in ((a_to_b, self.a, self.a_if), (b_to_a, self.b, self.b_if)):
            plan = link.apply(
                spec, namespace, ifname, netns.RUN_PREFIX, next(_queues), netem_available=self.netem
            )
            used = plan.mechanism
            for command in plan.commands:
                run(command)
            for delayer in plan.delayers:
                self.delayers.append(start_delayer(delayer))
        return used

    def run(self, command: link.Command) -> None:
        run(command)


def start_delayer(delayer: link.Delayer) -> subprocess.Popen[bytes]:
    """Start `python -m netsim.delayer` in the namespace; returns once it is bound."""
    argv = [
        *netns.in_namespace(delayer.namespace),
        sys.executable,
        "-m",
        "netsim.delayer",
        *delayer.args(),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "ready", or EOF if it failed
    if line.strip() != b"ready":
        stop(proc)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"delayer did not start: {err.strip()}")
    return proc


@contextlib.contextmanager
def veth_pair(label: str = "lk") -> Iterator[Pair]:
    netem = netem_available()
    with netns.namespace_group(label, ("a", "b"), ifname_suffix=1) as (base, names):
        a, b = names["a"], names["b"]
        a_if, b_if = f"{base}a", f"{base}b"
        ip = find_program("ip")
        for args in (
            (a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b),
            (a, "addr", "add", f"{A_IP}/24", "dev", a_if),
            (b, "addr", "add", f"{B_IP}/24", "dev", b_if),
            (a, "link", "set", a_if, "up"),
            (b, "link", "set", b_if, "up"),
        ):
            subprocess.run([ip, "-n", *args], check=True, capture_output=True, timeout=30)
        pair = Pair(a, b, a_if, b_if, netem)
        try:
            yield pair
        finally:
            for proc in pair.delayers:
                stop(proc)
