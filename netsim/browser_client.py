"""The web app as a netsim client: headless Debian Chromium, driven by Playwright, opens the page
the scenario's signaling server serves, sends or receives through it, and prints the page's
events, which are the CLI's `--json` events (web/src/events.js), one JSON line each.

Run as a process through the client adapter (netsim/lab.py) exactly like `fileshare`, in the
peer's namespace, with the same arguments it gives the CLI:

    python -m netsim.browser_client send --json --server ws://HOST:PORT/ws FILE|FOLDER
    FILESHARE_CODE=... python -m netsim.browser_client receive --json --server URL --out DIR

ICE servers are the signaling server's (the page takes no others). Exit status as the CLI's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import urlsplit

from playwright.async_api import Page, async_playwright

CHROMIUM: Final = "/usr/bin/chromium"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 3  # as fileshare/cli.py
READY: Final = "body[data-state=ready]"
# With only `lo` (the tests' and benchmarks' isolated namespace) Chromium hides host addresses
# behind mDNS names and refuses loopback pairs unless told otherwise (see the field notes);
# test-bed facts only: given with --chromium-flag.
LOOPBACK_FLAGS: Final = (
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
)
# Forwards the page's events to the runner; injected by Playwright (CDP), outside the page's CSP.
FORWARD: Final = "window.addEventListener('fileshare', (e) => window.fileshareEvent(e.detail));"


class Failed(Exception):
    """`reported`: the page already said so in an `error` event."""

    def __init__(
        self, code: str, message: str, status: int = EXIT_FAILED, reported: bool = False
    ) -> None:
        super().__init__(message)
        self.code, self.status, self.reported = code, status, reported


def page_origin(server: str) -> str:
    """The page's origin from the signaling URL the CLI would be given (same origin as /ws)."""
    url = urlsplit(server)
    if url.scheme not in ("ws", "wss") or not url.netloc:
        raise Failed("usage", f"not a signaling URL: {server!r}", EXIT_USAGE)
    return f"{'https' if url.scheme == 'wss' else 'http'}://{url.netloc}"


def chromium_flags(origin: str) -> list[str]:
    """The test-bed's server lives on a documentation address over plain HTTP, which is not a
    secure context (no service worker, no origin-private file system): Chromium is told to
    treat that one origin as secure, as HTTPS would be in a deployment."""
    return [f"--unsafely-treat-insecure-origin-as-secure={origin}"]


class Events:
    """The page's events as JSON lines on stdout; remembers the last of each kind."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()

    def emit(self, event: dict[str, Any]) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            return
        self.last[event["event"]] = event
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
        self.changed.set()

    async def until_end(self, timeout: float) -> dict[str, Any]:
        """The page's `done`, or a Failed for its `error`."""
        async with asyncio.timeout(timeout):
            while True:
                if "error" in self.last:
                    error = self.last["error"]
                    code = str(error.get("code", "error"))
                    status = EXIT_AUTH if code == "authentication_failed" else EXIT_FAILED
                    raise Failed(code, str(error.get("message", "")), status, reported=True)
                if "done" in self.last:
                    return self.last["done"]
                self.changed.clear()
                await self.changed.wait()


async def send(page: Page, paths: list[Path]) -> None:
    if len(paths) == 1 and paths[0].is_dir():
        await page.set_input_files("#folder", str(paths[0]))
    elif any(p.is_dir() for p in paths):
        raise Failed("usage", "the page takes files, or one folder", EXIT_USAGE)
    else:
        await page.set_input_files("#files", [str(p) for p in paths])


async def receive(page: Page, origin: str, code: str) -> None:
    await page.goto(f"{origin}/#{code}")
    await page.wait_for_selector(READY)
    await page.click("#receive-button")
    await page.click("#accept")  # as `fileshare receive` without --verify: accepted at once


def target(out: Path, name: str) -> Path:
    """Where a saved file goes under `out`: the manifest's relative name (which the page has
    already checked), refused if it would leave `out`."""
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
        raise Failed("bad_name", f"refused name {name!r}")
    return out.joinpath(*parts)


async def save_all(page: Page, saved: list[dict[str, Any]], out: Path) -> None:
    """Every verified file the page offers, through its Save button, into `out`."""
    for item in saved:
        path = target(out, str(item["name"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        async with page.expect_download() as info:
            await page.click(f"#saved button[data-file-id='{item['fileId']}']")
        await (await info.value).save_as(path)


async def run(args: argparse.Namespace) -> int:
    origin = page_origin(args.server)
    events = Events()
    saved: list[dict[str, Any]] = []

    def forward(event: dict[str, Any]) -> None:
        if event.get("event") == "saved":
            saved.append(event)
        events.emit(event)

    with tempfile.TemporaryDirectory(prefix="fileshare-chromium-") as profile:
        async with async_playwright() as pw:
            context = await pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=[*chromium_flags(origin), *args.chromium_flag],
                accept_downloads=True,
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                await page.expose_function("fileshareEvent", forward)
                await page.add_init_script(FORWARD)
                await page.goto(f"{origin}/")
                await page.wait_for_selector(READY)
                if args.command == "send":
                    await send(page, [Path(p) for p in args.paths])
                else:
                    await receive(page, origin, args.code or os.environ.get("FILESHARE_CODE", ""))
                await events.until_end(args.timeout)
                if args.command == "receive":
                    await save_all(page, saved, Path(args.out))
            finally:
                await context.close()
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    """The CLI's arguments that mean something to the page; others are refused."""
    top = argparse.ArgumentParser(prog="python -m netsim.browser_client")
    commands = top.add_subparsers(dest="command", required=True)
    for name in ("send", "receive"):
        sub = commands.add_parser(name)
        sub.add_argument("--json", action="store_true", help="always on: events are JSON")
        sub.add_argument("--server", required=True)
        sub.add_argument("--timeout", type=float, default=600.0, help="for the whole transfer")
        sub.add_argument(
            "--chromium-flag", action="append", default=[], help="one more Chromium flag"
        )
        if name == "send":
            sub.add_argument("paths", nargs="+")
        else:
            sub.add_argument("--out", required=True)
            sub.add_argument("code", nargs="?")
    return top


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    try:
        return asyncio.run(run(args))
    except Failed as exc:
        if exc.reported:
            return exc.status
        status, code, message = exc.status, exc.code, str(exc)
    except TimeoutError:
        status, code, message = EXIT_FAILED, "timeout", "the page did not finish in time"
    except Exception as exc:  # Playwright's own failures: one line, never a traceback
        status, code, message = EXIT_FAILED, "browser", f"{type(exc).__name__}: {exc}"[:1000]
    print(
        json.dumps(
            {
                "event": "error",
                "ts": round(time.time(), 3),
                "code": code,
                "message": message,
                "exit": status,
            }
        ),
        flush=True,
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
