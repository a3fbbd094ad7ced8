"""Measuring a link from inside its namespaces (run with `ip netns exec`):

    python -m netsim.linkprobe serve --port P          # UDP echo and TCP sink; prints "ready"
    python -m netsim.linkprobe rtt  --to IP --port P --count N --interval S
    python -m netsim.linkprobe loss --to IP --port P --count N --interval S
    python -m netsim.linkprobe rate --to IP --port P --seconds S

Each client prints one JSON object: `rtt` the round-trip times (ms) of echoed probes, `loss`
the share of probes that did not come back (%), `rate` what the sink received (kbit/s,
counted by the sink from first byte to end of stream).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from netsim.realtime import keep_time

_PROBE = struct.Struct("!Id")  # sequence number, send time


def _udp_echo(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(2048)
        with contextlib.suppress(OSError):  # EPERM: the echo was dropped on the way out
            sock.sendto(data, peer)


def _tcp_sink(conn: socket.socket) -> None:
    with conn:
        total = 0
        first = last = 0.0
        while chunk := conn.recv(1 << 16):
            if not total:
                first = time.monotonic()
            total += len(chunk)
            last = time.monotonic()
        conn.sendall(struct.pack("!Qd", total, last - first))


def serve(port: int) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))  # noqa: S104 - inside a namespace of our own
    tcp = socket.create_server(("0.0.0.0", port))  # noqa: S104
    threading.Thread(target=_udp_echo, args=(udp,), daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=_tcp_sink, args=(conn,), daemon=True).start()


def _probes(to: str, port: int, count: int, interval: float) -> dict[int, float]:
    """Send `count` probes `interval` apart; returns sequence -> RTT (s) of those echoed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((to, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    rtts: dict[int, float] = {}
    done = threading.Event()

    def receive() -> None:
        sock.settimeout(0.2)
        while not done.is_set():
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            except OSError:  # ECONNREFUSED and the like: that probe is lost
                continue
            seq, sent = _PROBE.unpack_from(data)
            rtts.setdefault(seq, time.monotonic() - sent)

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    start = time.monotonic()
    for seq in range(count):
        pause = start + seq * interval - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with contextlib.suppress(OSError):  # EPERM: dropped on the way out, a lost probe
            sock.send(_PROBE.pack(seq, time.monotonic()).ljust(64, b"\0"))
    time.sleep(1.0)  # stragglers
    done.set()
    reader.join()
    sock.close()
    return rtts


def rate(to: str, port: int, seconds: float) -> dict[str, Any]:
    sock = socket.create_connection((to, port), timeout=30)
    block = b"\0" * (1 << 16)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.sendall(block)
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    while len(answer) < 16:
        chunk = sock.recv(16 - len(answer))
        if not chunk:
            raise ConnectionError("sink closed without its count")
        answer += chunk
    sock.close()
    total, elapsed = struct.unpack("!Qd", answer)
    return {"bytes": total, "seconds": elapsed, "kbit": total * 8 / elapsed / 1000}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netsim.linkprobe")
    parser.add_argument("mode", choices=["serve", "rtt", "loss", "rate"])
    parser.add_argument("--to", default="")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.mode != "rate":
        keep_time()  # the echo and the probe timestamp packets: a wait for a core is not RTT
    result: dict[str, Any]
    if args.mode == "serve":
        serve(args.port)
        return 0
    if args.mode == "rate":
        result = rate(args.to, args.port, args.seconds)
    else:
        rtts = _probes(args.to, args.port, args.count, args.interval)
        ms = sorted(value * 1000 for value in rtts.values())
        result = {
            "sent": args.count,
            "received": len(rtts),
            "loss_percent": 100 * (args.count - len(rtts)) / args.count,
        }
        if ms:
            result |= {
                "min": ms[0],
                "p50": statistics.median(ms),
                "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
                "mean": statistics.fmean(ms),
            }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
