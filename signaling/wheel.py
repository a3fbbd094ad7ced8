"""One timer for the heartbeats and timeouts of every connection (a timer wheel), instead of a
timer handle per socket: an idle connection costs one set entry here, not a TimerHandle.

Members sit in one of `slots` sets, and every `period / slots` seconds the hand visits the next
set and ticks its members: each member is ticked once a period, and the work of ticking tens of
thousands of connections is spread evenly over the period instead of landing at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Ticking(Protocol):
    def tick(self) -> None:
        """Called once a period."""


M = TypeVar("M", bound=Ticking)


class Wheel(Generic[M]):
    def __init__(self, period: float, slots: int = 20) -> None:
        self.period = period
        self._slots: list[set[M]] = [set() for _ in range(slots)]
        self._hand = 0  # the slot visited next
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def add(self, member: M) -> set[M]:
        """Join the slot visited last, so the first tick comes a whole period later. Returns
        the slot, for `remove`."""
        slot = self._slots[self._hand - 1]
        slot.add(member)
        return slot

    @staticmethod
    def remove(member: M, slot: set[M]) -> None:
        slot.discard(member)

    def turn(self) -> None:
        """Tick the members of the next slot."""
        slot = self._slots[self._hand]
        self._hand = (self._hand + 1) % len(self._slots)
        for member in list(slot):  # a tick may remove its member
            member.tick()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = loop.time()
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        # Keep to the schedule, but never try to catch up on turns a busy loop missed.
        self._due = max(self._due + self.period / len(self._slots), loop.time())
        self._timer = loop.call_at(self._due, self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._schedule(loop)
        self.turn()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots)

    def __iter__(self) -> Iterator[M]:
        for slot in self._slots:
            yield from list(slot)
