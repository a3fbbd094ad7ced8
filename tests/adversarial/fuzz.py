"""A random frame and message fuzzer against the live server: hypothesis draws sequences of
frames (any opcode, flags, mask, lying lengths) and messages (any type, fields of any JSON
value); each sequence goes on a fresh connection, and after it /healthz must still answer.
The caller checks afterwards that the server is alive and logged no traceback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time

import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fsproto import schema
from tests.adversarial.harness import healthz_latency
from tests.rawws import RawWebSocket, upgrade_request

FIELDS = ("v", "type", "id", "access", "sessionId", "token", "peerId", "reconnectKey", "payload")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

messages = st.fixed_dictionaries(
    {
        "v": st.one_of(st.just(schema.VERSION), json_values),
        "type": st.one_of(st.sampled_from(sorted(schema.CLIENT_TYPES)), st.text(max_size=12)),
    },
    optional={name: json_values for name in FIELDS[2:]},
).map(lambda fields: RawWebSocket.frame(msgspec.json.encode(fields)))

raw_frames = st.builds(
    RawWebSocket.frame,
    payload=st.binary(max_size=200),
    opcode=st.integers(0, 15),
    declared_length=st.none() | st.integers(0, 2**20),
    fin=st.booleans(),
    rsv=st.integers(0, 7),
    masked=st.booleans(),
)

sequences = st.lists(
    st.one_of(messages, raw_frames, st.binary(max_size=64)), min_size=1, max_size=8
)

# Each sequence comes from an address of its own (127.1.x.y), so per-address limits do not end
# the fuzzing: it is about what the parser and the handlers survive.
_sources = (f"127.1.{n // 250}.{n % 250 + 1}" for n in itertools.cycle(range(250 * 250)))


async def exchange(port: int, sequence: list[bytes]) -> None:
    """Send one sequence after an upgrade, read what comes back for 50 ms, hang up."""
    sock = socket.socket()
    sock.bind((next(_sources), 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    with contextlib.suppress(OSError, TimeoutError):
        writer.write(upgrade_request(port) + b"".join(sequence))
        await writer.drain()
        async with asyncio.timeout(0.05):
            while await reader.read(65536):
                pass
    writer.transport.abort()


BATCH = 50  # examples per hypothesis run: the time budget is checked between runs


def run(port: int, examples: int, seconds: float) -> int:
    """Up to `examples` sequences within about `seconds`, in hypothesis runs of BATCH;
    AssertionError (with hypothesis's shrunk example) if /healthz ever stops answering within
    2 s. Returns how many sequences were sent."""
    deadline = time.monotonic() + seconds
    sent = 0

    @settings(
        max_examples=BATCH,
        deadline=None,
        database=None,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(sequences)
    def one(sequence: list[bytes]) -> None:
        nonlocal sent
        sent += 1

        async def go() -> float:
            await exchange(port, sequence)
            return await healthz_latency(port)

        assert asyncio.run(go()) < 2.0, "/healthz did not answer within 2 s"

    while sent < examples and time.monotonic() < deadline:
        one()
    return sent
