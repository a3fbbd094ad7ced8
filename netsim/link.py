"""Link impairments (rate, delay, jitter, loss, cuts) as data, and the commands that apply them
to one interface in one namespace (sans-I/O: `netsim.linkbed` runs them).

A `LinkSpec` describes one direction: it is applied to the egress of the interface that sends
that way, so a link gets one spec at each end. This kernel has no `sch_netem` (field notes,
"Link emulation without netem"), so without it:

- rate: a `tbf` root qdisc (`tbf rate Xkbit burst B latency 50ms`);
- loss: an nft table of our own, `numgen random mod 10000 < N drop` on the egress (0.01 %
  steps; one direction each, so round-trip loss compounds);
- delay and jitter: an iptables `NFQUEUE --queue-bypass` rule that hands every outgoing packet
  to `netsim.delayer`, a process in the namespace that gives verdicts at due times
  (nft's `queue` statement is missing here; without a reader the bypass lets packets through).

Where the kernel has netem, one `netem` qdisc does all of it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

NETEM: Final = "netem"
FALLBACK: Final = "tbf + nft numgen + NFQUEUE delayer"

_PREFIX: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,40}")
_IFNAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_NAMESPACE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
TBF_LATENCY_MS: Final = 50
MTU_BYTES: Final = 1500
MIN_QUEUE: Final = 1024  # the kernel's default NFQUEUE length


@dataclass(frozen=True)
class LinkSpec:
    """One direction of a link. `rate_kbit` None: no rate limit. `reorder`: with jitter, a
    packet may overtake an earlier one (as netem does); without it, order is kept."""

    rate_kbit: int | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_percent: float = 0.0
    reorder: bool = False

    def __post_init__(self) -> None:
        if self.rate_kbit is not None and not 8 <= self.rate_kbit <= 100_000_000:
            raise ValueError("rate_kbit: 8 to 100000000, or None")
        if not 0 <= self.delay_ms <= 60_000 or not math.isfinite(self.delay_ms):
            raise ValueError("delay_ms: 0 to 60000")
        if not 0 <= self.jitter_ms <= self.delay_ms:
            raise ValueError("jitter_ms: 0 to delay_ms")
        if not 0 <= self.loss_percent <= 100 or not math.isfinite(self.loss_percent):
            raise ValueError("loss_percent: 0 to 100")

    @property
    def delayed(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0


@dataclass(frozen=True)
class Command:
    """`program args...` run inside `namespace` (`ip netns exec`), `stdin` fed to it."""

    namespace: str
    program: str
    args: tuple[str, ...]
    stdin: str | None = None


@dataclass(frozen=True)
class Delayer:
    """A `netsim.delayer` process to start in `namespace` for one queue."""

    namespace: str
    queue: int
    delay_ms: float
    jitter_ms: float
    reorder: bool
    maxlen: int

    def args(self) -> tuple[str, ...]:
        """Arguments of `python -m netsim.delayer`."""
        argv = [
            "--queue",
            str(self.queue),
            "--delay-ms",
            _num(self.delay_ms),
            "--jitter-ms",
            _num(self.jitter_ms),
            "--maxlen",
            str(self.maxlen),
        ]
        if self.reorder:
            argv.append("--reorder")
        return tuple(argv)


@dataclass(frozen=True)
class Plan:
    """What applying a spec takes: commands in order, then delayer processes to start."""

    mechanism: str
    commands: tuple[Command, ...]
    delayers: tuple[Delayer, ...]


def mechanism(netem_available: bool) -> str:
    """Which path impairs links: "netem", or the fallback this kernel needs."""
    return NETEM if netem_available else FALLBACK


def _num(value: float) -> str:
    return f"{value:g}"


def _check(namespace: str, ifname: str, prefix: str) -> None:
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"bad prefix {prefix!r} (letters, digits, _)")
    if not _IFNAME.fullmatch(ifname):
        raise ValueError(f"bad interface name {ifname!r}")
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"bad namespace name {namespace!r}")


def _table_suffix(ifname: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", ifname)


def loss_table(prefix: str, ifname: str) -> str:
    return f"{prefix}_loss_{_table_suffix(ifname)}"


def cut_table(prefix: str, ifname: str) -> str:
    return f"{prefix}_cut_{_table_suffix(ifname)}"


def tbf_burst_bytes(rate_kbit: int) -> int:
    """Bucket size: 8 ms at the rate (32 kbit at 4 Mbit/s), at least a few full frames."""
    return max(4 * MTU_BYTES, rate_kbit)  # rate_kbit * 125 bytes/s * 0.008 s


def queue_maxlen(spec: LinkSpec, assumed_kbit: int = 1_000_000) -> int:
    """Packets the kernel queue must hold: rate x (delay + jitter) in full frames, doubled
    for headroom; without a rate, `assumed_kbit` (what a veth moves in Python tests)."""
    rate = spec.rate_kbit or assumed_kbit
    in_flight = rate * 1000 / 8 * (spec.delay_ms + spec.jitter_ms) / 1000 / MTU_BYTES
    return max(MIN_QUEUE, math.ceil(2 * in_flight))


def loss_threshold(loss_percent: float) -> int:
    """`numgen random mod 10000 < N`: N in hundredths of a percent."""
    return round(loss_percent * 100)


def apply(
    spec: LinkSpec,
    namespace: str,
    ifname: str,
    prefix: str,
    queue: int = 0,
    netem_available: bool = False,
) -> Plan:
    """Commands (and delayers) that give `ifname`'s egress in `namespace` this spec.
    `queue`: the NFQUEUE number of its delayer (unique per namespace)."""
    _check(namespace, ifname, prefix)
    if not 0 <= queue <= 65535:
        raise ValueError("queue: 0 to 65535")
    if netem_available:
        return Plan(NETEM, _netem(spec, namespace, ifname), ())
    commands: list[Command] = []
    delayers: list[Delayer] = []
    if spec.rate_kbit is not None:
        commands.append(
            Command(
                namespace,
                "tc",
                (
                    "qdisc",
                    "replace",
                    "dev",
                    ifname,
                    "root",
                    "tbf",
                    "rate",
                    f"{spec.rate_kbit}kbit",
                    "burst",
                    str(tbf_burst_bytes(spec.rate_kbit)),
                    "latency",
                    f"{TBF_LATENCY_MS}ms",
                ),
            )
        )
    if spec.loss_percent > 0:
        table = loss_table(prefix, ifname)
        text = "\n".join(
            [
                f"table ip {table} {{",
                "\tchain egress {",
                "\t\ttype filter hook postrouting priority filter; policy accept;",
                f'\t\toifname "{ifname}" numgen random mod 10000 < '
                f"{loss_threshold(spec.loss_percent)} drop",
                "\t}",
                "}",
                "",
            ]
        )
        commands.append(Command(namespace, "nft", ("-f", "-"), stdin=text))
    if spec.delayed:
        commands.append(
            Command(
                namespace,
                "iptables",
                (
                    "-t",
                    "mangle",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    ifname,
                    "-m",
                    "comment",
                    "--comment",
                    f"{prefix}_delay",
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    str(queue),
                    "--queue-bypass",
                ),
            )
        )
        delayers.append(
            Delayer(
                namespace, queue, spec.delay_ms, spec.jitter_ms, spec.reorder, queue_maxlen(spec)
            )
        )
    return Plan(FALLBACK, tuple(commands), tuple(delayers))


def _netem(spec: LinkSpec, namespace: str, ifname: str) -> tuple[Command, ...]:
    args = ["qdisc", "replace", "dev", ifname, "root", "netem"]
    if spec.delayed:
        args += ["delay", f"{_num(spec.delay_ms)}ms"]
        if spec.jitter_ms:
            args.append(f"{_num(spec.jitter_ms)}ms")
    if spec.loss_percent:
        args += ["loss", f"{_num(spec.loss_percent)}%"]
    if spec.rate_kbit is not None:
        args += ["rate", f"{spec.rate_kbit}kbit"]
    args += ["limit", str(queue_maxlen(spec))]
    return (Command(namespace, "tc", tuple(args)),)


def cut(namespace: str, ifname: str, prefix: str, udp_only: bool = False) -> Command:
    """Everything in and out of `ifname` is dropped (the link stays up: `ip link set down`
    would make a router's masquerade forget its mappings); with `udp_only`, only UDP (peer
    paths die, TCP such as signaling lives on). Drops happen before conntrack confirms a
    connection, so a cut leaves no half-made entries."""
    _check(namespace, ifname, prefix)
    table = cut_table(prefix, ifname)
    what = " meta l4proto udp" if udp_only else ""
    text = "\n".join(
        [
            f"table inet {table} {{",
            "\tchain ingress {",
            "\t\ttype filter hook prerouting priority raw; policy accept;",
            f'\t\tiifname "{ifname}"{what} drop',
            "\t}",
            "\tchain egress {",
            "\t\ttype filter hook postrouting priority filter; policy accept;",
            f'\t\toifname "{ifname}"{what} drop',
            "\t}",
            "}",
            "",
        ]
    )
    return Command(namespace, "nft", ("-f", "-"), stdin=text)


def restore(namespace: str, ifname: str, prefix: str) -> Command:
    """Undo `cut`."""
    _check(namespace, ifname, prefix)
    return Command(namespace, "nft", ("delete", "table", "inet", cut_table(prefix, ifname)))


def rebind(router_namespace: str) -> Command:
    """Forget every connection the router tracks: NAT mappings are made afresh (a NAT rebind,
    as after a router reboot or a mapping timeout)."""
    if not _NAMESPACE.fullmatch(router_namespace):
        raise ValueError(f"bad namespace name {router_namespace!r}")
    return Command(router_namespace, "conntrack", ("-F",))
