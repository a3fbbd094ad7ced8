"""Output that cannot stop the event loop: a thread does the writing.

A reader that falls behind (a terminal paused with Ctrl-S, a pty or pipe nobody drains) blocks
write(); done on the event loop, that stops the transfer until the peer gives up on our silence.
So the loop only queues, and an `Outlet`'s thread writes, in order. Memory stays bounded while
the reader is stopped: a `latest` item (a progress report) replaces the one still waiting, and
the sized items (lines) waiting hold at most `bound` bytes: past it the oldest are dropped, and
the writer reports how many (`dropped(n)`) before the next one it writes. Items of size 0
(a display's start and stop) are never dropped. What waits at exit is written then.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Final

Write = Callable[[], object]
LATEST: Final = None  # its place in the queue: the latest item is written there


class Outlet:
    """Runs write actions on a thread of its own, in the order they were put."""

    def __init__(self, name: str, bound: int, fd: int, dropped: Callable[[int], Write]) -> None:
        """`fd`: the descriptor written to, pointed at /dev/null once its reader is gone (a
        pipe closed by `| head -1`), so that what is written at exit does not fail."""
        self.bound = bound
        self.fd = fd
        self.pending = 0  # bytes of sized items waiting
        self.high_water = 0  # the most `pending` ever was
        self.broken = False
        self._dropped = dropped
        self._items: deque[tuple[int, Write] | None] = deque()
        self._latest: Write | None = None
        self._lost = 0  # items dropped since the writer last wrote
        self._waiting: set[Write] = set()  # those of `written`: told also if the reader goes
        self._ready = threading.Condition()
        self._closing = False
        self._writer = threading.Thread(target=self._write, name=name, daemon=True)
        self._writer.start()
        atexit.register(self.close)

    def put(self, write: Write, size: int) -> None:
        """Queue `write`, which writes about `size` bytes (0: never dropped)."""
        with self._ready:
            if self.broken or self._closing:
                return
            self._items.append((size, write))
            self.pending += size
            while self.pending > self.bound:
                self._drop_oldest()
            self.high_water = max(self.high_water, self.pending)
            self._ready.notify()

    def put_latest(self, write: Write) -> None:
        """Queue `write` in place of a latest one still waiting (at the end of the queue)."""
        with self._ready:
            if self.broken or self._closing:
                return
            if self._latest is not None:
                self._items.remove(LATEST)
            self._latest = write
            self._items.append(LATEST)
            self._ready.notify()

    async def written(self) -> None:
        """Returns once everything put so far is written (or can no longer be)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def tell() -> None:
            self._waiting.discard(tell)
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(settle)

        with self._ready:
            if self.broken or self._closing:
                return
            self._waiting.add(tell)
            self._items.append((0, tell))
            self._ready.notify()
        await done

    def close(self) -> None:
        """Write what is waiting, then stop the writer (a second Ctrl-C stops the wait)."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        with contextlib.suppress(KeyboardInterrupt):
            self._writer.join()

    def _drop_oldest(self) -> None:
        for item in self._items:
            if item is not None and item[0]:
                self._items.remove(item)
                self.pending -= item[0]
                self._lost += 1
                return

    def _write(self) -> None:
        while True:
            with self._ready:
                while not self._items and not self._closing:
                    self._ready.wait()
                if not self._items:
                    return
                item = self._items.popleft()
                if item is None:
                    write, self._latest = self._latest, None
                else:
                    self.pending -= item[0]
                    write = item[1]
                lost, self._lost = self._lost, 0
            try:
                if lost:
                    self._dropped(lost)()
                if write is not None:
                    write()
            except (OSError, ValueError, SystemExit):  # SystemExit: Rich's broken-pipe exit
                self._gone()

    def _gone(self) -> None:
        """The reader went away: that ends the output, not the program."""
        with self._ready:
            self.broken = True
            self._items.clear()
            self._latest = None
            self.pending = 0
            waiting, self._waiting = self._waiting, set()
        for tell in waiting:
            tell()
        devnull = os.open(os.devnull, os.O_WRONLY)
        with contextlib.suppress(OSError):
            os.dup2(devnull, self.fd)
        os.close(devnull)
