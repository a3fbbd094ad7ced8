"""Running scenarios: for each, the emulated network (`netsim.world`), the servers on its
internet (signaling and a coturn with two addresses), the two peers as processes through the
client adapter (`netsim.lab`), the fault at its moment, then every expectation checked and
every figure recorded (`netsim.results`). Everything a scenario started is stopped and
removed when it ends, however it ends; the logs of a scenario that did not pass are kept."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from netsim import calibration, capture, conntrack, doctorcheck, expectations, timeline, world
from netsim.lab import Client, Lab, running_servers, sha256
from netsim.results import ScenarioResult, Status
from netsim.scenario import CLIENT_PROGRAMS, Fault, FaultKind, Kind, Scenario
from turn.launcher import TurnProcess

MIB: Final = 2**20
# Peers coturn may relay to: the emulated internet only (it denies documentation ranges).
EMULATED_INTERNET: Final = ("198.51.100.0-198.51.100.255", "203.0.113.0-203.0.113.255")
MARKER: Final = b"FILESHARE-NETSIM-MARKER-"
SHORT_CUT_SECONDS: Final = 15.0  # under the client's stall timeout: the connection survives
GRACE_DEFAULT_S: Final = 60.0  # the signaling server's --grace-seconds default
SIGNAL_INSTANCES: Final = 3  # behind haproxy, for a signal-restart fault
SIGNAL_BACK_WAIT_S: Final = 90.0  # both peers on the signaling server again after a restart


@dataclass(frozen=True)
class Payload:
    path: Path
    size: int
    marker: bytes
    name_token: bytes


def make_payload(directory: Path, scenario: Scenario) -> Payload:
    """A file of the scenario's size made of a repeated marker (so that a clear-text leak of
    any part of it would show), under a name with a token of its own."""
    token = os.urandom(6).hex()
    marker = MARKER + token.encode() + b"|"
    # Never a round size: its 4-byte forms would be mostly zeros, found anywhere by chance.
    size = round(scenario.file_mib * MIB) + (int.from_bytes(os.urandom(2), "big") | 0x8001)
    name_token = f"secret-name-{token}".encode()
    path = directory / f"{name_token.decode()}.bin"
    block = marker * (MIB // len(marker) + 1)
    with path.open("wb") as f:
        left = size
        while left:
            piece = block[: min(left, MIB)]
            f.write(piece)
            left -= len(piece)
        # Written back now, not inside the transfer (benches.links.random_file says why).
        f.flush()
        os.fsync(f.fileno())
    return Payload(path, size, marker, name_token)


def _path_of(client: Client) -> dict[str, Any]:
    """The pair that carried the first connection: its `connected` event's, or the last `path`
    event of that connection after it (a browser moves to a better pair once one works)."""
    events = client.events()
    first = next((e for e in events if e["event"] == "connected"), None)
    if first is None:
        return {}
    moved = [e for e in events if e["event"] == "path" and e.get("epoch") == first["epoch"]]
    return dict((moved[-1] if moved else first)["path"])


def _connected(client: Client) -> list[dict[str, Any]]:
    return [e for e in client.events() if e["event"] == "connected"]


def _count(client: Client, name: str) -> int:
    return sum(1 for e in client.events() if e["event"] == name)


async def _restored(*clients: Client, wanted: int, timeout: float) -> float | None:
    """When the clients' `signaling_restored` events, together, reached `wanted`; None if
    they did not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamps = sorted(
            e["ts"] for c in clients for e in c.events() if e["event"] == "signaling_restored"
        )
        if len(stamps) >= wanted:
            return float(stamps[wanted - 1])
        await asyncio.sleep(0.1)
    return None


def _data_moving_after(receiver: Client, moment: float) -> float | None:
    """When the receiver first reported more bytes than it held at `moment`."""
    progress = [e for e in receiver.events() if e["event"] == "progress"]
    held = max((e["done"] for e in progress if e["ts"] <= moment), default=0)
    return next((e["ts"] for e in progress if e["ts"] > moment and e["done"] > held), None)


