"""`fileshare send PATH...` and `fileshare receive CODE`: the terminal front of fileshare.app.

Exit codes: 0 done; 1 transfer failed; 2 bad usage or code; 3 authentication failed (wrong code
or tampering); 4 signaling or connection failure; 5 not enough disk space; 130 interrupted.
Errors are one line on stderr (and an `error` event with --json), never a traceback.

Every string that came from a peer or a server (names, reasons, paths derived from names) is
hostile: human output passes it through fsproto.untrusted.shown() and prints with Rich markup
off; JSON events carry it raw, as json.dumps escapes every control and non-ASCII character.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO

from fileshare import config
from fileshare.chunks import CHUNK_SIZE, CHUNK_SIZES
from fileshare.outlet import Outlet
from fileshare.reconnect import DEFAULT_GIVE_UP_SECONDS
from fsproto.untrusted import ELLIPSIS, shown

if TYPE_CHECKING:  # the transfer's modules load aiortc (a second): only send and receive need it
    from fileshare import app
    from fileshare.signal_client import ServerUnreachable
    from fileshare.transfer import Events
    from fsproto import schema

DEFAULT_SERVER: Final = "ws://127.0.0.1:8765/ws"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_NETWORK, EXIT_DISK = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED: Final = 130  # Ctrl-C
EXIT_TERMINATED: Final = 143  # SIGTERM
MESSAGE_CHARS: Final = 1000  # of an error line; a server's or peer's message may be 256 KiB


class JsonEvents:
    """One JSON object per line on stdout, for scripts and CI, written by an Outlet's thread: a
    reader that falls behind (a pipe nobody drains, a terminal paused with Ctrl-S) must not stop
    the event loop, and with it the transfer. While it lags, `progress` lines are coalesced to
    the latest; other lines wait their turn, up to JSON_BOUND bytes: past it the oldest are
    dropped and a `dropped` event says how many. What waits is written before exit."""

    PROGRESS: Final = "progress"
    JSON_BOUND: Final = 1 << 20

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.outlet = Outlet("json-events", self.JSON_BOUND, out.fileno(), self._dropped)
        self.stderr = Outlet("stderr", self.JSON_BOUND, 2, self._lost_logs)  # fd 2: stderr

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "ts": round(time.time(), 3), **fields}) + "\n"
        if event == self.PROGRESS:
            self.outlet.put_latest(functools.partial(self._write, line))
        else:
            self.outlet.put(functools.partial(self._write, line), len(line))

    def close(self) -> None:
        """Write what is pending, then stop the writers."""
        self.outlet.close()
        self.stderr.close()

    async def prompt(self, text: str) -> None:
        """On stderr: stdout stays clean JSON."""
        self.stderr.put(functools.partial(_to_stderr, text, end=""), 0)
        await self.stderr.written()

    def log(self, line: str) -> None:
        self.stderr.put(functools.partial(_to_stderr, line), len(line))

    def _lost_logs(self, lines: int) -> Callable[[], None]:
        return functools.partial(_to_stderr, f"fileshare: {lines} log lines not shown")

    def _write(self, line: str) -> None:
        self.out.write(line)
        self.out.flush()

    def _dropped(self, lines: int) -> Callable[[], None]:
        """The `dropped` event, reporting lines lost while the reader lagged."""
        line = json.dumps({"event": "dropped", "ts": round(time.time(), 3), "lines": lines})
        return functools.partial(self._write, line + "\n")


def _to_stderr(text: str, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


class PrintedEvents:
    """`transfers` without --json prints its own table: no live display (nor Rich's import);
    of the events, only an error is printed."""

    def emit(self, event: str, **fields: Any) -> None:
        if event == "error":
            print(f"fileshare: {shown(fields['message'])}", file=sys.stderr)


class Display(Protocol):
    """What send and receive tell the user through: events, and the prompt of a question."""

    def emit(self, event: str, **fields: Any) -> None: ...

    async def prompt(self, text: str) -> None:
        """Show `text` (no newline) after what was emitted before; return once it is shown."""

    def log(self, line: str) -> None:
        """A log record's line, on stderr."""


def _events(args: argparse.Namespace) -> Display:
    if args.json:
        return JsonEvents()
    from fileshare.display import HumanEvents

    return HumanEvents(show_qr=not getattr(args, "no_qr", True))


def _asker(events: Display) -> Callable[[str], Awaitable[bool]]:
    """A yes/no question, shown before we wait for the answer; neither the showing nor the
    reading happens on the event loop."""

    async def ask(question: str) -> bool:
        await events.prompt(f"{shown(question)} [y/N] ")
        answer = await asyncio.to_thread(sys.stdin.readline)
        return answer.strip().lower() in {"y", "yes"}

    return ask


def _options(args: argparse.Namespace, events: Display) -> app.Options:
    from fileshare import app
    from fileshare.state import default_state_path

    _ask = _asker(events)
    return app.Options(
        server=args.server,
        timeout=args.timeout,
        stall_seconds=args.stall_timeout,
        give_up_after=args.give_up_after,
        chunk_size=getattr(args, "chunk_size", CHUNK_SIZE),
        relay_only=args.relay_only,
        extra_ice_servers=_ice_servers(args),
        ask=_ask if args.verify else None,
        accept=_ask if _asks_to_receive(args) else None,
        state_path=default_state_path(),
    )


def _asks_to_receive(args: argparse.Namespace) -> bool:
    """The receiver is asked before anything is written when someone can answer: stdin is a
    terminal and no --yes. From a script (stdin not a terminal) the transfer is accepted, as
    `--yes` would, so pipelines and the test-bed keep working; the summary is still shown."""
    return args.command == "receive" and not args.yes and sys.stdin.isatty()


def _ice_servers(args: argparse.Namespace) -> list[schema.IceServer]:
    """STUN and TURN servers of the user's own, tried before the signaling server's."""
    from fsproto import schema

    servers = [schema.IceServer(urls=[url]) for url in args.stun]
    if args.turn:
        servers.append(
            schema.IceServer(
                urls=list(args.turn),
                username=args.turn_user,
                credential=os.environ.get("FILESHARE_TURN_PASSWORD", ""),
            )
        )
    return servers


def _fail(events: Events, code: int, kind: str, message: str) -> int:
    """One line: `message` may quote a peer or a server (an abort, an error reply), so it is
    cut to MESSAGE_CHARS and shown() neutralised."""
    if len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS] + ELLIPSIS
    events.emit("error", code=kind[:64], message=message, exit=code)  # prints it, or the event
    return code


