"""The web app as an installable Progressive Web App, in Debian's Chromium: Chrome's own
installability check reports nothing, and the service worker serves the app shell offline."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.browser import chromium
from tests.e2e import Lab


async def test_installable_and_working_offline(lab: Lab, tmp_path: Path) -> None:
    url = f"http://{lab.server.host}:{lab.server.port}/"
    async with chromium(lab.namespace, tmp_path, profile=True) as context:
        page = await context.new_page()
        await page.goto(url)
        await page.wait_for_selector("body[data-state=ready]")
        await page.evaluate("navigator.serviceWorker.ready")
        async with asyncio.timeout(30):  # polled from outside: the page's CSP forbids the eval
            while not await page.evaluate("navigator.serviceWorker.controller !== null"):
                await asyncio.sleep(0.1)  # that wait_for_function uses when it has to poll
        cdp = await context.new_cdp_session(page)
        errors = await cdp.send("Page.getInstallabilityErrors")
        assert errors["installabilityErrors"] == []
        manifest = await cdp.send("Page.getAppManifest")
        assert not manifest.get("errors"), manifest["errors"]

        await context.set_offline(True)
        response = await page.reload()
        assert response is not None and response.from_service_worker
        await page.wait_for_selector("body[data-state=ready]")
        assert await page.text_content("h1") == "FileShare"
        assert await page.evaluate("navigator.onLine") is False