async def _fault_when(
    sender: Client, share: float, strike: Callable[[], None], timeout: float
) -> float | None:
    """Call `strike` once the sender has `share` of its bytes acknowledged, but not all of
    them (acknowledgements come in batches); returns the share acknowledged then, or None if
    the transfer ended (or stalled) first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sender.proc.poll() is None:
        progress = [e for e in sender.events() if e["event"] == "progress"]
        if progress:
            done, total = int(progress[-1]["done"]), max(int(progress[-1]["total"]), 1)
            if done >= total:
                return None
            if done >= share * total:
                strike()
                return done / total
        await asyncio.sleep(0.05)
    return None


# A peer's host changing networks, and what the moved client's reconnect reason must say.
_MOVES: Final = {
    FaultKind.MOVE: ("is gone", "address gone", world.Leaving.GONE),
    FaultKind.REROUTE: ("now leaves from", "route moved off its address", world.Leaving.LINK_DOWN),
    FaultKind.CARRIER_LOSS: (
        "lost its link (no carrier)",
        "link's carrier gone",
        world.Leaving.CARRIER,
    ),
}


class ScenarioRun:
    """One transfer scenario in a built world, with its servers running."""

    def __init__(self, scenario: Scenario, net: world.World, lab: Lab, workdir: Path) -> None:
        self.scenario = scenario
        self.net = net
        self.lab = lab
        self.workdir = workdir
        self.result = ScenarioResult(scenario.name, scenario.kind.value, scenario.description)
        self.fault_ended_at: float | None = None  # wall clock, as the clients' event stamps
        self.result.metrics.update(
            nat_a=scenario.nat_label(scenario.sender),
            nat_b=scenario.nat_label(scenario.receiver),
            client_a=scenario.sender_client,
            client_b=scenario.receiver_client,
        )
        self._fault_tasks: list[asyncio.Task[None]] = []  # faults that take steps
        self.marks: list[timeline.Mark] = []  # each fault as it happened, in turn

    def _args(self) -> tuple[str, ...]:
        return ("--relay-only",) if self.scenario.relay_only else ()

    @property
    def _paused(self) -> bool:
        return self.scenario.fault is not None and self.scenario.fault.kind is FaultKind.PAUSE

    async def transfer(self, payload: Payload) -> None:
        sc, lab, result = self.scenario, self.lab, self.result
        send_ns = self.net.host(sc.sender.site, sc.sender.host)
        recv_ns = self.net.host(sc.receiver.site, sc.receiver.host)
        out = self.workdir / "received"
        out.mkdir()
        sender = lab.run(
            "send",
            *self._args(),
            str(payload.path),
            name="send",
            namespace=send_ns,
            program=CLIENT_PROGRAMS[sc.sender_client],
        )
        code = (await sender.wait_event("code", 60))["code"]
        over_ipv6 = all(site.ipv6 for site in sc.sites)  # the receiver signals over IPv6
        receiver = lab.run(
            "receive",
            "--out",
            str(out),
            *self._args(),
            *(("--verify",) if self._paused else ()),
            name="recv",
            state="recv-state",
            env={"FILESHARE_CODE": code},
            namespace=recv_ns,
            program=CLIENT_PROGRAMS[sc.receiver_client],
            asked=self._paused,
            server=f"ws://[{world.SERVER_IPS6[0]}]:{lab.server.port}/ws" if over_ipv6 else None,
        )
        if over_ipv6:
            result.metrics["receiver_signaling"] = "IPv6"
        if self._paused:
            await self._answer_late(receiver)
        for number, fault in enumerate(() if self._paused else sc.faults, 1):
            striker = self._striker(fault, sender, receiver)
            struck = await _fault_when(sender, fault.at, striker, sc.timeout_s)
            shown = "before the end" if struck is None else f"at {struck:.0%} acknowledged"
            which = "fault" if sc.fault else f"fault {number} ({fault.kind.value})"
            wanted = f"at {fault.at:.0%}"
            result.check(f"{which} struck mid-transfer", struck is not None, wanted, shown)
            if struck is not None:
                result.metrics["fault_at" if sc.fault else f"fault_at_{number}"] = round(struck, 3)
        sender_exit = await sender.wait(sc.timeout_s)
        receiver_exit = await receiver.wait(60)
        for task in self._fault_tasks:
            await task
        result.check("sender exit", sender_exit == 0, 0, sender_exit)
        result.check("receiver exit", receiver_exit == 0, 0, receiver_exit)
        arrived = out / payload.path.name
        same = arrived.exists() and sha256(arrived) == sha256(payload.path)
        result.check("file arrived intact", same, "same SHA-256", "same" if same else "differs")
        self._judge_path(sender, receiver)
        self._figures(sender, receiver, payload)

    async def _answer_late(self, receiver: Client) -> None:
        """The receiver's user takes `fault.seconds` to answer its --verify question: the peer
        connection is up, nothing of the transfer moves, and what the clients still send
        (keepalives, ICE consent checks) must hold both NATs' mappings. Each router's conntrack
        is read every second meanwhile: the least time its peer flow had left shows it."""
        fault, result = self.scenario.fault, self.result
        assert fault is not None
        await receiver.wait_event("manifest", self.scenario.timeout_s)
        asked = time.monotonic()
        least: dict[str, int] = {}
        while (waited := time.monotonic() - asked) < fault.seconds:
            for name, site in self.net.sites.items():
                flows = await asyncio.to_thread(conntrack.udp_table, site.router)
                left = conntrack.peer_flow_left(flows, world.SERVER_IPS)
                least[name] = min(least.get(name, 10**6), -1 if left is None else left)
            await asyncio.sleep(min(1.0, max(fault.seconds - waited, 0)))
        receiver.answer("y\n")
        result.metrics["pause_seconds"] = round(time.monotonic() - asked, 1)
        for name, left in least.items():  # -1: no direct flow seen at some moment (relayed)
            result.metrics[f"mapping_least_left_s_{name}"] = left

    def _ended(self, index: int, moment: float) -> None:
        """Fault `index` (of `marks`) ended at `moment` (wall clock)."""
        self.fault_ended_at = moment
        mark = self.marks[index]
        self.marks[index] = timeline.Mark(mark.kind, mark.start, moment)

    def _striker(self, fault: Fault, sender: Client, receiver: Client) -> Callable[[], None]:
        """What strikes `fault`, marked in `marks` when it does."""
        act = self._action(fault, len(self.marks), sender, receiver)

        def strike() -> None:
            now = time.time()
            self.marks.append(timeline.Mark(fault.kind.value, now, now))
            act()

        return strike

    def _action(
        self, fault: Fault, index: int, sender: Client, receiver: Client
    ) -> Callable[[], None]:
        if fault.kind is FaultKind.REBIND:
            return lambda: self.net.rebind(fault.site)
        if fault.kind in _MOVES:
            sc = self.scenario
            end = sc.receiver if sc.receiver.site == fault.site else sc.sender

            async def moving() -> None:  # pyroute2's calls run a loop of their own: a thread
                host = self.net.host(end.site, end.host)
                leaving = _MOVES[fault.kind][2]
                moved_to = await asyncio.to_thread(self.net.move, host, fault.to, leaving)
                self.result.metrics["moved_to"] = moved_to
                self._ended(index, time.time())

            def move() -> None:
                self._fault_tasks.append(asyncio.ensure_future(moving()))

            return move
        if fault.kind is FaultKind.TURN_RESTART:
            turn = self.lab.turn
            assert turn is not None

            def restart_turn() -> None:
                task = self._restart_turn(turn.process, index)
                self._fault_tasks.append(asyncio.ensure_future(task))

            return restart_turn
        if fault.kind is FaultKind.SIGNAL_RESTART:

            def restart() -> None:
                task = self._restart_signaling(sender, receiver)
                self._fault_tasks.append(asyncio.ensure_future(task))

            return restart

        def cut() -> None:
            self.net.cut(fault.site, fault.udp_only)
            self.result.metrics["cut_seconds"] = fault.seconds
            self._ended(index, time.time() + fault.seconds)
            loop = asyncio.get_running_loop()
            loop.call_later(fault.seconds, self.net.restore, fault.site)

        return cut

    async def _restart_turn(self, process: TurnProcess, index: int) -> None:
        """coturn stopped (SIGTERM) and started again: the relayed path is gone, the peers
        must allocate anew (with fresh credentials if theirs expired) in a new connection."""
        await asyncio.to_thread(process.restart)
        self._ended(index, time.time())

    async def _restart_signaling(self, sender: Client, receiver: Client) -> None:
        """Redeploy the instances the peers use (SIGTERM: drain, 1012; started again), wait
        until both peers are back on the signaling server, then crash (SIGKILL, restarted)
        the instance one of them is on now; each peer must have come back every time, and the
        data channel must have carried on through all of it (one connection)."""
        farm, result = self.lab.farm, self.result
        assert farm is not None
        for how in (signal.SIGTERM, signal.SIGKILL):
            used = await asyncio.to_thread(farm.in_use)
            moved = sum(used.values())
            before = sum(_count(c, "signaling_restored") for c in (sender, receiver))
            struck = time.time()
            result.check(
                f"{how.name} mid-transfer", sender.proc.poll() is None, "sender running", str(used)
            )
            await asyncio.gather(*(farm.replace(index, how) for index in used))
            back = await _restored(
                sender, receiver, wanted=before + moved, timeout=SIGNAL_BACK_WAIT_S
            )
            name = how.name.lower()
            result.check(
                f"peers back on signaling after {how.name}",
                back is not None,
                f"{moved} rejoin(s)",
                "none in time" if back is None else f"{back - struck:.1f} s after the signal",
            )
            result.metrics[f"{name}_instances"] = len(used)
            if back is not None:  # from the signal to the last peer's rejoin
                result.metrics[f"{name}_rejoin_s"] = round(back - struck, 2)
        reasons = [
            str(e.get("reason", ""))
            for c in (sender, receiver)
            for e in c.events()
            if e["event"] == "reconnecting"
        ]
        drained = sum("code 1012" in reason for reason in reasons)
        result.check("a draining instance closed with 1012", drained > 0, "> 0", drained)

    def _judge_path(self, sender: Client, receiver: Client) -> None:
        sc, result = self.scenario, self.result
        mine, theirs = _path_of(sender), _path_of(receiver)
        if not mine or not theirs:
            result.check("connected", False, "a connected event on both sides", "missing")
            return
        if "browser" in sc.clients:
            # A browser names its local candidate as translated or not (Chromium updates it
            # from its checks' mapped address), so its own view says it all; the CLI's may
            # predate the browser's move to a better pair, and sees a browser's host address
            # (an mDNS name to it) as peer-reflexive.
            end = sc.sender if sc.sender_client == "browser" else sc.receiver
            view = mine if sc.sender_client == "browser" else theirs
            own = self.net.sites[end.site].plan.hosts[end.host]
            other = theirs if view is mine else mine
            local = expectations.browser_local(view, other, own)
            observed = expectations.category(local, view.get("remote", "?"), local)
        else:  # aioice names only host and relay candidates as local: the peer's view says more
            observed = expectations.category(
                mine.get("local", "?"), mine.get("remote", "?"), theirs.get("remote", "?")
            )
        a, b = sc.edges
        result.metrics.update(path=observed)
        result.metrics.update(behaviour_a=a.behaviours, behaviour_b=b.behaviours)
        result.metrics["expected_path"] = sc.expected_path
        result.metrics["pair"] = f"{mine.get('local')}->{mine.get('remote')}"
        # The side behind a UDP-blocked edge reports the transport the check is about (the
        # other may well relay over UDP), so its view is read first.
        views = sorted(((a, mine), (b, theirs)), key=lambda edge_view: edge_view[0].udp)
        turn = next((v["turn"] for _, v in views if v.get("turn")), None)
        if turn:
            result.metrics["transport"] = turn
        if sc.fault is None or sc.kind is Kind.PATH:
            result.check("path", observed == sc.expected_path, sc.expected_path, observed)
        wanted = sc.expect_transports or (
            expectations.turn_transports(*sc.edges) if observed == "relay" else ()
        )
        if observed == "relay" and turn is None and wanted == ("udp",):
            # Neither peer's pair starts at its own relay candidate: each sends from its NAT
            # mapping to the other's relay address (an ADF NAT lets in what comes from the
            # TURN server's address, which its STUN mapping sent to), so no side has a TURN
            # transport of its own to report; UDP is the only one its checks could use.
            result.metrics["transport"] = "udp (to the peer's relay)"
        elif wanted and observed == "relay":
            result.check("TURN transport", turn in wanted, " or ".join(wanted), turn)

    def _figures(self, sender: Client, receiver: Client, payload: Payload) -> None:
        sc, result = self.scenario, self.result
        done = sender.first("done")
        connected = _connected(sender)
        if done is None or not connected:
            return
        seconds = max(done["ts"] - connected[0]["ts"], 1e-3)
        goodput = payload.size * 8 / seconds / 1e6
        result.metrics.update(bytes=payload.size, seconds=round(seconds, 2))
        result.metrics["goodput_mbit"] = round(goodput, 2)
        result.metrics["total_chunks"] = done["chunks"]
        result.metrics["resent_chunks"] = done["chunksSent"] - done["chunks"]
        result.metrics["connections"] = len(connected)
        if sc.link_rate_mbit:
            result.metrics["rate_mbit"] = sc.link_rate_mbit
            result.metrics["ratio"] = round(goodput / sc.link_rate_mbit, 3)
            up = sc.sites[0].uplink
            result.metrics["rtt_ms"] = sum(
                s.uplink.delay_ms + s.downlink.delay_ms for s in sc.sites
            )
            result.metrics["loss_percent"] = up.loss_percent
        if sc.fault is not None and sc.fault.kind is FaultKind.CUT:
            survived = len(connected) == 1
            short = sc.fault.seconds < SHORT_CUT_SECONDS
            result.check(
                "short cut survived in place" if short else "long cut: new peer connection",
                survived == short,
                "1 connection" if short else "2 or more connections",
                f"{len(connected)} connection(s)",
            )
        if sc.fault is not None and self.fault_ended_at is not None:
            recovered = _data_moving_after(receiver, self.fault_ended_at)
            if recovered is not None:  # from the fault's end to the next chunks written
                result.metrics["recover_s"] = round(recovered - self.fault_ended_at, 2)
        if len(self.marks) > 1:
            self._each_recovery(receiver)
        if sc.timeline:
            result.timeline = timeline.build(receiver.events(), self.marks, connected[0]["ts"])
        if sc.fault is not None and sc.fault.kind in _MOVES:
            moved = receiver if sc.receiver.site == sc.fault.site else sender
            reasons = [e.get("reason", "") for e in moved.events() if e["event"] == "reconnecting"]
            sign, what, _ = _MOVES[sc.fault.kind]
            result.check(
                f"the moved peer noticed its {what}",
                any(sign in str(reason) for reason in reasons),
                f"reconnecting: {what}",
                "; ".join(map(str, reasons[:3])) or "no reconnect",
            )
        if sc.fault is not None and (
            sc.fault.kind is FaultKind.TURN_RESTART or sc.fault.kind in _MOVES
        ):
            again = [e["ts"] for e in _connected(receiver)[1:]]
            if again and self.fault_ended_at is not None:
                moving = _data_moving_after(receiver, again[0])
                result.metrics["new_connection_s"] = round(again[0] - self.fault_ended_at, 2)
                if moving is not None:  # the new connection's first data, not what was queued
                    result.metrics["recover_s"] = round(moving - self.fault_ended_at, 2)
            result.check(
                "a new peer connection after the fault",
                len(connected) >= 2,
                "2 or more connections",
                f"{len(connected)} connection(s)",
            )
        if sc.turn_ttl_s is not None and not sc.faults:
            # coturn grants allocations the TTL too; aioice refreshes at 5/6 of it. Past twice
            # the TTL, one connection means the second Refresh, signed with the credential
            # after its expiry, was granted (else the allocation ended at about 11/6 TTL).
            result.metrics["turn_ttl_s"] = sc.turn_ttl_s
            result.check(
                "one relayed connection past twice the credential's TTL",
                seconds > 2 * sc.turn_ttl_s and len(connected) == 1,
                f"> {2 * sc.turn_ttl_s} s, 1 connection",
                f"{seconds:.0f} s, {len(connected)} connection(s)",
            )
        if sc.fault is not None and sc.fault.kind is FaultKind.SIGNAL_RESTART:
            result.check(
                "data channel kept through the signaling restarts",
                len(connected) == 1,
                "1 connection",
                f"{len(connected)} connection(s)",
            )
        if sc.fault is not None and sc.fault.kind is FaultKind.REBIND:
            result.metrics["outcome"] = "survived" if len(connected) == 1 else "resumed"
        if self._paused:
            timeout = min(s.router.mapping_timeout for s in sc.sites)
            paused = float(result.metrics.get("pause_seconds", 0))
            result.metrics["mapping_timeout_s"] = timeout
            result.check(
                "answered after the mapping timeout, the mapping held (one connection)",
                len(connected) == 1 and paused > timeout,
                f"1 connection, pause > {timeout} s",
                f"{len(connected)} connection(s), pause {paused:g} s",
            )
            held = [int(v) for k, v in result.metrics.items() if k.startswith("mapping_least_left")]
            result.check(
                "direct flow in both NATs all along",
                bool(held) and min(held) > 0,
                "> 0 s left at every look",
                f"{min(held, default=-1)} s left at least",
            )

    def _each_recovery(self, receiver: Client) -> None:
        """Each of several faults: from its end to the next new peer connection if one
        followed it (before the next fault), and to data moving again: on that connection if
        there is one (what was in flight when the fault struck does not count), else after
        the fault's end."""
        later = [e["ts"] for e in _connected(receiver)[1:]]
        starts = [mark.start for mark in self.marks[1:]] + [float("inf")]
        for number, (mark, following) in enumerate(zip(self.marks, starts, strict=True), 1):
            name = f"{number}_{mark.kind}"
            again = next((t for t in later if mark.start < t < following), None)
            if again is not None:
                self.result.metrics[f"new_connection_s_{name}"] = round(again - mark.end, 2)
            moving = _data_moving_after(receiver, mark.end if again is None else again)
            if moving is not None:
                self.result.metrics[f"recover_s_{name}"] = round(moving - mark.end, 2)


