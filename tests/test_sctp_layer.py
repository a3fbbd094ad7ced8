"""fileshare.sctp against the aiortc it patches: the pin fails loudly when aiortc moves, and a
tuned peer and a stock one (separate processes: the patch is process-wide) move data both ways."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiortc
import pytest
from aiortc.rtcsctptransport import RTCSctpTransport

from fileshare import sctp

ROOT = Path(__file__).resolve().parent.parent


def test_the_pinned_aiortc_is_the_installed_one() -> None:
    functions = {name: getattr(RTCSctpTransport, name) for name in sctp.PINNED_SOURCES}
    if sctp._installed not in (None, "stock"):
        functions = {**functions, **sctp.association.ORIGINALS}
    sctp.check(aiortc.__version__, functions)


def test_another_version_is_refused() -> None:
    functions = {name: getattr(RTCSctpTransport, name) for name in sctp.PINNED_SOURCES}
    with pytest.raises(
        sctp.IncompatibleAiortc, match=r"written for aiortc 1\.16\.0, found 1\.17\.0"
    ):
        sctp.check("1.17.0", functions)


def test_a_changed_function_is_refused_by_name() -> None:
    functions = {name: getattr(RTCSctpTransport, name) for name in sctp.PINNED_SOURCES}
    functions["_transmit"] = test_a_changed_function_is_refused_by_name
    with pytest.raises(sctp.IncompatibleAiortc, match="changed underneath: _transmit"):
        sctp.check(sctp.AIORTC_VERSION, functions)


def test_an_unknown_controller_is_refused() -> None:
    with pytest.raises(ValueError, match="reno, bbr or stock"):
        sctp.install("cubic")


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return line
    raise AssertionError(f"peer exited ({proc.wait()}) without a result")


def transfer(sender_sctp: str, receiver_sctp: str, size: int) -> tuple[dict[str, Any], ...]:
    """One dc_peer sender and receiver (separate processes), SDP wired through their pipes."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benches.dc_peer", role, "--bytes", str(size), "--sctp", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for role, kind in (("send", sender_sctp), ("receive", receiver_sctp))
    ]
    sender, receiver = procs
    try:
        assert sender.stdin is not None and receiver.stdin is not None
        receiver.stdin.write(_line(sender))
        receiver.stdin.flush()
        sender.stdin.write(_line(receiver))
        sender.stdin.flush()
        results = json.loads(_line(sender)), json.loads(_line(receiver))
        assert sender.wait(30) == 0 and receiver.wait(30) == 0
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize(
    ("sender_sctp", "receiver_sctp"),
    [("bbr", "stock"), ("stock", "bbr"), ("reno", "stock"), ("stock", "reno")],
)
def test_tuned_and_stock_aiortc_transfer_both_ways(sender_sctp: str, receiver_sctp: str) -> None:
    size = 6 * 2**20 + 12345  # not a whole number of messages
    sent, received = transfer(sender_sctp, receiver_sctp, size)
    assert sent["bytes"] == received["bytes"] == size
    assert sent["sha256"] == received["sha256"]
