"""`make bench`: fileshare against a bare aiortc DataChannel and magic-wormhole, in one run,
on one machine, with CPU-seconds per GiB (sender + receiver, from RUSAGE_CHILDREN); and the web
app in headless Chromium (netsim/browser_client.py) sending to the CLI and receiving from it,
beside CLI to CLI, in the same alternating rounds (`--browser-mib`, 0 to leave it out).

Both run as two processes inside one isolated network namespace (only `lo`), through the same
signaling server, with uvloop. Throughput is payload bytes over the time from the first data to
the receiver holding everything (for fileshare: verified, durable and renamed). Peak RSS is each
process's VmHWM. Needs root (namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from benches import wormhole
from benches.links import children_cpu, random_file
from netsim import netns
from netsim.browser_client import LOOPBACK_FLAGS
from netsim.processes import SignalProcess, start_signal, stop

MIB = 2**20


@dataclass
class Run:
    seconds: float
    sender_rss: int | None  # None: not measured (magic-wormhole's processes are not ours to poll)
    receiver_rss: int | None
    cpu_seconds: float = 0.0

    def rate(self, size: int) -> float:
        return size / MIB / self.seconds

    def cpu_per_gib(self, size: int) -> float:
        return self.cpu_seconds / (size / 2**30)


def _with_cpu(run: Callable[[], Run]) -> Run:
    before = children_cpu()
    result = run()
    result.cpu_seconds = children_cpu() - before
    return result


def magic_wormhole(relay: wormhole.Relay, namespace: str, source: Path, out: Path) -> Run:
    moved = wormhole.transfer(relay, namespace, namespace, source, out, "1-bench", 600)
    if moved.capped or moved.moved != source.stat().st_size:
        raise RuntimeError("the magic-wormhole run failed")
    return Run(moved.seconds, None, None)


class PeakRss:
    """Polls a process's high-water RSS until it exits (VmHWM only grows)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while True:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                return
            time.sleep(0.05)

    def result(self) -> int:
        self._thread.join(5)
        return self.peak


