"""`make loadtest` / `python -m loadtest`: start a topology, run locust headless against it for a
bounded time, and write locust's CSV and HTML reports plus a short summary. With `--host` it
loads an existing deployment instead (for operators after a deploy) and starts nothing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import BinaryIO

from loadtest import report
from loadtest.stack import MODES, stack

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
MIXES = {
    "all": ("ChurnUser", "HoldUser", "AbuseUser"),
    "churn": ("ChurnUser",),
    "hold": ("HoldUser",),
    "abuse": ("ChurnUser", "AbuseUser"),
}
ABUSE_KINDS = ("bad_token", "guess", "bad_message", "too_large", "flood", "conn_flood")
# At the end of the run, users finish the task in hand (an abuse under way is judged; a hold is
# cut short); locust kills those still busy after STOP_TIMEOUT seconds.
STOP_TIMEOUT = 20
# Beyond run time and stop timeout, for locust to start (imports) and write its reports. A run
# that takes longer is stuck: it is then stopped by its PID.
EXIT_GRACE = 30.0
TERM_GRACE = 5.0  # after SIGTERM (locust then writes what it has), before SIGKILL


class LocustTimeout(RuntimeError):
    """locust did not end in time; it was stopped. The message says what it had reached."""


async def run_locust(
    url: str,
    prefix: Path,
    *,
    users: int,
    run_time: float,
    mix: str = "all",
    spawn_rate: float = 0.0,
    extra: tuple[str, ...] = (),
) -> report.Result:
    """Run locust headless for `run_time` seconds against `url`; results under `prefix`."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "--users",
        str(users),
        "--spawn-rate",
        str(spawn_rate or users),
        "--run-time",
        f"{max(1, round(run_time))}s",
        "--stop-timeout",
        str(STOP_TIMEOUT),
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
        "--tally-json",
        f"{prefix}_tally.json",
        *extra,
        *MIXES[mix],
    ]
    log = Path(f"{prefix}_locust.log")
    limit = max(1, round(run_time)) + STOP_TIMEOUT + EXIT_GRACE
    with _create(log) as out:  # a file, not a pipe: nothing to drain, all of it kept
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
        try:
            await asyncio.wait_for(proc.wait(), limit)
        except TimeoutError:
            await _stop_stuck(proc)
            raise LocustTimeout(_stuck_report(prefix, log, limit)) from None
        finally:
            if proc.returncode is None:  # cancelled, or interrupted: never leave it running
                await _stop_stuck(proc, dump=False)
    if proc.returncode != 0:
        raise RuntimeError(f"locust exited with {proc.returncode}:\n{_tail(log, 3000)}")
    return report.load(prefix)


async def _stop_stuck(proc: asyncio.subprocess.Process, dump: bool = True) -> None:
    """Stop our locust process by its PID: its greenlet stacks into its log first (SIGUSR1, see
    the locustfile), then SIGTERM (locust writes its reports), then SIGKILL."""
    steps = [(signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, None)]
    if dump:
        steps.insert(0, (signal.SIGUSR1, 1.0))
    for sig, wait in steps:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(TimeoutError):  # (after SIGUSR1 it goes on: time to print)
            await asyncio.wait_for(asyncio.shield(proc.wait()), wait)


def _stuck_report(prefix: Path, log: Path, limit: float) -> str:
    """What a stopped run had reached: its last stats row and the end of its log."""
    lines = [f"locust did not end within {limit:.0f} s and was stopped"]
    history = Path(f"{prefix}_stats_history.csv")
    if history.exists():
        rows = history.read_text().splitlines()
        if len(rows) > 1:
            lines.append(f"last stats: {rows[0]}\n            {rows[-1]}")
    lines.append(f"log ({log}):\n{_tail(log, 6000)}")
    return "\n".join(lines)


def _create(path: Path) -> BinaryIO:
    return path.open("wb")


def _tail(path: Path, size: int) -> str:
    return path.read_bytes()[-size:].decode(errors="replace")


def problems(result: report.Result, mix: str) -> list[str]:
    """What makes a run fail: unexpected failures, or abuse that was not refused rightly."""
    found = []
    if result.failure_count:
        rows = "; ".join(f"{f['Name']}: {f['Error']} x{f['Occurrences']}" for f in result.failures)
        found.append(f"{result.failure_count} unexpected failures ({rows})")
    if "AbuseUser" in MIXES[mix]:
        refused = {key.split(":")[0] for key in result.tally["refusals"]}
        missing = [kind for kind in ABUSE_KINDS if kind not in refused]
        if missing:
            found.append(f"abuse never refused (or never tried): {', '.join(missing)}")
    return found


async def main_async(args: argparse.Namespace) -> int:
    targets = ["remote"] if args.host else (list(MODES) if args.mode == "both" else [args.mode])
    extra = ("--hold-seconds", str(args.hold_seconds), "--abusers", str(args.abusers))
    failed = False
    for mode in targets:
        prefix = args.out / mode / "locust"
        started = time.monotonic()
        async with contextlib.AsyncExitStack() as services:
            # a remote deployment (--host) is loaded as it is; otherwise start the topology
            url = args.host or (await services.enter_async_context(stack(mode))).url
            result = await run_locust(
                url, prefix, users=args.users, run_time=args.run_time, mix=args.mix, extra=extra
            )
        label = {
            "memory": "one instance, in-memory store",
            "redis": "3 instances + redis + haproxy",
        }
        text = report.render(label.get(mode, args.host), result, time.monotonic() - started)
        found = problems(result, args.mix)
        text += "".join(f"\n  PROBLEM: {p}" for p in found) or "\n  OK"
        report.save(Path(f"{prefix}_summary.txt"), (text + "\n").encode())
        print(text, flush=True)
        failed = failed or bool(found)
    print(f"reports (CSV, HTML, summary) in {args.out}/")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--host", default="", help="ws(s)://host/ws of a deployment: start nothing")
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--run-time", type=float, default=30.0, help="seconds of load per mode")
    parser.add_argument("--mix", choices=sorted(MIXES), default="all")
    parser.add_argument("--hold-seconds", type=float, default=10.0)
    parser.add_argument("--abusers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("loadtest/results"))
    args = parser.parse_args(argv)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
