"""Debian's Chromium, driven by Playwright, inside a lab's network namespace.

Playwright talks to the browser over a pipe (its stdin/stdout file descriptors), so a wrapper
that enters the namespace and execs Chromium keeps that channel: the page then sees only the
namespace's network, like the CLI clients beside it. No browser is downloaded.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import BrowserContext, async_playwright

from netsim import netns
from netsim.browser_client import CHROMIUM, LOOPBACK_FLAGS
from tests.conftest import require_binary, require_webapp


def _wrapper(namespace: str, workdir: Path) -> Path:
    script = workdir / "chromium-in-namespace"
    prefix = " ".join(shlex.quote(p) for p in netns.in_namespace(namespace))
    script.write_text(f'#!/bin/sh\nexec {prefix} {CHROMIUM} "$@"\n')
    script.chmod(0o755)
    return script


@contextlib.asynccontextmanager
async def chromium(
    namespace: str, workdir: Path, profile: bool = False
) -> AsyncIterator[BrowserContext]:
    """A headless Chromium whose network is `namespace`'s; with `profile`, on a profile on disk
    (Chrome checks installability only there, never in incognito)."""
    require_binary(CHROMIUM)
    require_webapp()
    wrapper = _wrapper(namespace, workdir)
    async with async_playwright() as pw:
        if profile:
            context = await pw.chromium.launch_persistent_context(
                workdir / "profile", executable_path=wrapper, headless=True, args=LOOPBACK_FLAGS
            )
            try:
                yield context
            finally:
                await context.close()
            return
        browser = await pw.chromium.launch(
            executable_path=wrapper, headless=True, args=LOOPBACK_FLAGS
        )
        try:
            yield await browser.new_context(accept_downloads=True)
        finally:
            await browser.close()
