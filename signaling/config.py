"""Server settings: one declaration gives each flag, FILESHARE_* variable, default and help."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from signaling.sessions import MAX_SESSION_ID_DIGITS, MIN_SESSION_ID_DIGITS, SessionPolicy

ENV_PREFIX = "FILESHARE_"
ROUTE_TAG: Final = re.compile(r"[1-9][0-9]{0,3}")


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Config:
    host: str = _opt(
        "127.0.0.1",
        "address to listen on (0.0.0.0 behind a firewall or TLS front); several, comma-separated"
        " (e.g. an IPv4 and an IPv6 one), share one port",
    )
    port: int = _opt(8765, "TCP port to listen on (0 picks a free one and logs it)")
    redis_url: str = _opt(
        "",
        "redis://host:port/db, unix:///path.sock, or redis+sentinel://s1:26379,s2:26379/service/db"
        " (the primary found through Sentinel, followed across failovers); empty keeps sessions"
        " in this process",
    )
    instance_id: str = _opt("", "name of this instance among several (default: random)")
    max_message_bytes: int = _opt(65536, "largest client message answered with too_large")
    hard_message_bytes: int = _opt(262144, "larger messages close the connection (code 1009)")
    messages_per_second: float = _opt(50.0, "sustained client messages per second per connection")
    message_burst: float = _opt(200.0, "messages a connection may send at once before limiting")
    flood_close_after: int = _opt(500, "rate-limited messages after which a connection is closed")
    connections_per_second: float = _opt(10.0, "new connections per second per client address")
    connection_burst: float = _opt(40.0, "new connections a client address may open at once")
    max_connections_per_ip: int = _opt(
        20, "concurrent connections per client address, upgraded or not (over it: HTTP 429)"
    )
    bytes_per_second: int = _opt(
        262144, "bytes per second read from one connection; over it, reading waits (backpressure)"
    )
    byte_burst: int = _opt(524288, "bytes a connection may send at once before reading waits")
    address_bytes_per_second: int = _opt(
        1048576, "bytes per second read from all connections of one client address, together"
    )
    address_byte_burst: int = _opt(
        2097152, "bytes one client address may send at once before reading its connections waits"
    )
    max_sessions_per_ip: int = _opt(50, "live sessions one client address may have created")
    failed_joins_per_minute: float = _opt(
        6.0, "refused joins and rejoins per minute per client address (IPv6: per /64)"
    )
    failed_join_burst: float = _opt(10.0, "refused joins an address may make at once")
    session_digits: int = _opt(
        8,
        "digits of a session's number (6-12): one more for each tenfold of code sessions "
        "waiting at once; 8 keeps a scanner at about one hit a day per address at 10,000 "
        "(README: Threat model and limits)",
    )
    route_tag: str = _opt(
        "",
        "digits (1-4, no leading 0) this instance's session numbers begin with, so that the front"
        " sends a joiner (/ws?s=<number>) to the creator's instance; a different tag of one"
        " length for every instance of a deployment; empty: none",
    )
    credentials_per_minute: float = _opt(
        2.0, "TURN credentials minted per minute per client address (IPv6: per /64)"
    )
    credential_burst: float = _opt(10.0, "TURN credentials an address may get at once")
    session_idle_seconds: float = _opt(1800.0, "a session with no activity for this long ends")
    session_lifetime_seconds: float = _opt(
        86400.0, "a session whose second peer has not joined ends after this"
    )
    session_max_seconds: float = _opt(
        3 * 86400.0,
        "hard limit on a session whose peers have met (a transfer in progress keeps it alive)",
    )
    grace_seconds: float = _opt(60.0, "how long a dropped peer may take to rejoin its session")
    heartbeat_seconds: float = _opt(20.0, "ping interval; a client that misses a pong is dropped")
    send_queue_bytes: int = _opt(
        262144, "bytes queued for a slow client before it is dropped (code 1013)"
    )
    inbox_bytes: int = _opt(
        131072, "bytes of a client's messages awaiting handling before its socket is not read"
    )
    max_fragments: int = _opt(64, "frames one message may be cut into (more: code 1008)")
    frames_per_second: float = _opt(200.0, "sustained WebSocket frames per second per connection")
    frame_burst: float = _opt(1000.0, "frames a connection may send at once (more: code 1008)")
    control_frames_per_second: float = _opt(
        1.0, "sustained pings and pongs per second from a client"
    )
    control_frame_burst: float = _opt(10.0, "pings and pongs a client may send at once")
    head_timeout_seconds: float = _opt(
        5.0, "every request head (WebSocket or HTTP) must arrive, and HTTP be answered, in this"
    )
    max_handshakes: int = _opt(1024, "request heads being read at once, all addresses (over: 503)")
    allowed_origins: tuple[str, ...] = _opt(
        (),
        "Origin a browser's upgrade may carry (repeatable; none: any; no Origin: always allowed)",
        repeat=True,
    )
    drain_seconds: float = _opt(10.0, "on SIGTERM, how long to let clients' frames drain")
    stun_urls: tuple[str, ...] = _opt((), "STUN URL handed to clients (repeatable)", repeat=True)
    turn_urls: tuple[str, ...] = _opt(
        (), "TURN URL handed to clients with credentials (repeatable)", repeat=True
    )
    turn_secret_file: str = _opt(
        "", "file holding coturn's static-auth-secret (or set FILESHARE_TURN_SECRET)"
    )
    turn_ttl_seconds: int = _opt(
        600, "longest lifetime of a TURN credential (never past its session's); clients refresh"
    )
    trusted_proxies: tuple[str, ...] = _opt(
        (), "address of a proxy whose X-Forwarded-For is believed (repeatable)", repeat=True
    )
    log_json: bool = _opt(False, "write logs as JSON lines")
    log_level: str = _opt("info", "debug, info, warning or error")
    log_lines_per_second: float = _opt(20.0, "log lines per second, beyond a burst of 200")
    turn_secret: str = field(default="", repr=False, metadata={"hidden": True})

    def __post_init__(self) -> None:
        if not MIN_SESSION_ID_DIGITS <= self.session_digits <= MAX_SESSION_ID_DIGITS:
            raise ValueError(
                f"session_digits: {MIN_SESSION_ID_DIGITS} to {MAX_SESSION_ID_DIGITS} digits"
            )
        if self.route_tag and not ROUTE_TAG.fullmatch(self.route_tag):
            raise ValueError("route_tag: 1 to 4 digits, not beginning with 0")
        if not self.instance_id:
            object.__setattr__(self, "instance_id", secrets.token_hex(4))
        if self.turn_urls and not self.turn_secret:
            raise ValueError("turn URLs are set but no TURN secret (turn_secret_file)")
        if self.max_message_bytes > self.hard_message_bytes:
            raise ValueError("max_message_bytes must not exceed hard_message_bytes")
        if min(self.bytes_per_second, self.address_bytes_per_second) <= 0:
            raise ValueError("bytes_per_second and address_bytes_per_second must be positive")

    @property
    def policy(self) -> SessionPolicy:
        return SessionPolicy(
            idle_seconds=self.session_idle_seconds,
            lifetime_seconds=self.session_lifetime_seconds,
            max_seconds=self.session_max_seconds,
            grace_seconds=self.grace_seconds,
        )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _parse_bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fileshare-signal",
        allow_abbrev=False,  # `--turn-secret X` must not pass for `--turn-secret-file X`
        description="FileShare signaling server: pairs two peers, relays their WebRTC handshake.",
        epilog="Every option can also be set as FILESHARE_<OPTION> (e.g. FILESHARE_REDIS_URL); "
        "repeatable options take a comma-separated list there. Flags win over variables. "
        "The TURN secret is read from FILESHARE_TURN_SECRET or --turn-secret-file, never a flag, "
        "so it stays out of the process list.",
    )
    for f in dataclasses.fields(Config):
        if f.metadata.get("hidden"):
            continue
        env = _env_name(f.name)
        help_text = f"{f.metadata['help']} [env {env}]"
        if f.type == "bool":
            parser.add_argument(
                _flag(f.name), action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif f.metadata.get("repeat"):
            parser.add_argument(_flag(f.name), action="append", default=None, help=help_text)
        else:
            shown = f" (default: {f.default})" if f.default != "" else ""
            parser.add_argument(
                _flag(f.name), type=_TYPES[f.type], default=None, help=help_text + shown
            )
    return parser


_TYPES: dict[object, Any] = {"str": str, "int": int, "float": float}


def load(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Defaults, then FILESHARE_* variables, then flags."""
    env = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if f.metadata.get("hidden"):
            continue
        flag_value = args.get(f.name)
        env_value = env.get(_env_name(f.name))
        if flag_value is not None:
            values[f.name] = tuple(flag_value) if f.metadata.get("repeat") else flag_value
        elif env_value is not None:
            values[f.name] = _from_env(f, env_value)
    values["turn_secret"] = _turn_secret(values.get("turn_secret_file", ""), env)
    return Config(**values)


def _from_env(f: dataclasses.Field[Any], text: str) -> Any:
    if f.metadata.get("repeat"):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    try:
        return _parse_bool(text) if f.type == "bool" else _TYPES[f.type](text)
    except ValueError:
        raise ValueError(f"{_env_name(f.name)}: not a valid {f.type}: {text!r}") from None


def _turn_secret(path: str, env: os._Environ[str] | dict[str, str]) -> str:
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the TURN secret file: {exc.strerror}") from None
    return env.get(ENV_PREFIX + "TURN_SECRET", "").strip()
