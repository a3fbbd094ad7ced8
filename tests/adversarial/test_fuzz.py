"""The random frame and message fuzzer, briefly: the server never crashes, never logs a
traceback, and /healthz keeps answering (`make fuzz-signaling` runs it longer)."""

from __future__ import annotations

import asyncio

import pytest

from tests.adversarial import fuzz
from tests.adversarial.harness import deployment


@pytest.mark.adversarial
@pytest.mark.timeout(90)
async def test_random_frames_and_messages() -> None:
    async with deployment("direct") as target:
        sent = await asyncio.to_thread(fuzz.run, target.port, 100, 6.0)
        alive = target.server.proc.poll() is None
        log = target.server.log()
    assert sent >= 10
    assert alive, log[-2000:]
    assert "Traceback" not in log, log[-4000:]
