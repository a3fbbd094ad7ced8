"""`make fuzz-signaling`: every attack for longer (directly and through haproxy), the resource
table, then the random fuzzer; exits non-zero if any bound of issue 11 is exceeded
(RSS growth 64 MiB, /healthz p99 50 ms) or a case's outcome is wrong."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from tests.adversarial import fuzz
from tests.adversarial.cases import CASES, P99_BOUND_MS, RSS_BOUND_MIB, problems
from tests.adversarial.harness import MODES, Measurement, Patience, deployment, measure


def row(m: Measurement, found: list[str]) -> str:
    figures = ", ".join(f"{k} {v:.4g}" for k, v in m.outcome.figures.items())
    outcome = (
        ("ok" + (f" ({figures})" if figures else "")) if not found else "FAIL: " + "; ".join(found)
    )
    return (
        f"{m.attack:<18} {m.mode:<8} {m.rss_growth_mib:>7.1f} {m.fds_peak - m.fds_before:>8} "
        f"{m.idle_p99_ms:>8.1f} {m.p50_ms:>7.1f} {m.p99_ms:>7.1f} {m.max_ms:>7.1f} "
        f"{m.recovery_seconds:>9.1f} {m.messages:>6.0f}  {outcome[:300]}"
    )


async def attacks(names: list[str], modes: list[str], seconds: float) -> int:
    print(f"bounds: RSS growth <= {RSS_BOUND_MIB:.0f} MiB, /healthz p99 <= {P99_BOUND_MS:.0f} ms")
    print(f"(a /healthz probe unanswered after {Patience.probe:.0f} s counts as that long;")
    print(" idle p99: /healthz just before the attack, side by side; msgs: messages handled)")
    print(f"load average at the start: {os.getloadavg()[0]:.1f}")
    print(
        f"{'attack':<18} {'mode':<8} {'rss MiB':>7} {'fds +':>8} {'idle p99':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'recover s':>9} {'msgs':>6}  outcome"
    )
    failures = 0
    for name in names:
        case = CASES[name]
        for mode in modes:
            async with deployment(mode, case.store, case.turn, case.args) as target:
                m = await measure(target, name, seconds)
            found = problems(case, m, P99_BOUND_MS)
            failures += bool(found)
            print(row(m, found), flush=True)
    return failures


async def random_fuzz(seconds: float) -> int:
    async with deployment("direct") as target:
        sent = await asyncio.to_thread(fuzz.run, target.port, 1_000_000, seconds)
        log = target.server.log()
        alive = target.server.proc.poll() is None
    broken = not alive or "Traceback" in log
    print(
        f"random fuzzer: {sent} sequences in {seconds:.0f} s, server "
        f"{'alive' if alive else 'DEAD'}, {log.count('Traceback')} tracebacks"
    )
    return int(broken)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.adversarial", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="per attack and mode (default 20)"
    )
    parser.add_argument("--fuzz-seconds", type=float, default=60.0, help="random fuzzer (60)")
    parser.add_argument("--attack", action="append", choices=sorted(CASES), help="repeatable")
    parser.add_argument(
        "--mode", action="append", choices=MODES, help="direct and/or haproxy (default: both)"
    )
    args = parser.parse_args()
    failures = asyncio.run(
        attacks(args.attack or list(CASES), args.mode or list(MODES), args.seconds)
    )
    if args.fuzz_seconds > 0:
        failures += asyncio.run(random_fuzz(args.fuzz_seconds))
    sys.exit(1 if failures else 0)


main()
