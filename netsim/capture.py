"""Packet capture for the encryption scenario: tcpdump on every interface of a namespace (the
emulated internet holds the signaling server, the TURN relay and every site's uplink), and a
search of the capture for what must never be there in clear."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from netsim import netns
from netsim.processes import find_program, stop


@contextlib.contextmanager
def capturing(namespace: str, out: Path) -> Iterator[Path]:
    """Whole packets (`-s 0`) from every interface into `out`, written as they come (`-U`);
    the capture is complete when the block ends (tcpdump flushes on SIGINT)."""
    argv = [find_program("tcpdump"), "-i", "any", "-s", "0", "-U", "-n", "-w", str(out)]
    log = out.with_suffix(".log")
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [*netns.in_namespace(namespace), *argv], stdout=log_file, stderr=log_file
        )
    try:
        deadline = time.monotonic() + 10
        while "listening on" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tcpdump did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        stop(proc)


def size_forms(size: int) -> dict[str, bytes]:
    """How a file size could appear on the wire: in decimal text, or as a 4- or 8-byte integer
    in either byte order (4-byte forms only where the size fits)."""
    forms = {"decimal": str(size).encode()}
    for width in (4, 8):
        if size < 2 ** (8 * width):
            forms[f"{width}-byte big-endian"] = size.to_bytes(width, "big")
            forms[f"{width}-byte little-endian"] = size.to_bytes(width, "little")
    return forms


def find(capture: Path, needles: dict[str, bytes]) -> dict[str, int]:
    """How often each needle occurs in the capture's bytes (packet payloads and all)."""
    data = capture.read_bytes()
    return {name: data.count(needle) for name, needle in needles.items()}