def _code(args: argparse.Namespace) -> str:
    """The code from the argument, FILESHARE_CODE, or a prompt (Tab completes its words)."""
    if args.code:
        return str(args.code)
    if os.environ.get("FILESHARE_CODE"):
        return os.environ["FILESHARE_CODE"]
    from fileshare.prompt import ask_code

    return ask_code()


async def _until_stopped(work: Awaitable[Any], terminated: list[bool]) -> None:
    """SIGTERM stops the work as Ctrl-C does (asyncio.run cancels it for SIGINT): the transfer
    tells the peer why and leaves its place resumable, then we exit."""
    from fileshare import app

    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None

    def terminate(signum: int, frame: object) -> None:  # as asyncio.Runner does for SIGINT
        terminated.append(True)
        loop.call_soon_threadsafe(task.cancel, app.TERMINATE)

    signal.signal(signal.SIGTERM, terminate)
    await work


def _run(args: argparse.Namespace) -> int:
    """A send or a receive, each failure mapped to its documented exit code."""
    import aiohttp

    from fileshare import app
    from fileshare.code import BadCode
    from fileshare.crypto import AuthenticationFailed
    from fileshare.ice import RelayUnavailable
    from fileshare.names import UnsafeName
    from fileshare.peer import PeerStopped, SessionEnded
    from fileshare.protocol import TransferError
    from fileshare.reconnect import GaveUp
    from fileshare.signal_client import ConnectionClosed, ServerUnreachable, SignalError
    from fileshare.state import StateDiskFull, StateError

    events = _events(args)
    _setup_logging(DisplayLog(events))
    terminated: list[bool] = []
    try:
        work: Awaitable[Any]
        if args.command == "send":
            work = app.send(args.paths, events, _options(args, events))
        else:
            out = Path(os.path.abspath(args.out))  # resume state is keyed to the absolute --out
            code = _code(args)
            work = app.receive(code, out, args.overwrite, events, _options(args, events))
        asyncio.run(_until_stopped(work, terminated))
    except (KeyboardInterrupt, asyncio.CancelledError):
        stopped = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        return _fail(events, stopped, "interrupted", "terminated" if terminated else "interrupted")
    except app.Interrupted as exc:
        stopped = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        return _fail(events, stopped, exc.code, str(exc))
    except StateDiskFull as exc:
        return _fail(events, EXIT_DISK, exc.code, str(exc))
    except StateError as exc:
        return _fail(events, EXIT_FAILED, "state", str(exc))
    except (BadCode, ValueError, FileNotFoundError, UnsafeName) as exc:
        return _fail(events, EXIT_USAGE, "usage", str(exc))
    except AuthenticationFailed as exc:
        return _fail(events, EXIT_AUTH, "authentication_failed", str(exc))
    except RelayUnavailable as exc:
        return _fail(events, EXIT_NETWORK, exc.code, str(exc))
    except PeerStopped as exc:
        return _fail(events, EXIT_FAILED, exc.code, str(exc))
    except app.Refused as exc:
        return _fail(events, EXIT_AUTH, "not_confirmed", str(exc))
    except app.Declined as exc:
        return _fail(events, EXIT_FAILED, exc.code, str(exc))
    except TransferError as exc:
        status = EXIT_DISK if exc.code in ("disk_full", "disk") else EXIT_FAILED
        return _fail(events, status, exc.code, exc.message)
    except SignalError as exc:
        if exc.code == "session_not_found":  # the code's number is wrong: a bad code
            message = (
                "no such session: check the code (it works once, and only while the sender waits)"
            )
            return _fail(events, EXIT_USAGE, exc.code, message)
        return _fail(events, EXIT_NETWORK, exc.code, exc.message)
    except ServerUnreachable as exc:
        return _fail(events, EXIT_NETWORK, "no_server", _no_server(exc))
    except (
        SessionEnded,
        GaveUp,
        ConnectionClosed,
        ConnectionError,
        TimeoutError,
        aiohttp.ClientError,
        OSError,
    ) as exc:
        return _fail(events, EXIT_NETWORK, "connection", str(exc) or type(exc).__name__)
    except Exception as exc:  # a bug of ours: one line, never a traceback
        return _fail(
            events, EXIT_FAILED, "internal", f"internal error: {type(exc).__name__}: {exc}"
        )
    return EXIT_OK