def _encryption_checks(result: ScenarioResult, pcap: Path, payload: Payload) -> None:
    needles = {
        "file content (marker)": payload.marker,
        "file name": payload.name_token,
        **{f"file size ({k})": v for k, v in capture.size_forms(payload.size).items()},
    }
    found = capture.find(pcap, needles)
    result.metrics["captured_bytes"] = pcap.stat().st_size
    result.check(
        "capture saw the transfer",
        pcap.stat().st_size > payload.size,
        f"> {payload.size} bytes",
        pcap.stat().st_size,
    )
    for name, count in found.items():
        result.check(f"no {name} in clear", count == 0, 0, count)


@contextlib.contextmanager
def _workdir(root: Path, name: str) -> Iterator[Path]:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    yield path


def run_one(scenario: Scenario, root: Path) -> ScenarioResult:
    """Run `scenario`; never raises for what happens inside it (an error is a result)."""
    started = time.monotonic()
    with _workdir(root, scenario.name) as workdir:
        result = ScenarioResult(scenario.name, scenario.kind.value, scenario.description)
        try:
            result = _run(scenario, workdir)
        except Exception as exc:
            result.status = Status.ERROR
            result.error = f"{type(exc).__name__}: {exc}"
        result.duration_s = round(time.monotonic() - started, 2)
        if result.status is Status.PASSED:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            result.logs_dir = str(workdir)
        return result


