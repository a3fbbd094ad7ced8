"""Locust users that behave like FileShare clients over WebSocket.

One user drives both peers of a session (two sockets), so relay latency is measured at the
receiving peer against the sender's stamp on one clock, and through a load balancer the partner
is placed on another instance than the creator (seen in haproxy's X-Served-By). On loopback every
simulated client gets its own source address (127.1.x.y honest, 127.2.x.y abusive), as real
clients would: the server's per-address limits then shed the abusers and never the honest users.

Mixes: ChurnUser (many short sessions), HoldUser (many idle connections), AbuseUser (bad tokens,
malformed and oversized messages, message and connection floods: each must be refused with its
own error or close code). Run by `python -m loadtest`, which sets `--tally-json`.

Stopping: at the end of the run locust lets every user finish the task in hand (so an abuse
that was started is judged), ending the hold of a HoldUser early, for at most `--stop-timeout`;
then it kills the users' greenlets (GreenletExit, a BaseException, raised wherever they wait)
and waits for them without a deadline. So a user never swallows it (nothing here catches more
than Exception, see wsclient), and a killed user shuts its sockets without closing handshakes.
SIGUSR1 prints every greenlet's stack (what a run that does not end is waiting for).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent  # type: ignore[import-untyped]
import gevent.util  # type: ignore[import-untyped]
from locust import User, between, constant, events, task
from locust.env import Environment
from locust.runners import STATE_CLEANUP, STATE_STOPPED, STATE_STOPPING
from locust.user.task import LOCUST_STATE_STOPPING

from loadtest import payloads
from loadtest.report import Tally
from loadtest.wsclient import Closed, Peer, Refused, readable
from signaling import schema, sessions

TALLY = Tally()
CLOSE_FLOOD = 1008
CLOSE_TRY_LATER = 1013
PLACEMENT_TRIES = 8  # connections a joining peer may try to land on another instance
_honest_sources = itertools.count()
_abusers = itertools.count()
# A wrong guess is refused as an unknown session, or once its address has failed too many
# joins, before any lookup.
GUESS_REFUSALS = (schema.ErrorCode.SESSION_NOT_FOUND, schema.ErrorCode.JOINS_LIMITED)


def _options(parser: Any) -> None:
    parser.add_argument("--hold-seconds", type=float, default=20.0, help="HoldUser idle time")
    parser.add_argument("--hold-sessions", type=int, default=5, help="sessions per HoldUser")
    parser.add_argument("--tally-json", default="", help="write custom metrics here at exit")
    parser.add_argument("--guesses", type=int, default=3, help="wrong tokens per guess round")
    parser.add_argument("--max-message-bytes", type=int, default=65536, help="the server's")
    parser.add_argument("--conn-flood", type=int, default=600, help="most connections per flood")
    parser.add_argument("--flood-messages", type=int, default=2000, help="most frames per flood")
    parser.add_argument("--abusers", type=int, default=1, help="AbuseUsers (each its own address)")


def _abusers_count(environment: Environment, **_: Any) -> None:
    if environment.parsed_options is not None:
        AbuseUser.fixed_count = environment.parsed_options.abusers


def _write_tally(environment: Environment, **_: Any) -> None:
    path = environment.parsed_options.tally_json if environment.parsed_options else ""
    if path:
        Path(path).write_text(json.dumps(TALLY.to_json(), indent=1))


# Registered by call: a decorator would make the listeners untyped (add_listener is).
events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]
events.init.add_listener(_abusers_count)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_write_tally)  # type: ignore[no-untyped-call]


def _print_greenlets() -> None:
    """SIGUSR1: every greenlet's stack on stderr, to see what a run that does not end waits for."""
    gevent.util.print_run_info(file=sys.stderr)
    sys.stderr.flush()


gevent.signal_handler(signal.SIGUSR1, _print_greenlets)


class StepFailed(Exception):
    """A step failed and was reported; the session is abandoned."""


def _code(exc: BaseException) -> str:
    if isinstance(exc, Refused | Closed):
        return str(exc)
    return type(exc).__name__


