"""The CLI's refusals that need no network: one line, a documented exit code, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


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
