"""The client adapter: real clients (the `fileshare` CLI, or any program that speaks its JSON
events) run as processes against a real signaling server and, optionally, a real coturn, all in
one isolated network namespace (only `lo`), so no peer traffic can leave it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from netsim import certs, netns
from netsim.processes import SignalEndpoint, start_signal, stop
from netsim.signalfarm import Farm, running_farm
from turn.config import TurnSettings
from turn.launcher import TurnEndpoint, running_turn

OFFLINE = frozenset({"transfers"})  # commands that read local state only: no --server


def sha256(path: Path) -> str:
    """Read in pieces: a long scenario's file is gigabytes."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass
class Client:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    _parsed: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _offset: int = field(default=0, repr=False)

    def events(self) -> list[dict[str, Any]]:
        """The JSON events printed so far, each line parsed once (a long transfer prints tens
        of thousands, read every 50 ms) and only once whole: the client may be mid-line."""
        if self.out.exists():
            with self.out.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
            whole = data.rfind(b"\n") + 1
            lines = data[:whole].decode(errors="replace").splitlines()
            self._parsed += [json.loads(line) for line in lines if line.startswith("{")]
            self._offset += whole
        return list(self._parsed)

    def report(self) -> str:
        """Why it ended as it did, for an assertion message: with --json the error is an event
        on stdout, so stderr alone says nothing (progress events left out: they are most)."""
        said = [json.dumps(e) for e in self.events() if e.get("event") != "progress"][-8:]
        status = self.proc.poll()
        return (
            f"exit {status}; last events: {' | '.join(said) or 'none'}; "
            f"stderr: {self.err.read_text(errors='replace')[-2000:]}"
        )

    def first(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events() if e["event"] == name), None)

    async def wait_event(self, name: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.first(name)
            if event is not None:
                return event
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {name!r} event; {self.report()}")

    async def wait(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"timed out; {self.report()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def answer(self, text: str) -> None:
        """Type `text` on standard input (left open by `Lab.run(asked=True)`), then close it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def copy_terminal(master: int, path: Path, close: bool = True) -> None:
    """Everything the program wrote to its terminal, until it closes (EIO); then the master
    end is closed, unless the caller still types into it (`close=False`: it closes it)."""
    with path.open("ab") as copy:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                data = b""
            if not data:
                break
            copy.write(data)
            copy.flush()
    if close:
        os.close(master)


@dataclass
class Servers:
    """The signaling server (one, or a farm's front) and, optionally, coturn, as clients need
    them."""

    signal: SignalEndpoint
    turn: TurnEndpoint | None = None
    client_env: dict[str, str] = field(default_factory=dict)  # e.g. SSL_CERT_FILE
    farm: Farm | None = None


@contextlib.contextmanager
def running_servers(
    namespace: str,
    workdir: Path,
    signal_host: str,
    turn_ips: tuple[str, ...] = (),
    tls: bool = False,
    signal_secret: str | None = None,
    test_allow: tuple[str, ...] = (),
    signal_args: tuple[str, ...] = (),
    signal_instances: int = 1,
    turn_lifetime: int | None = None,
) -> Iterator[Servers]:
    """fileshare-signal on `signal_host` (several comma-separated: a dual stack) in `namespace`
    (with `signal_args` too; with `signal_instances` above 1, that many behind haproxy there,
    sharing a Redis); with `turn_ips` (one family's, then maybe the other's: the first of
    each in the URLs), a coturn there whose credentials the server hands out (UDP,
    TCP and, with
    `tls`, TLS; `signal_secret` makes the server's secret differ; `test_allow`:
    emulated-internet peers coturn relays to; `turn_lifetime`: the longest allocation lifetime
    it grants)."""
    prefix = tuple(netns.in_namespace(namespace))
    with contextlib.ExitStack() as stack:
        args: list[str] = [*signal_args]
        env: dict[str, str] = {}
        client_env: dict[str, str] = {}
        endpoint: TurnEndpoint | None = None
        if turn_ips:
            secret = secrets.token_urlsafe(16)
            cert = key = None
            if tls:
                (workdir / "tls").mkdir(exist_ok=True)
                cert, key = certs.self_signed(workdir / "tls", ips=turn_ips)
                client_env["SSL_CERT_FILE"] = str(cert)
            settings = TurnSettings(
                listening_ips=turn_ips,
                realm="fileshare.test",
                secrets=(secret,),
                cert=cert,
                pkey=key,
                max_bps=0,  # tests measure correctness, not the production bandwidth cap
                test_allow=test_allow,
            )
            if turn_lifetime is not None:  # allocations refreshed that often (5/6 of it)
                settings = replace(settings, max_allocate_lifetime=turn_lifetime)
            endpoint = stack.enter_context(running_turn(settings, workdir, prefix))
            # A dual stack's: the first address of each family, its own first (aiortc uses
            # the first STUN and TURN URL it can read; browsers may use them all).
            other = [ip for ip in turn_ips if (":" in ip) != (":" in turn_ips[0])]
            for address in (turn_ips[0], *other[:1]):
                served = dataclasses.replace(endpoint, host=address)
                args += ["--stun-urls", served.stun_url]
                for url in served.urls:
                    args += ["--turn-urls", url]
            env = {"FILESHARE_TURN_SECRET": signal_secret or secret}  # env: not in `ps`
        if signal_instances > 1:
            farm = stack.enter_context(
                running_farm(namespace, workdir, signal_host, signal_instances, tuple(args), env)
            )
            yield Servers(farm.front, endpoint, client_env, farm)
            return
        server = asyncio.run(
            start_signal(workdir / "signal.log", *args, env=env, prefix=prefix, host=signal_host)
        )
        stack.callback(stop, server.proc)
        yield Servers(server, endpoint, client_env)


CHECKOUT: Final = Path(__file__).resolve().parent.parent  # what `python -m` runs from here


class Lab:
    """Runs `fileshare` clients (or another client program) as processes in namespaces,
    against `servers`; by default in `namespace`."""

    def __init__(self, namespace: str, workdir: Path, servers: Servers) -> None:
        self.namespace = namespace
        self.workdir = workdir
        self.server = servers.signal
        self.farm = servers.farm
        self.turn = servers.turn
        self.client_env = servers.client_env
        self.clients: list[Client] = []
        self.helpers: list[subprocess.Popen[bytes]] = []

    def run(
        self,
        *args: str,
        state: str = "state",
        name: str = "client",
        program: tuple[str, ...] = ("fileshare",),
        server: str | None = None,
        env: dict[str, str] | None = None,
        answer: str | None = None,
        asked: bool = False,
        json_events: bool = True,
        namespace: str | None = None,
        tty: bool = False,
        cwd: Path | None = None,
    ) -> Client:
        """`answer` is typed on standard input (e.g. to --verify's question); `asked`: standard
        input stays open for a later `Client.answer`; `namespace`:
        the host to run on (default: the lab's); `tty`: stdout and stderr are one pseudo-terminal
        (TERM=dumb, so any escape sequence in it came from somewhere else), copied to `err`;
        `cwd`: the working directory (default: ours), where relative paths in `args` start."""
        index = len(self.clients)
        out = self.workdir / f"{name}-{index}.out"
        err = self.workdir / f"{name}-{index}.err"
        full_env = {
            **os.environ,
            "FILESHARE_STATE_DIR": str(self.workdir / state),
            **self.client_env,
            **({"TERM": "dumb", "NO_COLOR": "1"} if tty else {}),
            **(env or {}),
        }
        if cwd is not None:  # `-m` finds this checkout's code from anywhere, not an installed one
            full_env["PYTHONPATH"] = os.pathsep.join(
                filter(None, (str(CHECKOUT), full_env.get("PYTHONPATH")))
            )
        terminal = os.openpty() if tty else None
        with out.open("wb") as out_file, err.open("wb") as err_file:
            proc = subprocess.Popen(
                [
                    *netns.in_namespace(namespace or self.namespace),
                    sys.executable,
                    "-m",
                    *program,
                    args[0],
                    *(["--json"] if json_events else []),
                    *([] if args[0] in OFFLINE else ["--server", server or self.server.url]),
                    *args[1:],
                ],
                stdout=terminal[1] if terminal else out_file,
                stderr=terminal[1] if terminal else err_file,
                env=full_env,
                stdin=subprocess.PIPE if answer is not None or asked else subprocess.DEVNULL,
                cwd=cwd,
            )
        if terminal is not None:
            os.close(terminal[1])
            threading.Thread(target=copy_terminal, args=(terminal[0], err), daemon=True).start()
        client = Client(proc, out, err)
        if answer is not None:
            client.answer(answer)
        self.clients.append(client)
        return client

    async def send(
        self,
        *paths: Path,
        extra: tuple[str, ...] = (),
        program: tuple[str, ...] = ("fileshare",),
        server: str | None = None,
    ) -> tuple[Client, str]:
        sender = self.run(
            "send", *extra, *map(str, paths), name="send", program=program, server=server
        )
        code = (await sender.wait_event("code"))["code"]
        return sender, code

    def receive(
        self,
        code: str,
        out: Path,
        *extra: str,
        state: str = "state",
        server: str | None = None,
        code_in_argv: bool = False,
        cwd: Path | None = None,
    ) -> Client:
        """By default the code goes in FILESHARE_CODE, out of the process list."""
        args = ("receive", "--out", str(out), *extra, *([code] if code_in_argv else []))
        env = {} if code_in_argv else {"FILESHARE_CODE": code}
        return self.run(*args, state=state, name="recv", server=server, env=env, cwd=cwd)

    def spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        """Any other program in the namespace (stdout piped), stopped with the lab."""
        proc = subprocess.Popen(
            [*netns.in_namespace(self.namespace), *argv], stdout=subprocess.PIPE
        )
        self.helpers.append(proc)
        return proc

    @contextlib.contextmanager
    def blocked(self, rule: str) -> Iterator[None]:
        """Drop what the nft `rule` matches inside the namespace (a rule, not a link down),
        then restore; e.g. "meta l4proto udp" cuts every UDP path, signaling stays up."""
        table = f"{netns.RUN_PREFIX}_block"
        nft = [*netns.in_namespace(self.namespace), "nft"]
        subprocess.run([*nft, "add", "table", "inet", table], check=True, timeout=10)
        try:
            chain = "c { type filter hook output priority 0; }"
            subprocess.run([*nft, "add chain inet", table, chain], check=True, timeout=10)
            subprocess.run([*nft, "add rule inet", table, f"c {rule} drop"], check=True, timeout=10)
            yield
        finally:
            subprocess.run([*nft, "delete", "table", "inet", table], check=True, timeout=10)

    def close(self) -> None:
        for client in self.clients:
            client.kill()
        for helper in self.helpers:
            stop(helper)


@contextlib.contextmanager
def make_lab(
    workdir: Path, turn: bool = False, tls: bool = False, signal_secret: str | None = None
) -> Iterator[Lab]:
    """A lab in one isolated namespace; with `turn`, a coturn there too (see running_servers)."""
    with (
        netns.isolated_loopback("e2e") as namespace,
        running_servers(
            namespace,
            workdir,
            "127.0.0.1",
            turn_ips=(netns.HOST_ADDRESS,) if turn else (),
            tls=tls,
            signal_secret=signal_secret,
            test_allow=(netns.HOST_ADDRESS,),  # the namespace's only address
        ) as servers,
    ):
        lab = Lab(namespace, workdir, servers)
        try:
            yield lab
        finally:
            lab.close()