class SignalingUser(User):
    abstract = True

    def on_start(self) -> None:
        self.url = self.host or ""
        hostname = urlsplit(self.url).hostname or ""
        self.loopback = hostname == "localhost" or hostname.startswith("127.")
        self.peers: list[Peer] = []

    def on_stop(self) -> None:
        self.abort_all()  # stopped, maybe killed: no closing handshakes, nothing to wait for

    @property
    def stopping(self) -> bool:
        """The run is ending: finish the task in hand without waiting for anything more."""
        runner = self.environment.runner
        return self._state == LOCUST_STATE_STOPPING or (
            runner is not None and runner.state in (STATE_CLEANUP, STATE_STOPPING, STATE_STOPPED)
        )

    @property
    def opts(self) -> Any:
        return self.environment.parsed_options

    # --- reporting ------------------------------------------------------------------------------

    def report(self, name: str, seconds: float, exc: BaseException | None = None) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=seconds * 1000,
            response_length=0,
            exception=exc,
            context={},
        )
        if exc is None:
            TALLY.time(name, seconds)
        else:
            TALLY.failures[f"{name}: {_code(exc)}"] += 1

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as request `name`; a failure is reported and abandons the session."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.report(name, time.perf_counter() - started, exc)
            raise StepFailed(name) from exc
        self.report(name, time.perf_counter() - started)

    # --- peers ----------------------------------------------------------------------------------

    def honest_source(self) -> str | None:
        if not self.loopback:
            return None
        n = next(_honest_sources) % (250 * 250)
        return f"127.1.{n // 250}.{n % 250 + 1}"

    def connect(self, source: str | None, name: str = "connect") -> Peer:
        with self.step(name):
            peer = Peer(self.url, source)
        self.peers.append(peer)
        return peer

    def close(self, *peers: Peer) -> None:
        for peer in peers:
            with contextlib.suppress(Exception):
                peer.close()
            if peer in self.peers:
                self.peers.remove(peer)

    def close_all(self) -> None:
        self.close(*list(self.peers))

    def abort_all(self) -> None:
        for peer in self.peers:
            with contextlib.suppress(Exception):
                peer.abort()
        self.peers.clear()

    def partner(self, creator: Peer) -> Peer:
        """Connect the joining peer, on another instance than the creator when that is seen."""
        for attempt in range(PLACEMENT_TRIES):
            peer = self.connect(self.honest_source())
            if creator.served_by is None or peer.served_by is None:
                TALLY.placement["unknown"] += 1
                return peer
            if peer.served_by != creator.served_by:
                TALLY.placement["cross"] += 1
                return peer
            if attempt == PLACEMENT_TRIES - 1:
                TALLY.placement["same"] += 1
                return peer
            self.close(peer)
        raise AssertionError("unreachable")

    # --- one session ----------------------------------------------------------------------------

    def open_session(self) -> tuple[Peer, Peer]:
        a = self.connect(self.honest_source())
        with self.step("create"):
            created = a.request(schema.CreateSession(v=schema.VERSION))
            assert isinstance(created, schema.SessionCreated)
        b = self.partner(a)
        with self.step("join"):
            b.request(
                schema.JoinSession(
                    v=schema.VERSION, sessionId=created.sessionId, token=created.token
                )
            )
        with self.step("peer_joined"):
            a.expect(schema.PeerJoined)
        self.handshake(a, b)
        return a, b

    def handshake(self, a: Peer, b: Peer) -> None:
        """Offer, answer and trickled candidates both ways, each timed at its receiver."""
        a.relay("offer", payloads.description("offer"))
        self.receive(b)
        b.relay("answer", payloads.description("answer"))
        self.receive(a)
        for sender, receiver in ((a, b), (b, a)):
            batch = payloads.candidates()
            for candidate in batch:
                sender.relay("ice_candidate", candidate)
            for _ in batch:
                self.receive(receiver)

    def receive(self, peer: Peer) -> None:
        started = time.perf_counter()
        try:
            event = peer.expect(schema.Relayed)
        except Exception as exc:
            self.report("relay", time.perf_counter() - started, exc)
            raise StepFailed("relay") from exc
        self.report("relay", payloads.age(event.payload))

    def leave(self, a: Peer, b: Peer) -> None:
        with self.step("leave"):
            a.request(schema.LeaveSession(v=schema.VERSION))
            b.expect(schema.SessionClosed)
        self.close(a, b)

    def hold(self, peers: list[Peer], seconds: float) -> None:
        """Stay idle, answering the server's heartbeat pings; any message is unexpected. Cut
        short when the run ends."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self.stopping:
            ready = readable(peers, min(left, 1.0))
            for peer in ready:
                with self.step("hold"):
                    event = peer.service()
                    if event is not None:
                        raise RuntimeError(f"unexpected {type(event).__name__} while idle")

    def attempt(self, work: Callable[[], None]) -> None:
        """Run one iteration; a reported failure closes its sockets and the user goes on."""
        try:
            work()
        except StepFailed:
            self.close_all()


class ChurnUser(SignalingUser):
    """Many short sessions: set up, hand-shake, leave at once."""

    weight = 6
    wait_time = between(0.05, 0.3)

    @task
    def session(self) -> None:
        def work() -> None:
            self.leave(*self.open_session())

        self.attempt(work)


class HoldUser(SignalingUser):
    """Many idle connections: a few sessions set up, held idle, then left."""

    weight = 3
    wait_time = constant(0.5)

    @task
    def hold_sessions(self) -> None:
        def work() -> None:
            pairs = [self.open_session() for _ in range(self.opts.hold_sessions)]
            self.hold([p for pair in pairs for p in pair], self.opts.hold_seconds)
            for a, b in pairs:
                self.leave(a, b)

        self.attempt(work)


class AbuseUser(SignalingUser):
    """Each round one kind of abuse, from an address of its own; each must be refused with the
    right code (reported as `abuse:<kind>`, a success when refused rightly)."""

    fixed_count = 1
    wait_time = between(0.2, 0.5)
    KINDS = ("bad_token", "guess", "bad_message", "too_large", "flood", "conn_flood")

    def on_start(self) -> None:
        super().on_start()
        self.number = next(_abusers) % 250
        start = self.number % len(self.KINDS)  # several abusers begin with different kinds
        self.kinds = itertools.cycle(self.KINDS[start:] + self.KINDS[:start])

    def connect(self, source: str | None, name: str = "abuse:connect") -> Peer:
        return super().connect(source, name)

    def source(self, kind: str) -> str | None:
        if not self.loopback:
            return None
        return f"127.2.{self.number}.{self.KINDS.index(kind) + 1}"

    def verdict(self, kind: str, got: str, expected: str, seconds: float) -> None:
        if got == expected:
            TALLY.refusals[f"{kind}: {got}"] += 1
            self.report(f"abuse:{kind}", seconds)
        else:
            self.report(f"abuse:{kind}", seconds, RuntimeError(f"expected {expected}, got {got}"))

    @task
    def abuse(self) -> None:
        kind = next(self.kinds)
        started = time.perf_counter()
        try:
            getattr(self, kind)(kind, started)
        except Exception as exc:
            self.report(f"abuse:{kind}", time.perf_counter() - started, exc)
        # Not in a `finally`: a killed user must not do closing handshakes (on_stop aborts).
        self.close_all()

    def refusal(self, peer: Peer, msg: schema.JoinSession) -> str:
        try:
            peer.request(msg)
        except Refused as refused:
            return refused.code
        return "accepted"

    def bad_token(self, kind: str, started: float) -> None:
        peer = self.connect(self.source(kind))
        msg = schema.JoinSession(
            v=schema.VERSION, sessionId=sessions.new_session_id(), token=secrets.token_urlsafe(16)
        )
        code = self.refusal(peer, msg)
        expected = code if code in GUESS_REFUSALS else schema.ErrorCode.SESSION_NOT_FOUND
        self.verdict(kind, code, expected, time.perf_counter() - started)

    def guess(self, kind: str, started: float) -> None:
        """Guess a session's token: refused like an unknown session (or, once the address has
        spent its failed joins, `joins_limited`), and the session survives: the right token,
        from another address, still joins."""
        owner = self.connect(None)
        created = owner.request(schema.CreateSession(v=schema.VERSION))
        assert isinstance(created, schema.SessionCreated)
        guesser = self.connect(self.source(kind))
        for _ in range(self.opts.guesses):
            wrong = schema.JoinSession(
                v=schema.VERSION, sessionId=created.sessionId, token=secrets.token_urlsafe(16)
            )
            code = self.refusal(guesser, wrong)
            if code not in GUESS_REFUSALS:
                self.verdict(kind, code, schema.ErrorCode.SESSION_NOT_FOUND, 0.0)
                return
        right = schema.JoinSession(
            v=schema.VERSION, sessionId=created.sessionId, token=created.token
        )
        joined = self.refusal(self.connect(None), right)
        got = code if joined == "accepted" else f"then the right token got {joined}"
        self.verdict(kind, got, code, time.perf_counter() - started)

    def bad_message(self, kind: str, started: float) -> None:
        peer = self.connect(self.source(kind))
        for frame, expected in (
            (b"{not json", schema.ErrorCode.BAD_JSON),
            (b'{"v":2,"type":"ping"}', schema.ErrorCode.UNSUPPORTED_VERSION),
            (b'{"v":1,"type":"teleport"}', schema.ErrorCode.UNKNOWN_TYPE),
            (b'{"v":1,"type":"offer","payload":[]}', schema.ErrorCode.BAD_MESSAGE),
        ):
            peer.send_raw(frame)
            event = peer.recv()
            got = event.code if isinstance(event, schema.Error) else type(event).__name__
            self.verdict(kind, got, expected, time.perf_counter() - started)

    def too_large(self, kind: str, started: float) -> None:
        peer = self.connect(self.source(kind))
        padding = b"x" * (self.opts.max_message_bytes + 1)
        peer.send_raw(b'{"v":1,"type":"ping","pad":"' + padding + b'"}')
        event = peer.recv()
        got = event.code if isinstance(event, schema.Error) else type(event).__name__
        self.verdict(kind, got, schema.ErrorCode.TOO_LARGE, time.perf_counter() - started)

    def flood(self, kind: str, started: float) -> None:
        """Pings far beyond the message rate: rate_limited replies, then close 1008."""
        peer = self.connect(self.source(kind))
        ping = schema.encode(schema.Ping(v=schema.VERSION))
        limited, close_code = 0, None
        # Lockstep (send one, read its reply) so that when the server closes, no frame of ours
        # is left unread there: that would reset the connection and lose the close code.
        for _ in range(self.opts.flood_messages):
            try:
                peer.send_raw(ping)
                event = peer.recv()
            except Closed as closed:
                close_code = closed.code
                break
            limited += isinstance(event, schema.Error) and event.code == "rate_limited"
        got = f"close {close_code}" if limited else "never rate_limited"
        self.verdict(kind, got, f"close {CLOSE_FLOOD}", time.perf_counter() - started)

    def conn_flood(self, kind: str, started: float) -> None:
        """Connections from one address until the excess is refused (1013): beyond the address's
        connection rate, or, however slowly this client connects, beyond its concurrent
        connections (all are held: 100 an instance by default)."""
        flood: list[Peer] = []
        while len(flood) < self.opts.conn_flood:
            flood.append(self.connect(self.source(kind)))
            if len(flood) % 10 == 0 and readable(flood, 0):
                break  # refusals are coming in (an admitted connection hears nothing)
        refused: list[str] = []
        waiting = list(flood)
        deadline = time.monotonic() + 2.0
        while waiting and (left := deadline - time.monotonic()) > 0:
            ready = readable(waiting, min(left, 0.5))
            if not ready:
                break
            for peer in ready:
                waiting.remove(peer)
                code = "nothing"
                try:
                    event = peer.recv()
                    code = event.code if isinstance(event, schema.Error) else "message"
                    peer.recv()
                except Closed as closed:
                    code = f"{code} then close {closed.code}"
                refused.append(code)
        self.abort_all()  # the refused ones are closed already; the others need no handshake
        expected = f"{schema.ErrorCode.TOO_MANY_CONNECTIONS} then close {CLOSE_TRY_LATER}"
        wrong = [code for code in refused if code != expected]
        got = wrong[0] if wrong else (expected if refused else "none refused")
        self.verdict(kind, got, expected, time.perf_counter() - started)
