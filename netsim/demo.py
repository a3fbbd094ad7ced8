"""`make lab` until the NAT test-bed exists: the real servers as processes on loopback, two peers
pairing through two instances that share one redis-server, an instance killed mid-session, and a
report of what each step took. Everything it starts it stops, also on failure and Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from fileshare.signal_client import SignalClient, payload_of
from netsim.lab import Lab, make_lab, sha256
from netsim.processes import MissingProgram, redis_server, signal_instances
from signaling import schema

MIB = 2**20


@dataclass
class Step:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


async def timed(steps: list[Step], name: str, work: Coroutine[object, object, str]) -> None:
    started = time.perf_counter()
    try:
        detail = await work
        steps.append(Step(name, time.perf_counter() - started, True, detail))
    except Exception as exc:
        steps.append(
            Step(name, time.perf_counter() - started, False, f"{type(exc).__name__}: {exc}")
        )
        raise


async def handshake(a: SignalClient, b: SignalClient) -> str:
    await a.relay("offer", {"type": "offer", "sdp": "v=0 (demo)"})
    await b.relay("answer", {"type": "answer", "sdp": "v=0 (demo)"})
    for client in (b, a):
        event = await client.next_event()
        assert isinstance(event, schema.Relayed), event
    for i in range(4):
        await a.relay(
            "ice_candidate", {"candidate": f"candidate:{i} 1 udp 1 192.0.2.1 {i} typ host"}
        )
        event = await b.next_event()
        assert isinstance(event, schema.Relayed)
        assert payload_of(event)["candidate"].startswith(f"candidate:{i}")
    return "offer, answer and 4 candidates relayed"


async def run(workdir: Path, steps: list[Step]) -> None:
    with redis_server(workdir) as redis_url:
        async with signal_instances(
            workdir, 2, "--redis-url", redis_url, "--grace-seconds", "20", name="demo"
        ) as (one, two):
            a = await SignalClient.connect(one.url)
            b = await SignalClient.connect(two.url)
            created = await a.create()
            joined_holder: list[schema.SessionJoined] = []

            async def join() -> str:
                joined_holder.append(await b.join(created.sessionId, created.token))
                await a.next_event()
                return f"A on instance {one.port}, B on instance {two.port}"

            await timed(steps, "create + join across instances", join())
            await timed(steps, "handshake across instances", handshake(a, b))

            async def failover() -> str:
                two.proc.send_signal(signal.SIGKILL)
                two.proc.wait(10)
                await b.wait_closed()
                b2 = await SignalClient.connect(one.url)
                await b2.rejoin(created.sessionId, "b", joined_holder[0].reconnectKey)
                while not isinstance(await a.next_event(), schema.PeerJoined):
                    pass
                await handshake(a, b2)
                await b2.close()
                return "instance killed; B rejoined through the other and the handshake completed"

            await timed(steps, "failover after SIGKILL", failover())
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{one.port}/metrics") as resp,
            ):
                metrics = await resp.text()
            relayed = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("fileshare_signal_messages_relayed_total{")
            )
            steps.append(Step("metrics scraped", 0.0, relayed > 0, f"{relayed:.0f} relayed"))
            await a.close()
            await b.close()


async def transfers(lab: Lab, workdir: Path, steps: list[Step]) -> None:
    """Real files between two `fileshare` processes in an isolated namespace."""
    for label, size, extra in (
        ("transfer, direct (host candidates)", 64 * MIB, ()),
        ("transfer, relay only (through coturn)", 16 * MIB, ("--relay-only",)),
    ):
        source = workdir / f"demo-{size}.bin"
        with source.open("wb") as f:
            for _ in range(size // MIB):
                f.write(os.urandom(MIB))
        out = workdir / f"out-{size}"
        started = time.perf_counter()
        sender, code = await lab.send(source, extra=extra)
        receiver = lab.receive(code, out, *extra)
        ok = await receiver.wait() == 0 and await sender.wait() == 0
        seconds = time.perf_counter() - started
        ok = ok and sha256(out / source.name) == sha256(source)
        path = (receiver.first("connected") or {}).get("path", {})
        route = f"{path.get('local')} -> {path.get('remote')}" + (
            f", TURN over {path['turn']}" if "turn" in path else ""
        )
        detail = f"{size / MIB / seconds:.1f} MB/s incl. set-up, {route}, SHA-256 equal"
        steps.append(Step(label, seconds, ok, detail if ok else receiver.err.read_text()[-200:]))


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="fs-lab-"))
    steps: list[Step] = []
    try:
        asyncio.run(run(workdir, steps))
        if os.geteuid() == 0:
            with make_lab(workdir, turn=True) as lab:
                asyncio.run(transfers(lab, workdir, steps))
        else:
            steps.append(Step("transfers", 0.0, False, "need root for network namespaces"))
    except MissingProgram as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # report what ran, then the failure, in one line
        steps.append(Step("lab aborted", 0.0, False, f"{type(exc).__name__}: {exc}"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    width = max(len(s.name) for s in steps)
    print("FileShare lab (loopback and one isolated namespace; the NAT matrix arrives with netsim)")
    for step in steps:
        mark = "PASS" if step.ok else "FAIL"
        print(f"  {mark}  {step.name:<{width}}  {step.seconds * 1000:8.1f} ms  {step.detail}")
    failed = sum(not s.ok for s in steps)
    print(f"{len(steps) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