def _spawn(namespace: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*netns.in_namespace(namespace), sys.executable, "-m", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _events(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    assert proc.stdout is not None
    return [json.loads(line) for line in proc.stdout if line.startswith("{")]


def bare(namespace: str, server: SignalProcess, size: int) -> Run:
    url = server.url
    sender = _spawn(namespace, "benches.bare", "send", "--server", url, "--bytes", str(size))
    sender_rss = PeakRss(sender.pid)
    assert sender.stdout is not None
    ticket = json.loads(sender.stdout.readline())
    receiver = _spawn(
        namespace,
        "benches.bare",
        "receive",
        "--server",
        url,
        "--bytes",
        str(size),
        "--session",
        ticket["session"],
        "--token",
        ticket["token"],
    )
    receiver_rss = PeakRss(receiver.pid)
    result = _events(receiver)
    receiver.wait(900)
    sender.wait(60)
    if not result or receiver.returncode or sender.returncode:
        raise RuntimeError(
            "the bare DataChannel run failed (run `python -m benches.bare` by hand to see why)"
        )
    return Run(float(result[-1]["seconds"]), sender_rss.result(), receiver_rss.result())  # type: ignore[arg-type]


CLI = ("fileshare",)
# On `lo` only, as the bench runs: the flags Chromium needs there (see the field notes).
BROWSER = ("netsim.browser_client", *(f"--chromium-flag={f}" for f in LOOPBACK_FLAGS))


def _program(client: tuple[str, ...], command: str) -> list[str]:
    """`fileshare COMMAND` or the browser runner's `COMMAND --chromium-flag=...`."""
    return [client[0], command, *client[1:]]


def fileshare(
    namespace: str,
    server: SignalProcess,
    source: Path,
    workdir: Path,
    *extra: str,
    sender_client: tuple[str, ...] = CLI,
    receiver_client: tuple[str, ...] = CLI,
) -> Run:
    """From the receiver's `manifest` (the announcement arrived) to its last `saved` (verified
    and durable; for a browser, verified in the origin-private file system)."""
    env = {"FILESHARE_STATE_DIR": str(workdir / "state")}
    sender = _spawn(
        namespace,
        *_program(sender_client, "send"),
        "--json",
        "--server",
        server.url,
        *extra,
        str(source),
        env=env,
    )
    sender_rss = PeakRss(sender.pid)
    assert sender.stdout is not None
    code = ""
    for line in sender.stdout:
        event = json.loads(line)
        if event["event"] == "code":
            code = str(event["code"])
            break
    # Drained all along: a sender whose stdout pipe fills blocks in its write (it froze 1 GiB
    # runs mid-transfer before the CLI's events got a writer thread).
    drain = threading.Thread(target=sender.stdout.read, daemon=True)
    drain.start()
    out = workdir / "out"
    receiver = _spawn(
        namespace,
        *_program(receiver_client, "receive"),
        "--json",
        "--server",
        server.url,
        "--out",
        str(out),
        code,
        env=env,
    )
    receiver_rss = PeakRss(receiver.pid)
    events = _events(receiver)
    receiver.wait(900)
    sender.wait(60)
    started = next(float(e["ts"]) for e in events if e["event"] == "manifest")  # type: ignore[arg-type]
    ended = max(float(e["ts"]) for e in events if e["event"] == "saved")  # type: ignore[arg-type]
    if receiver.returncode or sender.returncode:
        raise RuntimeError("the fileshare run failed")
    (out / source.name).unlink()
    return Run(ended - started, sender_rss.result(), receiver_rss.result())


async def _server(workdir: Path, namespace: str) -> SignalProcess:
    return await start_signal(workdir / "signal.log", prefix=tuple(netns.in_namespace(namespace)))


def _median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def _line(label: str, run: Run, size: int) -> None:
    if run.sender_rss is None or run.receiver_rss is None:
        rss = "peak RSS not measured"
    else:
        sender, receiver = run.sender_rss / MIB, run.receiver_rss / MIB
        rss = f"peak RSS sender {sender:6.1f} MB, receiver {receiver:6.1f} MB"
    print(f"  {label:<26}{run.rate(size):7.2f} MB/s  {rss}, CPU {run.cpu_per_gib(size):6.1f} s/GiB")


def _browser_table(pairs: dict[str, list[Run]], size: int, repeat: int) -> None:
    """The browser's runs beside the CLI's: rates, medians of the same alternating rounds."""
    print(
        f"web app (headless Chromium) and CLI, {size // MIB} MiB on loopback;"
        f" median of {repeat} alternating runs"
    )
    cli = _median(pairs["CLI -> CLI"]).rate(size)
    for label, runs in pairs.items():
        rates = " ".join(f"{r.rate(size):.2f}" for r in runs)
        median = _median(runs).rate(size)
        share = median / cli if cli else 0.0
        print(f"  {label:<16}{median:7.2f} MB/s  ({share:.2f} of CLI -> CLI)  runs: {rates}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="size of the compared transfer")
    parser.add_argument(
        "--rss-mib", type=int, default=1024, help="size of a further fileshare run for memory"
    )
    parser.add_argument(
        "--chunk-sizes", default="", help="comma-separated chunk sizes to compare fileshare at"
    )
    parser.add_argument(
        "--dir", default=None, help="where the files are written (default: the temp directory)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternating runs of each; medians are reported"
    )
    parser.add_argument(
        "--browser-mib",
        type=int,
        default=64,
        help="size of the browser/CLI comparison (CLI -> CLI runs again at this size beside it)",
    )
    args = parser.parse_args()
    size = args.mib * MIB
    sweep: list[tuple[int, Run]] = []
    with (
        tempfile.TemporaryDirectory(prefix="fs-bench-", dir=args.dir) as tmp,
        netns.isolated_loopback("bench") as namespace,
    ):
        workdir = Path(tmp)
        server = asyncio.run(_server(workdir, namespace))
        try:
            source = random_file(workdir / "bench.bin", size)
            small = random_file(workdir / "browser.bin", args.browser_mib * MIB)
            pairs: dict[str, list[Run]] = {
                "CLI -> CLI": [],
                "browser -> CLI": [],
                "CLI -> browser": [],
            }
            clients = {
                "CLI -> CLI": (CLI, CLI),
                "browser -> CLI": (BROWSER, CLI),
                "CLI -> browser": (CLI, BROWSER),
            }
            bares, ours_runs, holes = [], [], []
            with wormhole.servers(namespace, "127.0.0.1", workdir) as relay:
                for i in range(args.repeat):  # alternate, so drift on a shared machine hits all
                    bares.append(_with_cpu(partial(bare, namespace, server, size)))
                    ours_runs.append(
                        _with_cpu(partial(fileshare, namespace, server, source, workdir))
                    )
                    out = workdir / f"wormhole{i}"
                    holes.append(_with_cpu(partial(magic_wormhole, relay, namespace, source, out)))
                    for label, (sending, receiving) in clients.items() if args.browser_mib else ():
                        measure = partial(
                            fileshare,
                            namespace,
                            server,
                            small,
                            workdir,
                            sender_client=sending,
                            receiver_client=receiving,
                        )
                        pairs[label].append(measure())
            small.unlink()
            base, ours, hole = _median(bares), _median(ours_runs), _median(holes)
            for chunk in (int(c) for c in args.chunk_sizes.split(",") if c):
                run = _with_cpu(
                    partial(
                        fileshare, namespace, server, source, workdir, "--chunk-size", str(chunk)
                    )
                )
                sweep.append((chunk, run))
            source.unlink()
            big = None
            if args.rss_mib:
                big_source = random_file(workdir / "big.bin", args.rss_mib * MIB)
                big = _with_cpu(partial(fileshare, namespace, server, big_source, workdir))
        finally:
            stop(server.proc)
    print(
        f"transfer of {args.mib} MiB on loopback (isolated namespace), 2 processes each, uvloop;"
        f" median of {args.repeat} alternating runs"
    )
    print("  bare runs (MB/s):      " + " ".join(f"{r.rate(size):.2f}" for r in bares))
    print("  fileshare runs (MB/s): " + " ".join(f"{r.rate(size):.2f}" for r in ours_runs))
    _line("bare aiortc DataChannel", base, size)
    _line("fileshare", ours, size)
    print("  magic-wormhole runs (MB/s): " + " ".join(f"{r.rate(size):.2f}" for r in holes))
    _line("magic-wormhole", hole, size)
    ratio = ours.rate(size) / base.rate(size)
    print(f"  {'ratio fileshare / bare':<26}{ratio:7.2f}   (target >= 0.9)")
    print(f"  {'ratio fileshare / wormhole':<26}{ours.rate(size) / hole.rate(size):7.2f}")
    cpu_ratio = ours.cpu_per_gib(size) / hole.cpu_per_gib(size)
    print(f"  {'CPU per GiB, fileshare / wormhole':<26}{cpu_ratio:7.2f}")
    for chunk, run in sweep:
        _line(f"fileshare, chunk {chunk}", run, size)
    if big is not None:
        _line(f"fileshare {args.rss_mib} MiB", big, args.rss_mib * MIB)
        print("  (peak RSS target: under 150 MB per side, whatever the file size)")
    if args.browser_mib:
        _browser_table(pairs, args.browser_mib * MIB, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
