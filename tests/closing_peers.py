"""Two aiortc peers in this process (the layer is process-wide, so tests run this as a child)
with SCTP `--kind`: data is in flight when a T3 timer fires and, before its send runs, the
sender closes (stock `RTCDtlsTransport.stop` shuts OpenSSL down before its task marks the
transport closed). Prints one JSON line: what reached the loop's exception handler (an
unretrieved task exception is reported there when the task is collected), and what a send
raises on the closed transport.

    python -m tests.closing_peers --kind bbr
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
from typing import Any

from aiortc import RTCDataChannel

from fileshare import sctp
from fileshare.sctp import wire
from tests import peer_pair


async def run() -> dict[str, object]:
    loop = asyncio.get_running_loop()
    reported: list[str] = []

    def report(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        reported.append(repr(context.get("exception") or context["message"]))

    loop.set_exception_handler(report)

    def ignore(_: RTCDataChannel) -> None:
        pass

    sender, receiver, channel = await peer_pair.open_pair(ignore)
    for _ in range(64):
        channel.send(bytes(2**16))
    await asyncio.sleep(0.05)
    association: Any = sender.sctp
    association._t3_expired()  # stock schedules its _transmit as a task of its own
    await sender.close()
    await asyncio.sleep(0.3)
    try:
        wire.seal(association.transport, b"late")
        refused = None
    except Exception as error:  # its kind is the result
        refused = type(error).__name__
    await receiver.close()
    gc.collect()
    await asyncio.sleep(0.05)
    return {"reported": reported, "refused": refused}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("bbr", "reno", "stock"), required=True)
    sctp.install(parser.parse_args().kind)
    print(json.dumps(asyncio.run(run())), flush=True)


if __name__ == "__main__":
    main()
