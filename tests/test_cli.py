"""The CLI through its real entry point: refusals that need no network (one line, a documented
exit code, no traceback), its help per command, its start-up imports, the code prompt's Tab
completion on a pseudo-terminal, and the QR code's link against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fileshare.code import complete, new_code, parse_code
from fileshare.state import TransferRecord, TransferStore
from signaling.config import Config
from tests import ptyrun
from tests.conftest import RunningServer, StartServer, require_webapp


def fileshare(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FILESHARE_STATE_DIR": str(state)}
    return subprocess.run(
        [sys.executable, "-m", "fileshare", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_a_malformed_code_is_a_usage_error(tmp_path: Path) -> None:
    done = fileshare(
        "receive", "--json", "--server", "ws://127.0.0.1:9/ws", "12-nonsense", state=tmp_path
    )
    assert done.returncode == 2
    (event,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert event["event"] == "error" and event["code"] == "usage"
    assert "Traceback" not in done.stderr


def test_an_unknown_word_is_named(tmp_path: Path) -> None:
    done = fileshare(
        "receive", "--server", "ws://127.0.0.1:9/ws", "12345678-apple-banana-zzz", state=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "fileshare: not a code word: 'banana' (check the spelling)"


def test_chunk_size_out_of_range(tmp_path: Path) -> None:
    done = fileshare("send", "--chunk-size", "300000", str(tmp_path), state=tmp_path)
    assert done.returncode == 2
    assert "--chunk-size: invalid choice: 300000" in done.stderr


def test_no_unfinished_transfers(tmp_path: Path) -> None:
    done = fileshare("transfers", state=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == "No unfinished transfers."


def test_version_and_options_per_command(tmp_path: Path) -> None:
    version = fileshare("--version", state=tmp_path)
    assert version.returncode == 0
    assert version.stdout.strip() == f"fileshare {metadata.version('fileshare')}"
    listing = fileshare("transfers", "--help", state=tmp_path).stdout
    assert "--json" in listing
    for network_only in ("--server", "--stun", "--turn", "--timeout", "--relay-only", "--no-qr"):
        assert network_only not in listing
    assert fileshare("transfers", "--server", "x", state=tmp_path).returncode == 2
    send = fileshare("send", "--help", state=tmp_path).stdout
    assert re.search(r"PATH\s+a file or a directory to send", send), send
    assert "--no-qr" in send and "--server" in send and "--stall-timeout" in send
    receive = fileshare("receive", "--help", state=tmp_path).stdout
    assert "--no-qr" not in receive and "--out" in receive  # the receiver has no QR to show
    doctor = fileshare("doctor", "--help", state=tmp_path).stdout
    assert "--server" in doctor and "--verify" not in doctor


def test_help_version_and_transfers_do_not_load_webrtc(tmp_path: Path) -> None:
    """aiortc's import is most of a second: the commands that do not connect must not pay it."""
    probe = (
        "import sys, contextlib\n"
        "from fileshare import cli\n"
        "for argv in (['--help'], ['--version'], ['send', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
        "        cli.main(argv)\n"
        "cli.main(['transfers'])\n"
        "heavy = ('aiortc', 'aiohttp', 'av', 'nacl', 'rich')\n"
        "heavy = sorted(m for m in heavy if m in sys.modules)\n"
        "print('loaded:', heavy)\n"
    )
    env = {**os.environ, "FILESHARE_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("loaded: []"), done.stdout


def test_completion_of_the_code_words() -> None:
    assert complete("48213907-cra") == ["crane-", "crater-"]
    assert complete("48213907") == []  # the number is the user's to type
    assert complete("48213907 crane opera le") == ["lemon"]  # the last word: no dash after it
    assert complete("48213907-crane-opera-lemon-") == []


def test_the_link_is_the_web_apps_page() -> None:
    code = new_code("48213907")
    local = code.link("ws://127.0.0.1:8765/ws")
    assert local == f"http://127.0.0.1:8765/#{code}"
    public = code.link("wss://share.example/ws")
    assert public == f"https://share.example/#{code}"
    parsed = parse_code(public)
    assert (parsed.server, parsed.words) == ("wss://share.example/ws", code.words)
    assert parse_code(local).server == "ws://127.0.0.1:8765/ws"


async def test_tab_completes_the_words_at_the_prompt(tmp_path: Path) -> None:
    """On a real pseudo-terminal: the prompt completes unique prefixes with Tab; the completed
    code passes the spelling check, so the failure is the (absent) server, not the code."""
    env = {**os.environ, "FILESHARE_STATE_DIR": str(tmp_path), "TERM": "xterm"}
    argv = [sys.executable, "-m", "fileshare", "receive", "--server", "ws://127.0.0.1:9/ws"]
    with ptyrun.terminal(argv, env, tmp_path / "tty.err") as term:
        await ptyrun.wait_screen(term, "Code: ", timeout=30)
        term.type("12345678-quar\tpupp\tpri\t\r")
        assert await term.wait(30) == 4, ptyrun.text(term)
    shown = ptyrun.text(term)
    assert "no signaling server" in shown and "12345678-quartz-puppet-prism" in shown, shown
    assert "not a code word" not in shown and "Traceback" not in shown


async def test_a_wrong_session_number_is_a_bad_code(server: RunningServer, tmp_path: Path) -> None:
    """Exit 2, as the README's table says of a bad code (not 4, a network failure)."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "fileshare", "receive", "--json", "--server", server.url),
        "99999999-crane-opera-lemon",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "FILESHARE_STATE_DIR": str(tmp_path)},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, err
    (event,) = [json.loads(line) for line in out.decode().splitlines()]
    assert event["code"] == "session_not_found" and event["exit"] == 2


@contextlib.asynccontextmanager
async def sender_code(server_url: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A `fileshare send --json` against `server_url`, while it waits: its `code` event."""
    (tmp_path / "a.txt").write_text("a")
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "fileshare", "send", "--json", "--server", server_url),
        str(tmp_path / "a.txt"),
        stdout=subprocess.PIPE,
        env={**os.environ, "FILESHARE_STATE_DIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None
        while (event := json.loads(await asyncio.wait_for(proc.stdout.readline(), 60)))[
            "event"
        ] != "code":
            pass
        yield event
    finally:
        proc.kill()
        await proc.wait()


async def test_the_qr_link_opens_the_served_page(server: RunningServer, tmp_path: Path) -> None:
    """The `code` event's link (what the QR code holds) is the server's web app with the code
    as its fragment; the page is there, and the CLI takes the link as a code."""
    require_webapp()
    async with sender_code(server.url, tmp_path) as event:
        link = event["link"]
        assert link == f"http://127.0.0.1:{server.port}/#{event['code']}"
        async with aiohttp.ClientSession() as http, http.get(link) as page:
            assert page.status == 200 and "text/html" in page.headers["Content-Type"]
        assert parse_code(link).server == server.url


async def test_a_server_with_shorter_session_numbers(
    start_server: StartServer, tmp_path: Path
) -> None:
    """`--session-digits 6`: the code the sender prints has a 6-digit number, and the CLI
    takes such a code (its parser accepts 4 to 32 digits; so does the web app's)."""
    async with sender_code((await start_server(session_digits=6)).url, tmp_path) as event:
        assert re.fullmatch(r"[1-9][0-9]{5}(-[a-z]+){3}", event["code"]), event
        assert parse_code(event["code"]).session_id == event["code"][:6]
    with pytest.raises(ValueError, match="session_digits: 6 to 12"):
        Config(session_digits=5)


def unfinished(state: Path, out: Path, name: str, part: Path | None = None) -> TransferRecord:
    """A resume record as a receive into `out` leaves it, with its .part file (unless `part`
    says where a hostile database claims it is)."""
    out.mkdir(exist_ok=True)
    target = out / name
    part = part or Path(f"{target}.part")
    if part.parent == out:
        part.write_bytes(b"partial")
    with TransferStore(state / "transfers.sqlite3") as store:
        digest = os.urandom(16).hex()
        return store.begin(digest, name, 10, 16362, 1, "ab" * 32, str(target), str(part), str(out))


def transfers(*args: str, state: Path) -> tuple[int, str]:
    """`fileshare transfers`, its output kept as a *.out file (the traceback guard reads it)."""
    done = fileshare("transfers", *args, state=state)
    (state / f"transfers-{len(list(state.glob('*.out')))}.out").write_text(
        done.stdout + done.stderr
    )
    return done.returncode, done.stdout + done.stderr


def test_transfers_lists_removes_and_forgets_what_is_gone(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    kept = unfinished(state, out, "big.bin")
    gone = unfinished(state, out, "gone.bin")
    Path(gone.part).unlink()  # the user deleted the partial copy: nothing to resume
    status, text = transfers(state=state)
    assert status == 0
    lines = text.splitlines()
    assert lines[0].startswith("Unfinished transfers")
    assert lines[1].split() == ["ID", "HELD", "TARGET", "(--out", "DIR)"]
    assert lines[2].split() == [kept.ref, "0/1", "chunks", f"{out}/big.bin", "(--out", f"{out})"]
    assert "fileshare receive CODE --out DIR" in text and "--remove ID" in text
    assert "gone.bin" not in text
    status, text = transfers("--remove", kept.ref[:4], state=state)
    assert status == 0 and text.startswith(f"Removed {kept.ref}: {out}/big.bin")
    assert not Path(kept.part).exists()
    assert transfers(state=state) == (0, "No unfinished transfers.\n")
    status, text = transfers("--remove", "ffff", "--json", state=state)
    assert status == 2
    assert json.loads(text)["message"] == "no unfinished transfer has the ID 'ffff'"


def test_a_hostile_state_database_is_shown_neutralised_and_loses_nothing(tmp_path: Path) -> None:
    """A record whose name carries escape sequences and whose .part points outside its folder:
    the listing shows it inert, and removing it forgets the record but deletes nothing there."""
    state, out = tmp_path / "state", tmp_path / "out"
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    record = unfinished(state, out, "evil\x1b]8;;x\x07.bin", part=precious)
    status, text = transfers("--json", state=state)
    assert status == 0
    assert json.loads(text)["id"] == record.ref
    status, text = transfers(state=state)
    assert status == 0 and "\x1b" not in text and "evil\\x1b" in text
    status, text = transfers("--remove", record.ref, state=state)
    assert status == 0
    assert precious.read_text() == "keep me"
    (state / "transfers.sqlite3").write_bytes(b"not a database" * 100)
    status, text = transfers(state=state)
    assert status == 1 and text.startswith("fileshare: the state database") and "damaged" in text
    assert (state / "transfers.sqlite3").read_bytes() == b"not a database" * 100
