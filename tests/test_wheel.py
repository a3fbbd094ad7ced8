"""The timer wheel: every member ticked once a period, spread over the slots."""

from __future__ import annotations

import asyncio

from signaling.wheel import Wheel


class Member:
    def __init__(self) -> None:
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


def test_each_member_once_a_revolution() -> None:
    wheel: Wheel[Member] = Wheel(period=1.0, slots=4)
    members = []
    for _ in range(10):
        members.append(Member())
        wheel.add(members[-1])
        wheel.turn()  # members arrive while the hand moves
    assert len(wheel) == 10 and sorted(map(id, wheel)) == sorted(map(id, members))
    before = [m.ticks for m in members]
    for _ in range(4 * 3):
        wheel.turn()
    assert [m.ticks - b for m, b in zip(members, before, strict=True)] == [3] * 10


def test_a_new_member_waits_a_whole_period() -> None:
    wheel: Wheel[Member] = Wheel(period=1.0, slots=5)
    for _ in range(3):
        wheel.turn()
    member = Member()
    wheel.add(member)
    for _ in range(4):
        wheel.turn()
        assert member.ticks == 0
    wheel.turn()
    assert member.ticks == 1


def test_remove_and_a_member_that_removes_itself() -> None:
    wheel: Wheel[Member] = Wheel(period=1.0, slots=2)

    class Leaving(Member):
        def tick(self) -> None:
            super().tick()
            wheel.remove(self, slot)

    leaving = Leaving()
    slot = wheel.add(leaving)
    staying = Member()
    other = wheel.add(staying)
    wheel.remove(staying, other)
    for _ in range(4):
        wheel.turn()
    assert (leaving.ticks, staying.ticks, len(wheel)) == (1, 0, 0)


async def test_runs_on_the_loop() -> None:
    wheel: Wheel[Member] = Wheel(period=0.1, slots=4)
    member = Member()
    wheel.add(member)
    wheel.start()
    await asyncio.sleep(0.45)
    wheel.stop()
    ticks = member.ticks
    assert 3 <= ticks <= 5
    await asyncio.sleep(0.15)
    assert member.ticks == ticks
