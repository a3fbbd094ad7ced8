"""The SCTP engine alone, old code against new, alternating in one run: a `dc_peer` sender and
receiver (two processes, no file, no app crypto) inside one isolated loopback namespace, each
round once per code tree. Prints MB/s and CPU-seconds per GiB (sender + receiver, while data
moved: each process's start-up left out) per run, the medians and new / old, and the SCTP
packet size the sender ended with. Needs root (namespaces).

    python -m benches.sctp_ab [--old /path/to/old/checkout] [--mib 64] [--rounds 3]
        [--sctp bbr] [--sctp stock] [--mtu 1500]

`--old` is a checkout (e.g. `git archive`) whose `fileshare` is the baseline (give it this
`benches/dc_peer.py`); it may be given again for more trees; the new code is this one.
`--sctp` picks the controller on both sides (or `stock` for both), and may be given again:
each tree runs each, and ratios are against the old trees and against stock aiortc.
`--mtu 1500` gives the loopback an Internet path's MTU (1,432-byte SCTP packets, not 16 KiB).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netsim import netns

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


@dataclass
class Result:
    seconds: float
    cpu_seconds: float
    size: int
    packet: int  # the sender's SCTP packet size at the end (0: stock aiortc)

    @property
    def rate(self) -> float:
        return self.size / MIB / self.seconds

    @property
    def cpu_per_gib(self) -> float:
        return self.cpu_seconds / (self.size / 2**30)


def _first_json(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return line
    raise RuntimeError(f"a dc_peer exited ({proc.wait()}) without a result")


Results = tuple[dict[str, Any], dict[str, Any]]


def transfer(
    size: int,
    sender_sctp: str,
    receiver_sctp: str,
    prefix: list[str],
    tree: Path = ROOT,
    receiver_prefix: list[str] | None = None,
) -> Results:
    """One dc_peer sender and receiver (separate processes: the patch is process-wide) run
    from `tree` under `prefix` (e.g. a namespace's; the receiver under `receiver_prefix` if
    given), SDP wired through their pipes; their final JSON lines."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    places = (prefix, prefix if receiver_prefix is None else receiver_prefix)
    peer = [sys.executable, "-m", "benches.dc_peer"]
    procs = [
        subprocess.Popen(
            [*place, *peer, role, "--bytes", str(size), "--sctp", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tree,
            env=env,
        )
        for place, role, kind in zip(
            places, ("send", "receive"), (sender_sctp, receiver_sctp), strict=True
        )
    ]
    sender, receiver = procs
    try:
        for source, sink in ((sender, receiver), (receiver, sender)):
            assert sink.stdin is not None
            sink.stdin.write(_first_json(source))
            sink.stdin.flush()
        results = json.loads(_first_json(sender)), json.loads(_first_json(receiver))
        if sender.wait(30) or receiver.wait(30):
            raise RuntimeError(f"a dc_peer from {tree} failed")
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def measure(namespace: str, tree: Path, size: int, kind: str) -> Result:
    """One transfer from `tree` in `namespace`, with both processes' CPU time."""
    sent, received = transfer(size, kind, kind, netns.in_namespace(namespace), tree)
    if sent["sha256"] != received["sha256"]:
        raise RuntimeError(f"the transfer from {tree} arrived changed")
    cpu = float(sent["cpu"]) + float(received["cpu"])
    return Result(float(received["seconds"]), cpu, size, int(sent["packet"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old", type=Path, action="append", default=[], help="a baseline tree")
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--sctp", choices=["stock", "reno", "bbr"], action="append", help="default: bbr"
    )
    parser.add_argument("--mtu", type=int, help="the loopback's MTU (default: 65,536)")
    args = parser.parse_args()
    size = args.mib * MIB
    kinds: list[str] = args.sctp or ["bbr"]
    trees = {str(old): old.resolve() for old in args.old} | {"new": ROOT}
    runs: dict[tuple[str, str], list[Result]] = {(t, k): [] for t in trees for k in kinds}
    with netns.isolated_loopback("ab") as namespace:
        if args.mtu is not None:
            mtu = ["ip", "link", "set", "lo", "mtu", str(args.mtu)]
            subprocess.run([*netns.in_namespace(namespace), *mtu], check=True)
        for round_ in range(args.rounds):
            for (label, kind), results in runs.items():
                result = measure(namespace, trees[label], size, kind)
                results.append(result)
                print(
                    f"round {round_ + 1} {label} {kind}: {result.rate:7.2f} MB/s"
                    f"  {result.cpu_per_gib:6.1f} CPU-s/GiB  packets of {result.packet} bytes",
                    flush=True,
                )
    medians = {
        key: (
            statistics.median(r.rate for r in results),
            statistics.median(r.cpu_per_gib for r in results),
        )
        for key, results in runs.items()
    }
    for (label, kind), (rate, cpu) in medians.items():
        print(f"median {label} {kind}: {rate:7.2f} MB/s  {cpu:6.1f} CPU-s/GiB")
    pairs = [(kind, (str(old), kind)) for old in args.old for kind in kinds]
    if "stock" in kinds:
        pairs += [(kind, ("new", "stock")) for kind in kinds if kind != "stock"]
    for kind, base in pairs:
        (rate, cpu), (base_rate, base_cpu) = medians["new", kind], medians[base]
        print(
            f"new {kind} against {' '.join(base)}: throughput {rate / base_rate:.2f},"
            f" CPU per GiB {cpu / base_cpu:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
