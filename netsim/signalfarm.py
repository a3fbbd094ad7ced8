"""A signaling deployment of several instances behind haproxy, sharing one redis-server, in a
namespace: what the `signal-restart` fault redeploys (SIGTERM: the instance drains and closes
its WebSockets with 1012, then starts again on its port) and crashes (SIGKILL) under clients
that reach it through the one front address, as the Ansible deployment does."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from netsim import netns
from netsim.processes import (
    SignalEndpoint,
    SignalProcess,
    find_program,
    haproxy,
    redis_server,
    start_signal,
    stop,
)

_PEERS: Final = re.compile(rb"^fileshare_signal_session_peers (\d+(?:\.\d+)?)$", re.MULTILINE)
EXIT_WAIT_S: Final = 30.0  # a draining instance's drain (10 s by default), with room to spare


@dataclass
class Farm:
    """The running instances (index i listens on 127.0.0.1 port instances[i].port for ever,
    across restarts) and the front the clients use."""

    front: SignalEndpoint
    instances: list[SignalProcess]
    workdir: Path
    prefix: tuple[str, ...]
    args: tuple[str, ...]
    env: dict[str, str] = field(repr=False)
    restarts: int = 0

    def peers_on(self, index: int) -> int:
        """Session peers connected to instance `index` now (its /metrics, read in the
        namespace); 0 if it does not answer."""
        done = subprocess.run(
            [
                *self.prefix,
                find_program("curl"),
                "-s",
                "--max-time",
                "5",
                f"{self.instances[index].http}/metrics",
            ],
            capture_output=True,
            timeout=15,
        )
        found = _PEERS.search(done.stdout)
        return int(float(found.group(1))) if found else 0

    def in_use(self) -> dict[int, int]:
        """Instance index -> its session peers, for the instances that have any."""
        counts = {i: self.peers_on(i) for i in range(len(self.instances))}
        return {i: n for i, n in counts.items() if n}

    async def replace(self, index: int, how: signal.Signals) -> None:
        """Stop instance `index` with `how` (SIGTERM drains, SIGKILL crashes), wait for its
        exit, and start it again on the same port: a redeploy, or a supervisor's restart."""
        old = self.instances[index]
        old.proc.send_signal(how)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(old.proc.wait, EXIT_WAIT_S)
        stop(old.proc)
        self.restarts += 1
        self.instances[index] = await _start(
            self, index, f"-{self.restarts}", "--port", str(old.port)
        )

    def stop_all(self) -> None:
        for instance in self.instances:
            stop(instance.proc)


async def _start(farm: Farm, index: int, suffix: str, *extra: str) -> SignalProcess:
    return await start_signal(
        farm.workdir / f"signal-{index}{suffix}.log",
        "--instance-id",
        f"signal{index}",
        *farm.args,
        *extra,
        env=farm.env,
        prefix=farm.prefix,
    )


@contextlib.contextmanager
def running_farm(
    namespace: str,
    workdir: Path,
    front_host: str,
    count: int,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Farm]:
    """`count` fileshare-signal instances with `args` on 127.0.0.1 in `namespace`, a private
    redis-server they share (a unix socket in a short temporary directory) and haproxy on
    `front_host`; all stopped when the block ends, however it ends."""
    prefix = tuple(netns.in_namespace(namespace))
    with (
        tempfile.TemporaryDirectory(prefix=f"{netns.RUN_PREFIX}-redis-") as short,
        redis_server(Path(short)) as redis_url,
    ):
        farm = Farm(
            SignalEndpoint(0, front_host),
            [],
            workdir,
            prefix,
            ("--redis-url", redis_url, *args),
            env or {},
        )
        try:
            for index in range(count):
                farm.instances.append(asyncio.run(_start(farm, index, "")))
            ports = [instance.port for instance in farm.instances]
            with haproxy(workdir, ports, prefix=prefix, host=front_host) as port:
                farm.front = SignalEndpoint(port, front_host)
                yield farm
        finally:
            farm.stop_all()
