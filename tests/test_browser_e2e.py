"""The web app in a real browser (Debian's Chromium through Playwright) against the CLI, in a
namespace of our own: the page is served by the signaling server it signals through."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import zxingcpp
from PIL import Image
from playwright.async_api import Page

from fileshare.chunks import CHUNK_SIZE
from fileshare.protocol import SEND_WINDOW
from fileshare.transfer import FLUSH_BYTES
from fileshare.wordlist import WORDS
from netsim.browser_client import FORWARD
from tests.browser import chromium
from tests.conftest import require_binary
from tests.e2e import Client, Lab, sha256, tree
from tests.test_resilience_e2e import throttled


def page_url(lab: Lab) -> str:
    return f"http://{lab.server.host}:{lab.server.port}/"


@pytest.fixture
async def page(lab: Lab, tmp_path: Path) -> AsyncIterator[Page]:
    async with chromium(lab.namespace, tmp_path) as context:
        page = await context.new_page()
        await page.goto(page_url(lab))
        await page.wait_for_selector("body[data-state=ready]")
        yield page


async def finished(page: Page, timeout: float = 120) -> str:
    """The page's end state ("done" or "failed")."""
    await page.wait_for_selector(
        "body[data-state=done], body[data-state=failed]", timeout=timeout * 1000
    )
    return str(await page.evaluate("document.body.dataset.state"))


async def browser_sends(page: Page, lab: Lab, out: Path, *paths: Path) -> None:
    await page.set_input_files("#files", [str(p) for p in paths])
    await page.wait_for_selector("#share:not([hidden])")
    code = await page.text_content("#code")
    assert code
    receiver = lab.receive(code, out)
    assert await receiver.wait() == 0, receiver.report()
    assert await finished(page) == "done", await page.text_content("#status")
    assert receiver.first("sas")["words"] == await page.text_content("#sas")  # type: ignore[index]


async def browser_receives(
    page: Page,
    lab: Lab,
    tmp_path: Path,
    *paths: Path,
    urls: list[str] | None = None,
    timeout: float = 120,
    program: tuple[str, ...] = ("fileshare",),
    senders: list[Client] | None = None,
) -> dict[str, str]:
    """Name -> sha256 of what the page offered for saving (the downloads' URLs into `urls`),
    sent by `program` (the sender into `senders`)."""
    sender, code = await lab.send(*paths, program=program)
    if senders is not None:
        senders.append(sender)
    await page.goto(f"{page_url(lab)}#{code}")
    await page.wait_for_selector("body[data-state=ready]")
    assert await page.input_value("#code-input") == code
    await page.click("#receive-button")
    await page.wait_for_selector("#accept", state="visible")
    assert sender.first("sas")["words"] == await page.text_content("#sas")  # type: ignore[index]
    await page.click("#accept")
    assert await finished(page, timeout) == "done", await page.text_content("#status")
    assert await sender.wait() == 0, sender.report()
    saved = {}
    for button in await page.query_selector_all("#saved button"):
        async with page.expect_download() as info:
            await button.click()
        download = await info.value
        if urls is not None:
            urls.append(download.url)
        target = tmp_path / "downloads" / download.suggested_filename
        await download.save_as(target)
        saved[download.suggested_filename] = sha256(target)
    return saved


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def mtime_ms(path: Path) -> int:
    return path.stat().st_mtime_ns // 1_000_000


async def test_browser_sends_files_to_the_cli(page: Page, lab: Lab, tmp_path: Path) -> None:
    """The files arrive intact with their modification times (the page sends File.lastModified;
    it knows no permission bits, so the receiver's defaults apply)."""
    src = tmp_path / "src"
    files = [
        random_file(src / "one.bin", 200_000),
        random_file(src / "empty.txt", 0),
        random_file(src / "three.bin", 65_500 * 3),
    ]
    for i, path in enumerate(files):
        os.utime(path, ns=((1_500_000_000_123 + i) * 1_000_000,) * 2)
    out = tmp_path / "out"
    await browser_sends(page, lab, out, *files)
    assert tree(out) == tree(src)
    assert [mtime_ms(out / p.name) for p in files] == [mtime_ms(p) for p in files]
    assert [(out / p.name).stat().st_mode & 0o777 for p in files] == [0o666 & ~0o022] * 3


