"""The CLI's refusals that need no network: one line, a documented exit code, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fileshare.state import TransferRecord, TransferStore


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
