"""The user's config file and the hint when no signaling server answers, through the real CLI:
one line, a documented exit code, never a traceback, whatever the file holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fileshare import config

GOOD = b"""
server = "wss://signal.example.org/ws"
stun = ["stun:stun.example.org:3478"]
turn = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
turn_user = "alice"
"""


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fileshare(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "FILESHARE_SERVER"}
    return subprocess.run(
        [sys.executable, "-m", "fileshare", *args],
        capture_output=True,
        text=True,
        env={
            **base,
            "FILESHARE_STATE_DIR": str(tmp_path / "state"),
            "FILESHARE_CONFIG": str(tmp_path / "config.toml"),
            **env,
        },
        timeout=60,
        check=False,
    )


def test_a_config_file_gives_the_defaults() -> None:
    settings = config.parse(GOOD)
    assert settings.server == "wss://signal.example.org/ws"
    assert settings.stun == ["stun:stun.example.org:3478"]
    assert len(settings.turn) == 2 and settings.turn_user == "alice"
    assert config.parse(b"") == config.UserConfig()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'server = "ws://x', "Unterminated string"),
        (b"server = 3", "Expected `str | null`"),
        (b'server = "http://example.org/ws"', "matching regex '^wss?://' - at `$.server`"),
        (b'stun = ["turn:x"]', "at `$.stun[0]`"),
        (b"stun = [" + b'"stun:x",' * 9 + b"]", "length <= 8"),
        (b'server = "ws://' + b"a" * 3000 + b'"', "length <= 2048"),
        (b'\x1b[31mevil = "\x1b]0;title\x07"', "Invalid statement"),
        (b'"\\u001b[2Jevil" = 1', "unknown field `\\x1b[2Jevil`"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[server]\nurl = 1", "Expected `str | null`"),
    ],
)
def test_a_hostile_config_is_one_clear_line(data: bytes, says: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse(data, "c.toml")
    message = str(caught.value)
    assert message.startswith("config file c.toml: ") and says in message
    assert message.isprintable(), message  # no escape sequence, no newline reaches a terminal


def test_files_that_are_not_config_files(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (config.MAX_BYTES + 1))
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # a read would block forever: refused without reading
    for path, says in ((big, "larger than 64 KiB"), (fifo, "not a regular file")):
        with pytest.raises(config.ConfigError, match=says):
            config.load(path)
    with pytest.raises(config.ConfigError, match="not a regular file"):
        config.load(tmp_path)
    assert config.load(tmp_path / "missing.toml") == config.UserConfig()


def test_no_server_no_hint_is_fixed(tmp_path: Path) -> None:
    """The configured server is used, and when nothing answers there the one line says what
    it is and what to do; FILESHARE_SERVER still wins over the file."""
    configured = f"ws://127.0.0.1:{closed_port()}/ws"
    (tmp_path / "config.toml").write_text(f'server = "{configured}"\n')
    done = fileshare(tmp_path, "send", "--no-qr", str(tmp_path / "config.toml"))
    assert done.returncode == 4, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("fileshare:")]
    assert line == (
        f"fileshare: no signaling server at {configured} (connection refused): start one with "
        f"`fileshare-signal`, or set FILESHARE_SERVER or `server` in {tmp_path / 'config.toml'}"
    )
    assert "Traceback" not in done.stderr
    other = f"ws://127.0.0.1:{closed_port()}/ws"
    done = fileshare(
        tmp_path, "receive", "--json", "48213907-crane-opera-lemon", FILESHARE_SERVER=other
    )
    (event,) = [json.loads(x) for x in done.stdout.splitlines()]
    assert done.returncode == 4 and event["code"] == "no_server" and other in event["message"]


def test_a_garbage_config_file_stops_the_cli_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_bytes(b"\x1b]0;pwned\x07 = = =\n" * 3)
    done = fileshare(tmp_path, "transfers")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "\x1b" not in done.stderr
    assert done.stderr.startswith(f"fileshare: config file {tmp_path / 'config.toml'}: ")


def test_the_config_lists_and_the_flags_that_replace_them(tmp_path: Path) -> None:
    """doctor probes the configured STUN server; --stun replaces the file's list."""
    server = f"ws://127.0.0.1:{closed_port()}/ws"
    configured, flagged = f"stun:127.0.0.1:{closed_port()}", f"stun:127.0.0.1:{closed_port()}"
    (tmp_path / "config.toml").write_text(f'server = "{server}"\nstun = ["{configured}"]\n')
    for extra, expected in (((), configured), (("--stun", flagged), flagged)):
        done = fileshare(tmp_path, "doctor", "--json", *extra)
        report = json.loads(done.stdout)
        assert done.returncode == 4 and report["verdict"]["kind"] == "no_server", done.stderr
        assert [s["url"] for s in report["findings"]["stun"]] == [expected]
        assert report["findings"]["signaling"]["url"] == server
