"""The Outlet under a reader that goes away while someone waits for a prompt to be shown: the
wait ends (nothing hangs on output that can no longer be written). A real pipe."""

from __future__ import annotations

import asyncio
import functools
import os

from fileshare.outlet import Outlet
from tests.test_json_events import small_pipe


async def test_waiting_for_output_ends_when_its_reader_goes_away() -> None:
    read, write = small_pipe()
    outlet = Outlet("test", 1 << 16, write, lambda lines: lambda: None)
    for _ in range(8):  # twice what the pipe holds: the writer blocks
        outlet.put(functools.partial(os.write, write, b"x" * 1024), 1024)
    shown = asyncio.ensure_future(outlet.written())
    await asyncio.sleep(0.3)
    assert not shown.done()
    os.close(read)
    await asyncio.wait_for(shown, 10)
    assert outlet.broken
    outlet.close()
    os.close(write)