async def test_cli_sends_files_to_the_browser(page: Page, lab: Lab, tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = [random_file(src / "a.bin", 300_001), random_file(src / "nothing", 0)]
    (src / "folder" / "sub").mkdir(parents=True)
    random_file(src / "folder" / "sub" / "deep.txt", 10)
    saved = await browser_receives(page, lab, tmp_path, *files, src / "folder")
    assert saved == {
        "a.bin": sha256(files[0]),
        "nothing": hashlib.sha256(b"").hexdigest(),
        "deep.txt": sha256(src / "folder" / "sub" / "deep.txt"),
    }


def wrong(code: str) -> str:
    """The same session, one word changed."""
    number, *words = code.split("-")
    return "-".join([number, *words[:-1], next(w for w in WORDS if w != words[-1])])


async def assert_authentication_failed(page: Page, cli: Client) -> None:
    assert await finished(page, 60) == "failed"
    assert await page.evaluate("document.body.dataset.error") == "authentication_failed"
    assert await page.query_selector_all("#saved li") == []
    assert await cli.wait() == 3
    assert cli.first("error")["code"] == "authentication_failed"  # type: ignore[index]


async def test_a_sender_that_ignores_the_window_is_stopped_by_the_page(
    page: Page, lab: Lab, tmp_path: Path
) -> None:
    """The CLI sender streams 200 MiB at once while the page's user has not yet accepted: the
    page's queue of unread messages stops at what an honest sender can have out and the page
    ends the transfer (flow_control), without the click. Without the bound it queued all."""
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(200 * 2**20)
    sender, code = await lab.send(big, program=("tests.hostile_sender", "eager"))
    await page.goto(f"{page_url(lab)}#{code}")
    await page.wait_for_selector("body[data-state=ready]")
    await page.click("#receive-button")
    await page.wait_for_selector("#accept", state="visible")
    assert await finished(page, 60) == "failed"
    assert "without waiting for answers" in (await page.text_content("#status") or "")
    assert await sender.wait() == 1, sender.report()


async def test_a_sender_that_opens_other_channels_has_them_closed_by_the_page(
    page: Page, lab: Lab, tmp_path: Path
) -> None:
    """The CLI sender opens 200 more data channels once connected: the page closes every one
    it did not ask for, and the file arrives whole. (Against all 65,534 stream ids, Chromium's
    own SCTP stalls the link: the page reconnects, and each attempt is flooded again.)"""
    src = random_file(tmp_path / "src" / "file.bin", 2**20)
    senders: list[Client] = []
    saved = await browser_receives(
        page, lab, tmp_path, src, program=("tests.hostile_sender", "few-channels"), senders=senders
    )
    assert saved == {"file.bin": sha256(src)}
    assert "hostile: 200 reset by the receiver" in senders[0].err.read_text()


async def test_wrong_code_typed_in_the_browser(page: Page, lab: Lab, tmp_path: Path) -> None:
    sender, code = await lab.send(random_file(tmp_path / "secret.bin", 1000))
    await page.click("#tab-receive")
    await page.fill("#code-input", wrong(code))
    await page.click("#receive-button")
    await assert_authentication_failed(page, sender)


async def test_wrong_code_typed_at_the_cli(page: Page, lab: Lab, tmp_path: Path) -> None:
    await page.set_input_files("#files", [str(random_file(tmp_path / "secret.bin", 1000))])
    await page.wait_for_selector("#share:not([hidden])")
    out = tmp_path / "out"
    receiver = lab.receive(wrong(str(await page.text_content("#code"))), out)
    await assert_authentication_failed(page, receiver)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.timeout(400)
async def test_one_hundred_mib_each_way(page: Page, lab: Lab, tmp_path: Path) -> None:
    big = random_file(tmp_path / "src" / "big.bin", 100 * 1024 * 1024)
    out = tmp_path / "out"
    await browser_sends(page, lab, out, big)
    assert sha256(out / "big.bin") == sha256(big)
    await page.goto(page_url(lab))
    saved = await browser_receives(page, lab, tmp_path, big)
    assert saved == {"big.bin": sha256(big)}


NO_SAVE_PICKER = "delete Window.prototype.showSaveFilePicker; delete window.showSaveFilePicker;"
HEAP_BOUND = 32 * 1024 * 1024


@pytest.mark.timeout(300)
async def test_without_a_save_picker_the_service_worker_streams_the_download(
    lab: Lab, tmp_path: Path
) -> None:
    """As in Firefox and Safari (no showSaveFilePicker): the verified file is served by the
    service worker from the origin-private file system, and the page's JS heap stays well below
    the file's size while it is received and saved."""
    big = random_file(tmp_path / "src" / "big.bin", 64 * 1024 * 1024)
    async with chromium(lab.namespace, tmp_path) as context:
        page = await context.new_page()
        await page.add_init_script(NO_SAVE_PICKER)
        await page.goto(page_url(lab))
        await page.wait_for_selector("body[data-state=ready]")
        assert await page.evaluate("typeof window.showSaveFilePicker") == "undefined"
        async with asyncio.timeout(30):  # the worker takes control of the page (clients.claim)
            while not await page.evaluate("navigator.serviceWorker.controller !== null"):
                await asyncio.sleep(0.1)
        cdp = await context.new_cdp_session(page)
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                usage = await cdp.send("Runtime.getHeapUsage")
                peak = max(peak, int(usage["usedSize"]))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        urls: list[str] = []
        try:
            saved = await browser_receives(page, lab, tmp_path, big, urls=urls, timeout=240)
        finally:
            sampler.cancel()
        # Nothing verified under that id: the worker answers 204, and the page stays.
        before = page.url
        await page.evaluate(f"location.assign('/download/{'0' * 32}/big.bin')")
        await asyncio.sleep(1)
        assert page.url == before
        assert await page.evaluate("document.body.dataset.state") == "done"
    assert saved == {"big.bin": sha256(big)}
    # The server has no such path: only the service worker answers it.
    assert len(urls) == 1 and urls[0].startswith(f"{page_url(lab)}download/"), urls
    print(f"heap peak {peak / 2**20:.1f} MiB for a {big.stat().st_size / 2**20:.0f} MiB file")
    assert 0 < peak < HEAP_BOUND


def page_relay(lab: Lab, mode: str) -> int:
    """tests.mitm_relay in `mode` before the lab's server, serving the page too (so the page
    signals through it); its port."""
    proc = lab.spawn(
        sys.executable, "-m", "tests.mitm_relay", "--upstream", lab.server.url, "--page-mode", mode
    )
    assert proc.stdout is not None
    return int(json.loads(proc.stdout.readline())["port"])


async def test_a_tampering_relay_fails_both_sides_and_nothing_is_saved(
    lab: Lab, tmp_path: Path
) -> None:
    """The relay alters the sealed SDPs; the page is loaded through it, so it signals there."""
    port = page_relay(lab, "tamper-sdp")
    src = random_file(tmp_path / "secret.bin", 5000)
    sender, code = await lab.send(src, server=f"ws://127.0.0.1:{port}/ws")
    async with chromium(lab.namespace, tmp_path) as context:
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{port}/#{code}")
        await page.wait_for_selector("body[data-state=ready]")
        await page.click("#receive-button")
        await assert_authentication_failed(page, sender)
        assert await page.is_hidden("#offer")


async def page_progress(page: Page, fraction: float, timeout: float = 60) -> None:
    """Polled from outside: the page's CSP forbids the eval wait_for_function uses."""
    async with asyncio.timeout(timeout):
        while True:
            value, top = await page.evaluate("[progress.value, progress.max]")
            if top > 1 and value >= fraction * top:
                return
            await asyncio.sleep(0.05)


async def forwarding(page: Page) -> list[dict[str, object]]:
    """The page's `fileshare` events (from its next load on, reloads included), collected."""
    events: list[dict[str, object]] = []
    await page.expose_function("fileshareEvent", lambda event: events.append(event))
    await page.add_init_script(FORWARD)
    return events


async def statuses(*pages: Page) -> list[str | None]:
    """What each page says (a failure's message: the other page may be where it began)."""
    return [await page.text_content("#status") for page in pages]


def event(events: list[dict[str, object]], name: str) -> dict[str, object]:
    return next(e for e in events if e["event"] == name)


async def saved_file(page: Page, target: Path) -> str:
    """The SHA-256 of the first file the page offers for saving, saved to `target`."""
    async with page.expect_download() as info:
        await page.click("#saved button")
    await (await info.value).save_as(target)
    return sha256(target)


# Chunks a receiving page may hold without having made them durable (so sent again to it).
UNFLUSHED_CHUNKS = FLUSH_BYTES // CHUNK_SIZE + 16
# Sent again after a receiving tab's reload: what the sender had out unacknowledged, which its
# window bounds. Without the window nothing did: a page that lagged behind its channel (under
# the suite's load) queued every message Chromium handed it, and CI saw 329 chunks sent again
# against an estimate of 240 (what was unflushed, in flight and in dcsctp's receive window).
RESENT_AFTER_A_RECEIVING_RELOAD = SEND_WINDOW // CHUNK_SIZE + 1


@pytest.mark.timeout(300)
async def test_link_cut_while_the_browser_receives(page: Page, lab: Lab, tmp_path: Path) -> None:
    require_binary("nft")
    big = random_file(tmp_path / "src" / "big.bin", 48 * 1024 * 1024)
    sender, code = await lab.send(big, extra=("--stall-timeout", "2"))
    await page.goto(f"{page_url(lab)}#{code}")
    await page.click("#receive-button")
    await page.click("#accept")
    await page_progress(page, 0.2)
    with lab.blocked("meta l4proto udp"):  # the ICE path is gone, signaling is not
        await asyncio.sleep(4)
    assert await finished(page, 200) == "done", await page.text_content("#status")
    assert await sender.wait() == 0, sender.report()
    assert sender.first("reconnecting") is not None
    done = sender.first("done")
    assert done is not None and done["chunksSent"] < 2 * done["chunks"]  # only what was missing
    assert await saved_file(page, tmp_path / "big.bin") == sha256(big)


@pytest.mark.timeout(300)
async def test_link_cut_while_the_browser_sends(page: Page, lab: Lab, tmp_path: Path) -> None:
    require_binary("nft")
    big = random_file(tmp_path / "src" / "big.bin", 48 * 1024 * 1024)
    await page.set_input_files("#files", [str(big)])
    await page.wait_for_selector("#share:not([hidden])")
    out = tmp_path / "out"
    receiver = lab.receive(str(await page.text_content("#code")), out, "--stall-timeout", "2")
    await page_progress(page, 0.2)
    with lab.blocked("meta l4proto udp"):
        await asyncio.sleep(4)
    assert await receiver.wait(200) == 0, receiver.report()
    assert await finished(page, 60) == "done", await page.text_content("#status")
    assert receiver.first("reconnecting") is not None
    assert sha256(out / "big.bin") == sha256(big)


@pytest.mark.timeout(300)
async def test_reload_during_a_receive_resumes(page: Page, lab: Lab, tmp_path: Path) -> None:
    big = random_file(tmp_path / "src" / "big.bin", 48 * 1024 * 1024)
    sender, code = await lab.send(big)
    await page.goto(f"{page_url(lab)}#{code}")
    await page.click("#receive-button")
    await page.click("#accept")
    await page_progress(page, 0.5)
    await page.reload()  # accepted once: the page takes its place back and goes on
    assert await finished(page, 200) == "done", await page.text_content("#status")
    assert await sender.wait() == 0, sender.report()
    done = sender.first("done")
    assert done is not None
    assert done["chunksSent"] - done["chunks"] <= RESENT_AFTER_A_RECEIVING_RELOAD, done
    assert await saved_file(page, tmp_path / "big.bin") == sha256(big)


@pytest.mark.timeout(300)
async def test_reload_during_a_send_resumes_with_the_same_files(
    page: Page, lab: Lab, tmp_path: Path
) -> None:
    """The sending tab is reloaded halfway: it asks for the files again, refuses others (a
    different modification time; then the same name, size and time with other bytes), and with
    the right one takes its place back: the CLI, still holding its partial copy, gets only the
    rest, and the file arrives intact with its time."""
    big = random_file(tmp_path / "src" / "big.bin", 48 * 1024 * 1024)
    impostor = random_file(tmp_path / "other" / "big.bin", 48 * 1024 * 1024)
    events = await forwarding(page)  # from the reload on
    await page.set_input_files("#files", [str(big)])
    await page.wait_for_selector("#share:not([hidden])")
    code = str(await page.text_content("#code"))
    kept = await page.evaluate("sessionStorage.getItem('fileshare.send')")
    session = json.loads(kept)["sessionId"]
    out = tmp_path / "out"
    receiver = lab.receive(code, out)
    await page_progress(page, 0.5)
    opened: list[str] = []
    page.on("websocket", lambda ws: opened.append(ws.url))
    await page.reload()
    await page.wait_for_selector("body[data-state=resume]")
    assert code in str(await page.text_content("#resume-what"))
    await page.set_input_files("#files", [str(impostor)])
    await page.locator("#status", has_text="size or modification time").wait_for()
    os.utime(impostor, ns=(big.stat().st_mtime_ns,) * 2)
    await page.set_input_files("#files", [str(impostor)])
    await page.locator("#status", has_text="(contents)").wait_for()
    await page.set_input_files("#files", [str(big)])
    assert await receiver.wait(200) == 0, receiver.report()
    assert await finished(page, 60) == "done", await page.text_content("#status")
    # The rejoin names its session for the front (haproxy's use-server), as a join does.
    assert [parse_qs(urlsplit(url).query).get("s") for url in opened] == [[session]], opened
    assert tree(out) == {"big.bin": sha256(big)}
    assert mtime_ms(out / "big.bin") == mtime_ms(big)
    assert receiver.first("reconnecting") is not None  # a new round with the restarted sender
    done = event(events, "done")
    # At least half was acknowledged (so durable at the CLI) before the reload: only the rest.
    assert 0 < int(done["chunksSent"]) <= int(done["chunks"]) // 2 + 1, done  # type: ignore[call-overload]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("reloaded", ["sender", "receiver"])
async def test_a_reloaded_tab_resumes_browser_to_browser(
    turn_lab: Lab, tmp_path: Path, reloaded: str
) -> None:
    """Browser to browser, one tab reloaded halfway (a sending tab then gets the same file picked
    again): it rejoins as a new page, the other page runs a new PAKE round with it (both show
    the new words), and only what the receiving page had not made durable is sent again. (Two
    Chromiums on one loopback offer each other no host candidate: they meet through coturn.)"""
    lab = turn_lab
    big = random_file(tmp_path / "src" / "big.bin", 48 * 1024 * 1024)
    async with chromium(lab.namespace, tmp_path) as context:
        sender, receiver = await context.new_page(), await context.new_page()
        sent, received = await forwarding(sender), await forwarding(receiver)
        await sender.goto(page_url(lab))
        await sender.wait_for_selector("body[data-state=ready]")
        await sender.set_input_files("#files", [str(big)])
        await sender.wait_for_selector("#share:not([hidden])")
        await receiver.goto(f"{page_url(lab)}#{await sender.text_content('#code')}")
        await receiver.wait_for_selector("body[data-state=ready]")
        await receiver.click("#receive-button")
        await receiver.click("#accept")
        await page_progress(receiver, 0.5)
        first_words = await receiver.text_content("#sas")
        if reloaded == "sender":
            await sender.reload()
            await sender.wait_for_selector("body[data-state=resume]")
            await sender.set_input_files("#files", [str(big)])
        else:
            await receiver.reload()  # accepted once: it takes its place back and goes on
        assert await finished(receiver, 200) == "done", await statuses(receiver, sender)
        assert await finished(sender, 60) == "done", await sender.text_content("#status")
        words = await receiver.text_content("#sas")
        assert words == await sender.text_content("#sas") and words != first_words  # new round
        assert await saved_file(receiver, tmp_path / "big.bin") == sha256(big)
    stayed = received if reloaded == "sender" else sent
    assert any(e["event"] == "reconnecting" and "restarted" in str(e["reason"]) for e in stayed)
    assert event(received, "done")["failed"] == 0
    done = event(sent, "done")
    chunks, count = int(str(done["chunks"])), int(str(done["chunksSent"]))
    if reloaded == "sender":  # the reloaded page's count: what it had to send
        assert 0 < count <= chunks // 2 + UNFLUSHED_CHUNKS, done
    else:
        assert chunks <= count <= chunks + RESENT_AFTER_A_RECEIVING_RELOAD, done


# The page's usable Save buttons (file ids) at each `manifest` event: window.saveableAtAnnouncement.
SAVEABLE_AT_EACH_ANNOUNCEMENT = """
window.saveableAtAnnouncement = [];
window.addEventListener("fileshare", (e) => {
  if (e.detail.event !== "manifest") return;
  const buttons = [...document.querySelectorAll("#saved button")];
  window.saveableAtAnnouncement.push(
    buttons.filter((b) => !b.hidden && !b.disabled).map((b) => b.dataset.fileId),
  );
});
"""


@pytest.mark.timeout(300)
async def test_a_restarted_cli_sender_resumes_to_the_page(
    page: Page, lab: Lab, tmp_path: Path
) -> None:
    """`fileshare send` interrupted (Ctrl-C) while the page receives, then run again: it takes
    its place back with the same code, the page authenticates it afresh without asking again,
    and only what the page is missing is sent. A file received whole before the interrupt is
    verified again in the new round: until then it has no usable Save button (its verified
    mark is gone, a click would get nothing)."""
    small = random_file(tmp_path / "src" / "small.bin", 200_000)
    big = random_file(tmp_path / "src" / "big.bin", 48 * 1024 * 1024)
    received = await forwarding(page)
    await page.add_init_script(SAVEABLE_AT_EACH_ANNOUNCEMENT)
    await page.goto("about:blank")  # (so the next load is a new document, which forwards)
    with throttled(lab, "40mbit"):  # about 10 s for the file: the interrupt lands mid-way
        first, code = await lab.send(small, big)
        await page.goto(f"{page_url(lab)}#{code}")
        await page.click("#receive-button")
        await page.click("#accept")
        await page_progress(page, 0.3)
        await page.wait_for_selector("#saved button:not([hidden]):not([disabled])")  # small.bin
        first.proc.send_signal(signal.SIGINT)
        assert await first.wait(30) == 130, first.report()
        again, same = await lab.send(small, big)
        assert same == code, again.report()
        assert await finished(page, 200) == "done", await page.text_content("#status")
        assert await again.wait() == 0, again.report()
    assert again.first("sas")["words"] == await page.text_content("#sas")  # type: ignore[index]
    # Usable Save buttons as each round announced its files: none while they are verified again.
    assert await page.evaluate("window.saveableAtAnnouncement") == [[], []]
    for src in (small, big):
        async with page.expect_download() as info:
            await page.click(f"#saved li:has-text('{src.name}') button")
        await (await info.value).save_as(tmp_path / src.name)
        assert sha256(tmp_path / src.name) == sha256(src)
    # Announced in each round, accepted in the first only (nobody clicks Accept again).
    assert len([e for e in received if e["event"] == "manifest"]) == 2
    done = again.first("done")
    assert done is not None and 0 < done["chunksSent"] <= 0.7 * done["chunks"] + UNFLUSHED_CHUNKS


async def test_start_over_forgets_an_interrupted_send(page: Page, lab: Lab, tmp_path: Path) -> None:
    """Reloaded before anyone joined, then Start over: the next pick is a new send (new code)."""
    first = random_file(tmp_path / "a.bin", 1000)
    await page.set_input_files("#files", [str(first)])
    await page.wait_for_selector("#share:not([hidden])")
    code = await page.text_content("#code")
    await page.reload()
    await page.wait_for_selector("body[data-state=resume]")
    await page.click("#start-over")
    await page.wait_for_selector("body[data-state=ready]")
    assert await page.is_hidden("#resume-send")
    assert await page.evaluate("sessionStorage.getItem('fileshare.send')") is None
    await page.set_input_files("#files", [str(random_file(tmp_path / "b.bin", 1000))])
    await page.wait_for_selector("#share:not([hidden])")
    assert await page.text_content("#code") != code


@pytest.mark.timeout(300)
async def test_after_a_signaling_blip_the_page_is_the_same_peer(lab: Lab, tmp_path: Path) -> None:
    """The page's WebSocket (through a relay that closes it on demand) drops mid-transfer: the
    page rejoins with its page-load `instance`, so the CLI hears a resume, not a restart. Then
    the link is cut: the CLI rebuilds it under the same keys (a restarted peer would need a new
    authentication round, which this page, still in its run, never starts) and only what was
    missing is sent again."""
    require_binary("nft")
    port = page_relay(lab, "pass")
    big = random_file(tmp_path / "src" / "big.bin", 48 * 1024 * 1024)
    sender, code = await lab.send(big, extra=("--stall-timeout", "2"))
    async with chromium(lab.namespace, tmp_path) as context:
        page = await context.new_page()
        events = await forwarding(page)  # the page's events, as the netsim runner reads them
        await page.goto(f"http://127.0.0.1:{port}/#{code}")
        await page.wait_for_selector("body[data-state=ready]")
        await page.click("#receive-button")
        await page.click("#accept")
        await page_progress(page, 0.1)
        # (asked from the page: the relay listens inside the lab's namespace)
        assert await page.evaluate("fetch('/_blip').then((r) => r.text())") == "1"
        async with asyncio.timeout(30):
            while not any(e["event"] == "signaling_restored" for e in events):
                await asyncio.sleep(0.1)
        with lab.blocked("meta l4proto udp"):  # the ICE path is gone, signaling is not
            await asyncio.sleep(4)
        assert await finished(page, 200) == "done", await page.text_content("#status")
    assert await sender.wait() == 0, sender.report()
    assert len([e for e in sender.events() if e["event"] == "connected"]) >= 2  # rebuilt
    done = sender.first("done")
    assert done is not None and done["chunksSent"] < 2 * done["chunks"]


async def test_the_qr_code_is_the_link(page: Page, lab: Lab, tmp_path: Path) -> None:
    """The QR code the page draws, decoded (zxing-cpp), is the link form of the code shown."""
    await page.set_input_files("#files", [str(random_file(tmp_path / "a.bin", 10))])
    await page.wait_for_selector("#share:not([hidden])")
    code = await page.text_content("#code")
    shot = tmp_path / "qr.png"
    await page.locator("#qr").screenshot(path=str(shot))
    with Image.open(shot) as image:
        found = zxingcpp.read_barcodes(image)
    assert [b.text for b in found] == [f"{page_url(lab)}#{code}"]
    assert await page.text_content("#link") == f"{page_url(lab)}#{code}"


async def test_files_dropped_on_the_page_are_sent(page: Page, lab: Lab, tmp_path: Path) -> None:
    """A drop of two files (a DataTransfer built in the page) is what the CLI receives."""
    contents = {"first.txt": os.urandom(3000), "second.bin": os.urandom(70_000)}
    transfer = await page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const [name, bytes] of Object.entries(files)) {
                dt.items.add(new File([new Uint8Array(bytes)], name));
            }
            return dt;
        }""",
        {name: list(data) for name, data in contents.items()},
    )
    await page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    await page.wait_for_selector("#share:not([hidden])")
    out = tmp_path / "out"
    receiver = lab.receive(str(await page.text_content("#code")), out)
    assert await receiver.wait() == 0, receiver.report()
    assert await finished(page) == "done", await page.text_content("#status")
    assert tree(out) == {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}


async def drop_paths(page: Page, selector: str, *paths: Path) -> None:
    """A real drop from the file system (CDP Input.dispatchDragEvent with paths), as the OS
    delivers one: folders arrive as directory entries (webkitGetAsEntry)."""
    box = await page.locator(selector).bounding_box()
    assert box is not None
    at = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
    data = {"items": [], "files": [str(p) for p in paths], "dragOperationsMask": 1}
    cdp = await page.context.new_cdp_session(page)
    for kind in ("dragEnter", "dragOver", "drop"):
        await cdp.send("Input.dispatchDragEvent", {"type": kind, **at, "data": data})
    await cdp.detach()


async def test_a_folder_dropped_on_the_page_arrives_whole(
    page: Page, lab: Lab, tmp_path: Path
) -> None:
    """A folder dropped from the file system (with a file beside it): the tree arrives intact,
    the empty folder too, with the files' and folders' modification times."""
    album = tmp_path / "src" / "album"
    random_file(album / "one.jpg", 5000)
    random_file(album / "inner" / "two.jpg", 70_000)
    random_file(album / "inner" / "deeper" / "empty", 0)
    (album / "nothing-here").mkdir()
    loose = random_file(tmp_path / "src" / "loose.txt", 300)
    paths = sorted(tmp_path.joinpath("src").rglob("*"), reverse=True)  # children before parents
    for i, path in enumerate(paths):
        os.utime(path, ns=((1_600_000_000_000 + 1000 * i) * 1_000_000,) * 2)
    await drop_paths(page, "#drop", album, loose)
    await page.wait_for_selector("#share:not([hidden])")
    out = tmp_path / "out"
    receiver = lab.receive(str(await page.text_content("#code")), out)
    assert await receiver.wait() == 0, receiver.report()
    assert await finished(page) == "done", await page.text_content("#status")
    assert tree(out) == tree(tmp_path / "src")
    src = tmp_path / "src"
    assert {p.relative_to(src): mtime_ms(p) for p in paths} == {
        p.relative_to(src): mtime_ms(out / p.relative_to(src)) for p in paths
    }


async def test_a_folder_picked_on_the_page_is_sent(page: Page, lab: Lab, tmp_path: Path) -> None:
    """The folder picker (a webkitdirectory input) sends the tree with its relative paths."""
    src = tmp_path / "album"
    random_file(src / "one.jpg", 5000)
    random_file(src / "inner" / "two.jpg", 7000)
    random_file(src / "inner" / "deeper" / "empty", 0)
    await page.set_input_files("#folder", str(src))
    await page.wait_for_selector("#share:not([hidden])")
    out = tmp_path / "out"
    receiver = lab.receive(str(await page.text_content("#code")), out)
    assert await receiver.wait() == 0, receiver.report()
    assert await finished(page) == "done", await page.text_content("#status")
    assert tree(out / "album") == tree(src)
