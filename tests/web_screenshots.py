"""The web app's screens for the README, taken by Playwright in Debian's Chromium against a real
CLI in a namespace lab: `make screenshots` (root) writes docs/web/*.png.

    python -m tests.web_screenshots [OUT_DIR]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import ViewportSize

from tests.browser import chromium
from tests.e2e import Lab, make_lab

PHONE: ViewportSize = {"width": 390, "height": 844}  # the page must work at a phone's width


async def shoot(lab: Lab, work: Path, out: Path) -> None:
    src = work / "holiday"
    (src / "photos").mkdir(parents=True)
    (src / "photos" / "beach.jpg").write_bytes(b"\xff" * 300_000)
    (src / "notes.txt").write_text("see you soon\n")
    url = f"http://{lab.server.host}:{lab.server.port}/"
    async with chromium(lab.namespace, work) as context:
        page = await context.new_page()
        await page.set_viewport_size(PHONE)
        await page.goto(url)
        await page.wait_for_selector("body[data-state=ready]")
        await page.screenshot(path=out / "1-start.png", full_page=True)
        await page.set_input_files("#files", [str(src / "notes.txt")])
        await page.wait_for_selector("#share:not([hidden])")
        await page.screenshot(path=out / "2-send-code.png", full_page=True)
        code = str(await page.text_content("#code"))
        receiver = lab.receive(code, work / "out")
        await page.wait_for_selector("body[data-state=done]")
        await page.screenshot(path=out / "3-sent.png", full_page=True)
        await receiver.wait()

        # A send interrupted by a reload: the page asks for the same files to carry on.
        await page.set_input_files(
            "#files", [str(src / "notes.txt"), str(src / "photos" / "beach.jpg")]
        )
        await page.wait_for_selector("#share:not([hidden])")
        await page.reload()
        await page.wait_for_selector("body[data-state=resume]")
        await page.screenshot(path=out / "6-resume-send.png", full_page=True)
        await page.click("#start-over")

        sender, code = await lab.send(src)
        page = await context.new_page()
        await page.set_viewport_size(PHONE)
        await page.goto(f"{url}#{code}")
        await page.click("#receive-button")
        await page.wait_for_selector("#accept", state="visible")
        await page.screenshot(path=out / "4-receive-offer.png", full_page=True)
        await page.click("#accept")
        await page.wait_for_selector("body[data-state=done]")
        await page.screenshot(path=out / "5-received.png", full_page=True)
        await sender.wait()


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/web")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fs-shots-") as tmp, make_lab(Path(tmp)) as lab:
        asyncio.run(shoot(lab, Path(tmp), out))
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
