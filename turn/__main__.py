"""`python -m turn`: run a coturn from TurnSettings (`run`), write its config (`render`), see
that a server answers (`ping`), and check what it grants (`probe`: the credential allocates,
denied peers get 403). Secrets come from FILESHARE_TURN_SECRET or --secret-file, never a flag,
and are never printed."""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import threading
import time
from pathlib import Path

from fsproto import stun
from turn import credentials
from turn.config import TurnSettings, write_config
from turn.launcher import TurnStartError, ping, ready_line, running_turn

# What `probe` asks for by default: coturn must refuse each of them with 403.
PROBE_DENIED = ("127.0.0.1", "::ffff:127.0.0.1", "10.0.0.1", "169.254.169.254")


def parse_server(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def read_secrets(files: list[Path]) -> tuple[str, ...]:
    """Each --secret-file (first: current; more: still accepted), else FILESHARE_TURN_SECRET."""
    found = [f.read_text().strip() for f in files]
    if not found and os.environ.get("FILESHARE_TURN_SECRET"):
        found = [os.environ["FILESHARE_TURN_SECRET"]]
    if not found or not all(found):
        raise SystemExit("no TURN secret: set FILESHARE_TURN_SECRET or --secret-file")
    return tuple(found)


def settings_from(args: argparse.Namespace) -> TurnSettings:
    return TurnSettings(
        listening_ips=tuple(args.listen),
        realm=args.realm,
        secrets=read_secrets(args.secret_file),
        relay_ips=tuple(args.relay),
        external_ips=tuple(args.external_ip),
        port=args.port,
        tls_port=args.tls_port,
        alt_port=args.alt_port,
        server_name=args.server_name,
        cert=args.cert,
        pkey=args.pkey,
        min_port=args.min_port,
        max_port=args.max_port,
        user_quota=args.user_quota,
        total_quota=args.total_quota,
        max_bps=args.max_bps,
        bps_capacity=args.bps_capacity,
        prometheus_port=args.prometheus_port,
        verbose=args.verbose,
        test_allow=tuple(args.test_allow),
    )


def add_settings(parser: argparse.ArgumentParser) -> None:
    d = TurnSettings(("127.0.0.1",), "x", ("x",))
    add = parser.add_argument
    add("--listen", action="append", required=True, help="listening IP (twice for RFC 5780)")
    add("--realm", required=True)
    add("--secret-file", action="append", type=Path, default=[], help="repeat while rotating")
    add("--relay", action="append", default=[], help="relay IP (default: the listening ones)")
    add("--external-ip", action="append", default=[], help="PUBLIC or PUBLIC/PRIVATE (1:1 NAT)")
    add("--port", type=int, default=d.port)
    add("--tls-port", type=int, default=d.tls_port)
    add("--alt-port", type=int, default=d.alt_port)
    add("--server-name", default="", help="DNS name for the URLs and the certificate")
    add("--cert", type=Path)
    add("--pkey", type=Path)
    add("--min-port", type=int, default=d.min_port)
    add("--max-port", type=int, default=d.max_port)
    add("--user-quota", type=int, default=d.user_quota)
    add("--total-quota", type=int, default=d.total_quota)
    add("--max-bps", type=int, default=d.max_bps, help="bytes/s per allocation; 0: unlimited")
    add("--bps-capacity", type=int, default=d.bps_capacity)
    add("--prometheus-port", type=int, default=0, help="needs coturn built with libprom")
    add("--verbose", action="store_true")
    add("--test-allow", action="append", default=[], help="TEST-BEDS ONLY: peer let through")
    add("--workdir", type=Path, required=True, help="config, pidfile, userdb and log go here")


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    prefix = ("ip", "netns", "exec", args.netns) if args.netns else ()
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        with running_turn(settings, args.workdir, prefix) as endpoint:
            print(ready_line(endpoint), flush=True)
            while not stopping.wait(0.5):
                if not Path(f"/proc/{endpoint.pid}").exists():
                    print("turnserver: exited; see " + str(endpoint.log_path), file=sys.stderr)
                    return 1
    except TurnStartError as exc:
        print(f"turnserver: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    print(write_config(settings_from(args), args.workdir))
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    host, port = args.server
    try:
        answer = ping(host, port, args.transport or ["udp"], args.wait)
    except (stun.StunError, OSError) as exc:
        print(json.dumps({"event": "ping", "ok": False, "error": str(exc)}))
        return 1
    mapped, other = answer.address(stun.XOR_MAPPED_ADDRESS), answer.address(stun.OTHER_ADDRESS)
    print(json.dumps({"event": "ping", "ok": True, "mapped": mapped, "other": other}))
    return 0


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.transport != "tls":
        return None
    return ssl.create_default_context(cafile=str(args.ca) if args.ca else None)


def probe_credential(args: argparse.Namespace) -> tuple[str, str]:
    user, password = (
        os.environ.get("FILESHARE_TURN_USERNAME"),
        os.environ.get("FILESHARE_TURN_PASSWORD"),
    )
    if user and password:
        return user, password
    secret = read_secrets(args.secret_file)[0]
    cred = credentials.issue(secret, "probe", 300, time.time())
    return cred.username, cred.password


def _probe_family(
    args: argparse.Namespace, family: int, peers: list[tuple[str, bool]], cred: tuple[str, str]
) -> int:
    """One allocation of `family` and its permission requests; 0 if all went as expected."""
    ok = True
    with stun.Connection(
        args.server, args.transport, args.timeout, _tls_context(args), args.server_name
    ) as conn:
        client = stun.TurnClient(conn)
        try:
            relayed = client.allocate(*cred, family=family)
        except stun.TurnError as exc:
            if exc.code == 440 and family == 6:  # no IPv6 relay: IPv6 peers are unreachable
                _say(step="allocate", family=6, ok=False, code=440, reason="no IPv6 relay")
                return 1 if any(expect_ok for _, expect_ok in peers) else 0
            _say(step="allocate", family=family, ok=False, code=exc.code, reason=exc.reason)
            return 3 if exc.code == 401 else 1
        _say(step="allocate", family=family, ok=True, relayed=f"{relayed[0]}:{relayed[1]}")
        for peer, expect_ok in peers:
            try:
                client.create_permission(peer)
                _say(step="permission", peer=peer, ok=True)
                ok &= expect_ok
            except stun.TurnError as exc:
                _say(step="permission", peer=peer, ok=False, code=exc.code, reason=exc.reason)
                ok &= not expect_ok and exc.code == 403
        client.release()
    return 0 if ok else 1


def _say(**event: object) -> None:
    print(json.dumps(event), flush=True)


def cmd_probe(args: argparse.Namespace) -> int:
    """One JSON line per step; exit 0 if the credential allocates and every peer is treated as
    expected (--deny: 403, --allow: granted), 3 if the credential is refused, 1 otherwise.
    IPv6 peers (::ffff:127.0.0.1 too) are asked for on an IPv6 relay, as coturn only checks a
    peer of the relay's family."""
    cred = probe_credential(args)
    deny = args.deny if args.deny is not None else list(PROBE_DENIED)
    peers = [*((p, False) for p in deny), *((p, True) for p in args.allow)]
    by_family = {4: [p for p in peers if ":" not in p[0]], 6: [p for p in peers if ":" in p[0]]}
    try:
        for family in (4, 6):
            if family == 4 or by_family[6]:
                status = _probe_family(args, family, by_family[family], cred)
                if status:
                    return status
    except (stun.StunError, OSError) as exc:
        _say(step="error", ok=False, error=str(exc))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m turn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="render the config and run coturn in the foreground")
    add_settings(run)
    run.add_argument("--netns", help="run coturn inside this network namespace")
    run.set_defaults(func=cmd_run)

    render = sub.add_parser("render", help="write turnserver.conf into --workdir (mode 0600)")
    add_settings(render)
    render.set_defaults(func=cmd_render)

    ping_p = sub.add_parser("ping", help="wait until a STUN server answers a Binding request")
    ping_p.add_argument("server", type=parse_server, help="HOST:PORT")
    ping_p.add_argument("--transport", action="append", choices=["udp", "tcp", "tls"])
    ping_p.add_argument("--wait", type=float, default=5.0)
    ping_p.set_defaults(func=cmd_ping)

    probe = sub.add_parser("probe", help="allocate with a credential and ask for peers")
    probe.add_argument("server", type=parse_server, help="HOST:PORT")
    probe.add_argument("--transport", choices=["udp", "tcp", "tls"], default="udp")
    probe.add_argument("--deny", action="append", help=f"expect 403 (default: {PROBE_DENIED})")
    probe.add_argument("--allow", action="append", default=[], help="expect a permission")
    probe.add_argument("--secret-file", action="append", type=Path, default=[])
    probe.add_argument("--ca", type=Path, help="CA file for TLS")
    probe.add_argument("--server-name", help="TLS name to check (default: the host)")
    probe.add_argument("--timeout", type=float, default=5.0)
    probe.set_defaults(func=cmd_probe)

    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
