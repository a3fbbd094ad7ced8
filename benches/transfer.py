"""`make bench`: fileshare against a bare aiortc DataChannel, in one run, on one machine.

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
from dataclasses import dataclass
from pathlib import Path

from netsim import netns
from netsim.processes import SignalProcess, start_signal, stop

MIB = 2**20


@dataclass
class Run:
    seconds: float
    sender_rss: int
    receiver_rss: int

    def rate(self, size: int) -> float:
        return size / MIB / self.seconds


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


def fileshare(
    namespace: str, server: SignalProcess, source: Path, workdir: Path, *extra: str
) -> Run:
    env = {"FILESHARE_STATE_DIR": str(workdir / "state")}
    sender = _spawn(
        namespace,
        "fileshare",
        "send",
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
    out = workdir / "out"
    receiver = _spawn(
        namespace,
        "fileshare",
        "receive",
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
    started = next(float(e["ts"]) for e in events if e["event"] == "file")  # type: ignore[arg-type]
    ended = max(float(e["ts"]) for e in events if e["event"] == "saved")  # type: ignore[arg-type]
    if receiver.returncode or sender.returncode:
        raise RuntimeError("the fileshare run failed")
    (out / source.name).unlink()
    return Run(ended - started, sender_rss.result(), receiver_rss.result())


def _random_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
    return path


async def _server(workdir: Path, namespace: str) -> SignalProcess:
    return await start_signal(workdir / "signal.log", prefix=tuple(netns.in_namespace(namespace)))


def _median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def _line(label: str, run: Run, size: int) -> None:
    print(
        f"  {label:<26}{run.rate(size):7.2f} MB/s  peak RSS sender {run.sender_rss / MIB:6.1f} MB,"
        f" receiver {run.receiver_rss / MIB:6.1f} MB"
    )


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
            source = _random_file(workdir / "bench.bin", size)
            bares, ours_runs = [], []
            for _ in range(args.repeat):  # alternate, so drift on a shared machine hits both
                bares.append(bare(namespace, server, size))
                ours_runs.append(fileshare(namespace, server, source, workdir))
            base, ours = _median(bares), _median(ours_runs)
            for chunk in (int(c) for c in args.chunk_sizes.split(",") if c):
                run = fileshare(namespace, server, source, workdir, "--chunk-size", str(chunk))
                sweep.append((chunk, run))
            source.unlink()
            big = None
            if args.rss_mib:
                big_source = _random_file(workdir / "big.bin", args.rss_mib * MIB)
                big = fileshare(namespace, server, big_source, workdir)
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
    ratio = ours.rate(size) / base.rate(size)
    print(f"  {'ratio fileshare / bare':<26}{ratio:7.2f}   (target >= 0.9)")
    for chunk, run in sweep:
        _line(f"fileshare, chunk {chunk}", run, size)
    if big is not None:
        _line(f"fileshare {args.rss_mib} MiB", big, args.rss_mib * MIB)
        print("  (peak RSS target: under 150 MB per side, whatever the file size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