def _signal_args(scenario: Scenario) -> tuple[str, ...]:
    """The scenario's TURN credential lifetime, if it sets one. A full cut longer than the
    default grace (60 s) runs against a deployment that keeps a dropped peer's place longer, as
    the README advises for roaming users."""
    args: tuple[str, ...] = ()
    if scenario.turn_ttl_s is not None:
        args += ("--turn-ttl-seconds", str(scenario.turn_ttl_s))
    fault = scenario.fault
    if fault is None:
        return args
    if fault.kind is FaultKind.CUT and not fault.udp_only and fault.seconds >= GRACE_DEFAULT_S:
        return (*args, "--grace-seconds", str(fault.seconds + GRACE_DEFAULT_S))
    return args


def _restarts_signaling(scenario: Scenario) -> bool:
    return scenario.fault is not None and scenario.fault.kind is FaultKind.SIGNAL_RESTART


def _run(scenario: Scenario, workdir: Path) -> ScenarioResult:
    with world.build(scenario.sites) as net:
        if scenario.kind is Kind.CALIBRATION:
            result = ScenarioResult(scenario.name, scenario.kind.value, scenario.description)
            site = net.sites[scenario.sender.site]
            result.metrics["mechanism"] = net.mechanism
            with calibration.serving(net.internet):
                calibration.measure(
                    result,
                    net.host(site.spec.name),
                    site.plan.internet,
                    site.spec.uplink,
                    site.spec.downlink,
                )
            return result
        dual = all(site.ipv6 for site in scenario.sites)  # servers on both families too
        with running_servers(
            net.internet,
            workdir,
            ",".join((world.SERVER_IPS[0], *(world.SERVER_IPS6[:1] if dual else ()))),
            turn_ips=(*world.SERVER_IPS, *(world.SERVER_IPS6 if dual else ())),
            tls=True,
            test_allow=EMULATED_INTERNET,
            signal_args=_signal_args(scenario),
            signal_instances=SIGNAL_INSTANCES if _restarts_signaling(scenario) else 1,
            turn_lifetime=scenario.turn_ttl_s,
        ) as servers:
            lab = Lab(net.internet, workdir, servers)
            try:
                if scenario.kind is Kind.DOCTOR:
                    return doctorcheck.run(scenario, net, lab)
                run = ScenarioRun(scenario, net, lab, workdir)
                payload = make_payload(workdir, scenario)
                if scenario.kind is Kind.ENCRYPTION:
                    pcap = workdir / "internet.pcap"
                    with capture.capturing(net.internet, pcap):
                        asyncio.run(run.transfer(payload))
                    _encryption_checks(run.result, pcap, payload)
                    if run.result.status is Status.PASSED:
                        pcap.unlink()
                else:
                    asyncio.run(run.transfer(payload))
                payload.path.unlink()
                return run.result
            finally:
                lab.close()
