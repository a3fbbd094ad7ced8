"""A userspace delay stage on NFQUEUE, for kernels without `sch_netem`.

    ip netns exec NS python -m netsim.delayer --queue N --delay-ms D [--jitter-ms J] [--reorder]

Every packet the queue receives is held (`retain`) and accepted when it is due: `delay ± jitter`
(uniform) after it arrived. Without `--reorder` a packet is never due before the one ahead of
it; with it, jitter lets packets overtake (as netem does). The kernel queue holds `--maxlen`
packets (size it for rate x delay: `netsim.link.queue_maxlen`); what does not fit is dropped
by the kernel. Runs under SCHED_FIFO where allowed (`netsim.realtime`). Prints `ready` once
bound; SIGTERM or SIGINT accepts what is held and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from netfilterqueue import COPY_PACKET, NetfilterQueue, Packet

from netsim.realtime import keep_time

HEADER_BYTES = 128  # copied to us per packet (`retain` needs some payload; we read none)


@dataclass
class Schedule:
    """When each packet is due (sans-I/O: times in, times out)."""

    delay: float
    jitter: float
    reorder: bool
    rng: random.Random = field(default_factory=random.Random)
    last_due: float = 0.0

    def due(self, now: float) -> float:
        offset = self.delay
        if self.jitter:
            offset += self.rng.uniform(-self.jitter, self.jitter)
        due = now + max(0.0, offset)
        if not self.reorder:
            due = max(due, self.last_due)
        self.last_due = max(self.last_due, due)
        return due


async def serve(queue: int, schedule: Schedule, maxlen: int) -> None:
    loop = asyncio.get_running_loop()
    held: dict[int, tuple[Packet, asyncio.TimerHandle]] = {}
    next_key = 0

    def release(key: int) -> None:
        packet, _ = held.pop(key)
        packet.accept()

    def received(packet: Packet) -> None:
        nonlocal next_key
        packet.retain()
        key, next_key = next_key, next_key + 1
        held[key] = (packet, loop.call_at(schedule.due(loop.time()), release, key))

    nfq = NetfilterQueue()
    nfq.bind(queue, received, max_len=maxlen, mode=COPY_PACKET, range=HEADER_BYTES)
    stop = asyncio.Event()
    try:
        loop.add_reader(nfq.get_fd(), nfq.run, False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        await stop.wait()
    finally:
        loop.remove_reader(nfq.get_fd())
        for packet, timer in held.values():
            timer.cancel()
            packet.accept()
        held.clear()
        nfq.unbind()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netsim.delayer", description=__doc__)
    parser.add_argument("--queue", type=int, required=True, help="NFQUEUE number")
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--reorder", action="store_true", help="let jitter reorder packets")
    parser.add_argument("--maxlen", type=int, default=1024, help="kernel queue length, packets")
    args = parser.parse_args(argv)
    if args.delay_ms < 0 or not 0 <= args.jitter_ms <= args.delay_ms:
        parser.error("need 0 <= jitter-ms <= delay-ms")
    schedule = Schedule(args.delay_ms / 1000, args.jitter_ms / 1000, args.reorder)
    keep_time()
    try:
        asyncio.run(serve(args.queue, schedule, args.maxlen))
    except OSError as exc:
        print(f"delayer: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
