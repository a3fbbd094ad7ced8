"""`fileshare send PATH...` and `fileshare receive CODE`: the terminal front of fileshare.app.

Exit codes: 0 done; 1 transfer failed; 2 bad usage or code; 3 authentication failed (wrong code
or tampering); 4 signaling or connection failure; 5 not enough disk space; 130 interrupted.
Errors are one line on stderr (and an `error` event with --json), never a traceback.

Every string that came from a peer or a server (names, reasons, paths derived from names) is
hostile: human output passes it through fileshare.untrusted.shown() and prints with Rich markup
off; JSON events carry it raw, as json.dumps escapes every control and non-ASCII character.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Final, TextIO

import aiohttp

from fileshare import app, config
from fileshare.code import BadCode
from fileshare.crypto import AuthenticationFailed
from fileshare.ice import RelayUnavailable
from fileshare.names import UnsafeName, human_size
from fileshare.peer import PeerStopped, SessionEnded
from fileshare.protocol import CHUNK_SIZES, TransferError
from fileshare.reconnect import DEFAULT_GIVE_UP_SECONDS, GaveUp
from fileshare.signal_client import ConnectionClosed, ServerUnreachable, SignalError
from fileshare.state import StateDiskFull, StateError, TransferStore, default_state_path
from fileshare.transfer import CHUNK_SIZE, Events, counts_text
from fileshare.untrusted import ELLIPSIS, shown
from fsproto import schema

DEFAULT_SERVER: Final = "ws://127.0.0.1:8765/ws"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_NETWORK, EXIT_DISK = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED: Final = 130  # Ctrl-C
EXIT_TERMINATED: Final = 143  # SIGTERM
MESSAGE_CHARS: Final = 1000  # of an error line; a server's or peer's message may be 256 KiB


class JsonEvents:
    """One JSON object per line on stdout, for scripts and CI."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out: TextIO | None = out

    def emit(self, event: str, **fields: Any) -> None:
        if self.out is None:
            return
        line = json.dumps({"event": event, "ts": round(time.time(), 3), **fields}) + "\n"
        try:
            self.out.write(line)
            self.out.flush()
        except (BrokenPipeError, ValueError):
            # Whoever read our output stopped (`| head -c1`): that ends the output, not the
            # transfer. Later writes, and the flush at exit, go to /dev/null.
            self.out = None
            _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class HumanEvents:
    """A person's view: the code and QR code, the words to compare, a progress bar. Markup and
    emoji codes are off: `[link=…]` in a peer's file name is printed as the text it is."""

    def __init__(self, show_qr: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.text import Text

        self.console = Console(stderr=True, highlight=False, markup=False, emoji=False)
        self.text = Text
        self.show_qr = show_qr
        self.progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.out = ""  # the receiver's --out, as the offer names it

    def emit(self, event: str, **fields: Any) -> None:
        f: dict[str, Any] = {k: shown(v) if isinstance(v, str) else v for k, v in fields.items()}
        match event:
            case "prepared":
                self.console.print(f"Sending {counts_text(f['files'], f['dirs'], f['bytes'])}")
            case "code":
                self.console.print(self.text.assemble("Code: ", (f["code"], "bold")))
                self.console.print(f"On the other machine: fileshare receive {f['code']}")
                if self.show_qr:
                    import segno

                    qr = segno.make(fields["link"], error="m")
                    with contextlib.redirect_stdout(sys.stderr):
                        qr.terminal(compact=True)
            case "sas":
                self.console.print(
                    self.text.assemble(
                        "Authentication words: ",
                        (f["words"], "bold"),
                        " (the same on both sides, or something is wrong)",
                    )
                )
            case "connected":
                p = {k: shown(v) for k, v in f["path"].items()}  # remote: the peer's candidate
                via = f", TURN over {p['turn']}" if "turn" in p else ""
                self.console.print(
                    f"Connected ({p['local']} -> {p['remote']} over {p['protocol']}{via})"
                )
            case "manifest":
                self.out = fields["out"] + os.sep  # "Saved" lines name files under it
                self.console.print(f"Offered {counts_text(f['files'], f['dirs'], f['bytes'])}:")
                for name in fields["names"]:
                    self.console.print(f"  {shown(name)}")
                if f["more"]:
                    self.console.print(f"  … and {f['more']} more")
            case "peer_paused":
                self.console.print(
                    f"The other side was interrupted; waiting up to {f['seconds']} s "
                    "for it to run the same command again"
                )
            case "reconnecting":
                self.console.print(f"Connection lost, reconnecting… ({f['reason']})")
            case "signaling_restored":
                self.console.print(f"Back on the signaling server after {f['after']} s")
            case "skipped":
                self.console.print(f"Skipped {f['path']}: {f['reason']}")
            case "file" if f["resumed"]:  # the offer listed the names; per file, only news
                self.console.print(
                    f"Resuming {f['name']} ({human_size(f['size'])}): "
                    f"{f['resumed']} of {f['chunks']} chunks held"
                )
            case "saved":
                path = fields["path"]
                self.console.print(f"Saved {shown(path.removeprefix(self.out))}")
            case "file_failed":
                self.console.print(
                    self.text.assemble(("Failed", "red"), f" {f['name']}: {f['reason']}")
                )
            case "progress":
                if self.task is None:
                    self.progress.start()
                    self.task = self.progress.add_task("transfer", total=f["total"] or None)
                self.progress.update(self.task, completed=f["done"], total=f["total"] or None)
            case "done":
                if self.task is not None:
                    self.progress.stop()
                self.console.print(f"Done: {counts_text(f['files'], f['dirs'], f['bytes'])}")


def _events(args: argparse.Namespace) -> Events:
    return JsonEvents() if args.json else HumanEvents(show_qr=not args.no_qr)


async def _ask(question: str) -> bool:
    """The question goes to stderr, so stdout stays clean JSON with --json."""
    print(f"{shown(question)} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = await asyncio.to_thread(sys.stdin.readline)
    return answer.strip().lower() in {"y", "yes"}


def _options(args: argparse.Namespace) -> app.Options:
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
    events.emit("error", code=kind[:64], message=message, exit=code)
    if not isinstance(events, JsonEvents):
        print(f"fileshare: {shown(message)}", file=sys.stderr)
    return code


def _code(args: argparse.Namespace) -> str:
    """The code from the argument, FILESHARE_CODE, or a prompt (not echoed to the history)."""
    if args.code:
        return str(args.code)
    if os.environ.get("FILESHARE_CODE"):
        return os.environ["FILESHARE_CODE"]
    if not sys.stdin.isatty():
        return sys.stdin.readline().strip()
    print("Code: ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip()


async def _until_stopped(work: Awaitable[Any], terminated: list[bool]) -> None:
    """SIGTERM stops the work as Ctrl-C does (asyncio.run cancels it for SIGINT): the transfer
    tells the peer why and leaves its place resumable, then we exit."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None

    def terminate(signum: int, frame: object) -> None:  # as asyncio.Runner does for SIGINT
        terminated.append(True)
        loop.call_soon_threadsafe(task.cancel, app.TERMINATE)

    signal.signal(signal.SIGTERM, terminate)
    await work


def _run(args: argparse.Namespace) -> int:
    events = _events(args)
    terminated: list[bool] = []
    try:
        work: Awaitable[Any]
        if args.command == "send":
            work = app.send(args.paths, events, _options(args))
        else:
            out = Path(os.path.abspath(args.out))  # resume state is keyed to the absolute --out
            code = _code(args)
            work = app.receive(code, out, args.overwrite, events, _options(args))
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
        message = (
            ("no such session: check the code (it works once, and only while the sender waits)")
            if exc.code == "session_not_found"
            else exc.message
        )
        return _fail(events, EXIT_NETWORK, exc.code, message)
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
    events: Events = JsonEvents() if args.json else HumanEvents(show_qr=False)
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


def build_parser(defaults: config.UserConfig | None = None) -> argparse.ArgumentParser:
    """The parser, its defaults taken from the user's config file (flags and FILESHARE_*
    variables win; --stun and --turn replace the file's lists, see `main`)."""
    defaults = defaults or config.UserConfig()
    parser = argparse.ArgumentParser(
        prog="fileshare",
        description="Send files directly between two machines, end-to-end encrypted.",
        epilog="Environment: FILESHARE_SERVER (signaling URL), FILESHARE_STATE_DIR (resume state), "
        f"FILESHARE_CONFIG (config file; default {config.config_path()}).",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    network = argparse.ArgumentParser(add_help=False)  # where the servers are
    network.add_argument(
        "--server",
        default=os.environ.get("FILESHARE_SERVER") or defaults.server or DEFAULT_SERVER,
        help="signaling server URL (default: %(default)s)",
    )
    network.add_argument("--json", action="store_true", help="JSON on stdout")
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
    common = argparse.ArgumentParser(add_help=False, parents=[network])
    common.add_argument(
        "--verify",
        action="store_true",
        help="ask to confirm the authentication words before transferring",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for each step of connecting (default: 60)",
    )
    common.add_argument("--no-qr", action="store_true", help="do not print a QR code")
    common.add_argument(
        "--relay-only",
        action="store_true",
        help="use relay (TURN) candidates only, so the peer never learns your addresses",
    )
    common.add_argument(
        "--stall-timeout",
        type=float,
        default=float(os.environ.get("FILESHARE_STALL_TIMEOUT", "15")),
        help="seconds of silence after which a link counts as dropped and is rebuilt "
        "(default: %(default)s; FILESHARE_STALL_TIMEOUT)",
    )
    common.add_argument(
        "--give-up-after",
        type=float,
        default=float(os.environ.get("FILESHARE_GIVE_UP_AFTER", str(DEFAULT_GIVE_UP_SECONDS))),
        help="seconds the signaling server may stay out of reach (we keep reconnecting) before "
        "the transfer fails (default: %(default)s; FILESHARE_GIVE_UP_AFTER)",
    )
    send = sub.add_parser("send", parents=[common], help="send files or directories")
    send.add_argument("paths", nargs="+", type=Path, metavar="PATH")
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
    receive = sub.add_parser("receive", parents=[common], help="receive with a code")
    receive.add_argument(
        "code",
        nargs="?",
        help="the code the sender shows, or its fileshare:// link; leave it out to be asked "
        "(or set FILESHARE_CODE), which keeps it out of the process list",
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
        "transfers", parents=[common], help="list unfinished transfers that can resume"
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


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
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
    args.stun = args.stun or list(defaults.stun)  # flags replace the config file's lists
    args.turn = args.turn or list(defaults.turn)
    _setup_logging()
    if args.command == "transfers":
        return _transfers(args)
    if args.command == "doctor":
        return _doctor(args)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
