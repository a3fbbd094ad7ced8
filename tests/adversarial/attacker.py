"""One attack in a process of its own, pinned to one core: `python -m tests.adversarial.attacker
NAME PORT SECONDS [TURN_PORT]` prints the attack's Outcome as one JSON line."""

from __future__ import annotations

import asyncio
import sys
import time

from tests.adversarial.attacks import ATTACKS, Aim, Outcome, pin_to_one_core


async def run(name: str, aim: Aim, seconds: float) -> Outcome:
    out = Outcome()
    await ATTACKS[name](aim, time.monotonic() + seconds, out)
    return out


def main(argv: list[str]) -> None:
    name, port, seconds, *turn = argv
    pin_to_one_core()
    aim = Aim(int(port), turn_port=int(turn[0]) if turn else 0)
    sys.stdout.buffer.write(asyncio.run(run(name, aim, float(seconds))).to_json() + b"\n")


if __name__ == "__main__":
    main(sys.argv[1:])