def _no_server(exc: ServerUnreachable) -> str:
    return (
        f"no signaling server at {shown(exc.url)} ({shown(exc.reason)}): "
        "start one with `fileshare-signal`, or set FILESHARE_SERVER or `server` in "
        f"{shown(str(config.config_path()))}"
    )


def _doctor(args: argparse.Namespace) -> int:
    from fileshare import doctor

    try:
        findings = asyncio.run(doctor.check(args.server, _ice_servers(args)))
    except KeyboardInterrupt:
        print("fileshare: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    verdict = doctor.verdict(findings)
    print(doctor.as_json(findings, verdict) if args.json else doctor.render(findings, verdict))
    return EXIT_OK if verdict.works else EXIT_NETWORK


def _transfers(args: argparse.Namespace) -> int:
    """Names and targets came from peers (through the state database): shown() them. Entries
    whose .part file is gone are forgotten here: nothing is left to resume."""
    from fileshare.state import StateError, TransferStore, default_state_path

    events: Events = JsonEvents() if args.json else PrintedEvents()
    try:
        with TransferStore(default_state_path()) as store:
            if args.remove:
                removed = store.forget(args.remove)
                events.emit("removed", id=removed.ref, name=removed.name, target=removed.target)
                if not args.json:
                    print(f"Removed {removed.ref}: {shown(removed.target)}")
                return EXIT_OK
            records = store.drop_orphans()
    except StateError as exc:
        return _fail(events, EXIT_FAILED, "state", str(exc))
    except KeyError as exc:
        return _fail(events, EXIT_USAGE, "usage", str(exc.args[0]))
    if args.json:
        for r in records:
            events.emit(
                "resumable",
                id=r.ref,
                name=r.name,
                held=r.bitmap.held,
                chunks=r.chunk_count,
                target=r.target,
                out=r.out_dir,
            )
        return EXIT_OK
    if not records:
        print("No unfinished transfers.")
        return EXIT_OK
    print("Unfinished transfers (what arrived is kept; held chunks are not sent again):")
    print(f"{'ID':<8}  {'HELD':>16}  TARGET  (--out DIR)")
    for r in records:
        held = f"{r.bitmap.held}/{r.chunk_count} chunks"
        print(f"{r.ref:<8}  {held:>16}  {shown(r.target)}  (--out {shown(r.out_dir)})")
    print(
        "To resume: the sender sends the same files again, and you run "
        "`fileshare receive CODE --out DIR` with that DIR, from any directory.\n"
        "To forget one and delete its partial file: fileshare transfers --remove ID"
    )
    return EXIT_OK


def _version() -> str:
    try:
        return metadata.version("fileshare")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser(defaults: config.UserConfig | None = None) -> argparse.ArgumentParser:
    """The parser, its defaults taken from the user's config file (flags and FILESHARE_*
    variables win; --stun and --turn replace the file's lists, see `main`). Each command has
    the options it uses: the network's for send, receive and doctor; the transfer's for send
    and receive; `transfers` reads the local state only."""
    defaults = defaults or config.UserConfig()
    parser = argparse.ArgumentParser(
        prog="fileshare",
        description="Send files directly between two machines, end-to-end encrypted.",
        epilog="Environment: FILESHARE_SERVER (signaling URL), FILESHARE_STATE_DIR (resume state), "
        f"FILESHARE_CONFIG (config file; default {config.config_path()}).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"fileshare {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="JSON events on stdout, one a line")
    network = argparse.ArgumentParser(add_help=False, parents=[output])  # where the servers are
    network.add_argument(
        "--server",
        default=os.environ.get("FILESHARE_SERVER") or defaults.server or DEFAULT_SERVER,
        help="signaling server URL (default: %(default)s)",
    )
    network.add_argument(
        "--stun",
        action="append",
        metavar="URL",
        help="a STUN server of your own, e.g. stun:stun.example.org:3478 (repeatable)",
    )
    network.add_argument(
        "--turn",
        action="append",
        metavar="URL",
        help="a TURN server of your own, e.g. turn:turn.example.org:3478"
        "?transport=udp (password in FILESHARE_TURN_PASSWORD)",
    )
    network.add_argument(
        "--turn-user",
        default=os.environ.get("FILESHARE_TURN_USER") or defaults.turn_user,
        help="user name for --turn",
    )
    transfer = argparse.ArgumentParser(add_help=False, parents=[network])
    transfer.add_argument(
        "--verify",
        action="store_true",
        help="ask to confirm the authentication words before transferring",
    )
    transfer.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for each step of connecting (default: 60)",
    )
    transfer.add_argument(
        "--relay-only",
        action="store_true",
        help="use relay (TURN) candidates only, so the peer never learns your addresses",
    )
    transfer.add_argument(
        "--stall-timeout",
        type=float,
        default=float(os.environ.get("FILESHARE_STALL_TIMEOUT", "15")),
        help="seconds of silence after which a link counts as dropped and is rebuilt "
        "(default: %(default)s; FILESHARE_STALL_TIMEOUT)",
    )
    transfer.add_argument(
        "--give-up-after",
        type=float,
        default=float(os.environ.get("FILESHARE_GIVE_UP_AFTER", str(DEFAULT_GIVE_UP_SECONDS))),
        help="seconds the signaling server may stay out of reach (we keep reconnecting) before "
        "the transfer fails (default: %(default)s; FILESHARE_GIVE_UP_AFTER)",
    )
    send = sub.add_parser("send", parents=[transfer], help="send files or directories")
    send.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="a file or a directory to send (directories go whole, with their tree); several "
        "can be given",
    )
    send.add_argument(
        "--no-qr",
        action="store_true",
        help="do not print the QR code (it opens the web app on a phone, with the code)",
    )
    send.add_argument(
        "--chunk-size",
        type=int,
        default=CHUNK_SIZE,
        choices=CHUNK_SIZES,
        metavar="BYTES",
        help="bytes of file data per message, one of "
        + ", ".join(map(str, CHUNK_SIZES))
        + " (16 to 256 KiB messages; default: %(default)s)",
    )
    receive = sub.add_parser("receive", parents=[transfer], help="receive with a code")
    receive.add_argument(
        "code",
        nargs="?",
        help="the code the sender shows, or its link (https://HOST/#CODE); leave it out to be "
        "asked (Tab completes the words) or set FILESHARE_CODE, which keeps it out of the "
        "process list",
    )
    receive.add_argument("--out", default=".", help="directory to save into (default: .)")
    receive.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="receive without asking; without it, on a terminal you see what is offered (names, "
        "count, size) and are asked before anything is written (from a script, whose stdin is "
        "not a terminal, nothing is asked)",
    )
    receive.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing files instead of saving under a new name",
    )
    transfers = sub.add_parser(
        "transfers", parents=[output], help="list unfinished transfers that can resume"
    )
    transfers.add_argument(
        "--remove", metavar="ID", help="forget the transfer with this ID and delete its .part file"
    )
    sub.add_parser(
        "doctor",
        parents=[network],
        help="check the signaling, STUN and TURN servers and this network's NAT, and say "
        "which transfers will work (exit 4 when none can)",
    )
    return parser


class _OneLine(logging.Formatter):
    """Log records (ours and the libraries') as one neutralised line: a message may quote a peer,
    and a traceback is not for users."""

    def format(self, record: logging.LogRecord) -> str:
        return f"fileshare: {record.levelname.lower()}: {shown(record.getMessage(), 500)}"


class DisplayLog(logging.Handler):
    """Log records as lines of the display, which its writer's thread writes: a warning logged
    on the event loop must not wait for a paused terminal either."""

    def __init__(self, display: Display) -> None:
        super().__init__()
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        self.display.log(self.format(record))


def _setup_logging(handler: logging.Handler) -> None:
    handler.setFormatter(_OneLine())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


def main(argv: list[str] | None = None) -> int:
    try:
        defaults = config.load()
    except config.ConfigError as exc:
        print(f"fileshare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser(defaults)
    args = parser.parse_args(argv)
    _setup_logging(logging.StreamHandler(sys.stderr))
    if args.command == "transfers":
        return _transfers(args)
    args.stun = args.stun or list(defaults.stun)  # flags replace the config file's lists
    args.turn = args.turn or list(defaults.turn)
    if args.command == "doctor":
        return _doctor(args)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
