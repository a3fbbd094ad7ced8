"""coturn as FileShare runs it: the rendered configuration, the launcher, TURN REST credentials
and the relay's refusal of denied peers, against a real turnserver.

Every coturn with a relay runs in an isolated namespace (only `lo`): a permission it granted by
mistake could not reach anything. A CreatePermission is a request to coturn only; nothing is
ever sent to the peers asked for."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fsproto import stun
from netsim import certs, netns
from tests.conftest import require_binary, require_root
from turn import credentials
from turn.config import (
    DENIED_IPV4,
    DENIED_IPV6,
    TurnSettings,
    denied_peer_ranges,
    render,
    values,
    write_config,
)
from turn.launcher import TurnEndpoint, running_config, running_turn

SECRET = "current-static-auth-secret"
OLD_SECRET = "previous-static-auth-secret"
HOST = netns.HOST_ADDRESS
HOST6 = "2001:db8::10"
SECOND = "198.51.100.11"
TLS_NAME = "turn.fileshare.test"

# Each must get 403 from CreatePermission; the first four are the issue's.
DENIED_PEERS = [
    "127.0.0.1",
    "::ffff:127.0.0.1",
    "10.0.0.1",
    "169.254.169.254",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "100.64.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "198.18.0.1",
    "203.0.113.5",
    "224.0.0.1",
    "255.255.255.255",
    "0.1.2.3",
    "::1",
    "::",
    "fd00::1",
    "fe80::1",
    "ff02::1",
    "64:ff9b::a00:1",
    "2001:db8::99",
    # Finding 9: IPv6 forms that embed or reach a private IPv4 address, and the rest of IANA's
    # IPv6 special-purpose registry.
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "::ffff:0:7f00:1",  # SIIT 127.0.0.1
    "::ffff:0:a9fe:a9fe",  # SIIT 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo (client 127.0.0.1 obfuscated)
    "2001:2::1",  # benchmarking
    "100::1",  # discard-only
    "100:0:0:1::1",  # dummy prefix
    "3fff::1",  # documentation
    "5f00::1",  # SRv6 SIDs
    "fec0::1",  # site-local
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1"]


def settings(**overrides: Any) -> TurnSettings:
    base = TurnSettings(
        listening_ips=(HOST,),
        realm="fileshare.test",
        secrets=(SECRET, OLD_SECRET),
        relay_ips=(HOST, HOST6),
        test_allow=(HOST,),
    )
    return replace(base, **overrides)


# --- configuration ---------------------------------------------------------------------------


def test_config_has_every_directive(tmp_path: Path) -> None:
    config = render(
        settings(
            listening_ips=(HOST, SECOND),
            alt_port=3479,
            cert=Path("/etc/turn/cert.pem"),
            pkey=Path("/etc/turn/key.pem"),
            prometheus_port=9641,
            test_allow=(),
        ),
        tmp_path,
    )
    names = {line.partition("=")[0] for line in config.splitlines() if line[:1].isalpha()}
    assert {
        "use-auth-secret",
        "realm",
        "fingerprint",
        "no-multicast-peers",
        "no-cli",
        "no-software-attribute",
        "no-tcp-relay",
        "no-dtls",
        "simple-log",
        "prometheus",
    } <= names
    assert values(config, "listening-ip") == [HOST, SECOND]
    assert values(config, "relay-ip") == [HOST, HOST6]
    assert values(config, "static-auth-secret") == [SECRET, OLD_SECRET]
    assert values(config, "listening-port") == ["3478"]
    assert values(config, "alt-listening-port") == ["3479"]
    assert values(config, "tls-listening-port") == ["5349"]
    assert values(config, "cert") == ["/etc/turn/cert.pem"]
    assert values(config, "pkey") == ["/etc/turn/key.pem"]
    assert values(config, "log-file") == ["stdout"]
    assert values(config, "pidfile") == [f"{tmp_path}/turnserver.pid"]
    assert values(config, "userdb") == [f"{tmp_path}/turndb"]
    assert values(config, "user-quota") == ["12"]
    assert values(config, "total-quota") == ["2000"]
    assert values(config, "max-bps") == ["3000000"]
    assert values(config, "prometheus-port") == ["9641"]
    assert (values(config, "min-port"), values(config, "max-port")) == (["49152"], ["65535"])
    # Two addresses: RFC 5780 stays on; TLS given: no no-tls; production: no allow list.
    assert not {"no-rfc5780", "no-tls", "allowed-peer-ip", "verbose"} & names


def test_config_without_tls_or_second_address(tmp_path: Path) -> None:
    config = render(settings(), tmp_path)
    names = {line.partition("=")[0] for line in config.splitlines() if line[:1].isalpha()}
    assert {"no-rfc5780", "no-tls"} <= names
    assert not {"cert", "pkey", "tls-listening-port", "prometheus"} & names
    assert values(config, "allowed-peer-ip") == [HOST]


def test_config_file_is_private(tmp_path: Path) -> None:
    path = write_config(settings(), tmp_path / "run")
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    "overrides",
    [
        {"realm": "x\nallow-loopback-peers"},
        {"secrets": ("a\nallow-loopback-peers",)},
        {"secrets": ()},
        {"listening_ips": ()},
        {"listening_ips": (HOST, HOST6)},
        {"listening_ips": ("203.0.113.10", HOST6, "203.0.113.11")},
        {"listening_ips": ("203.0.113.10", "203.0.113.11", "203.0.113.12")},
        {"cert": Path("/c.pem")},
        {"test_allow": ("not-an-ip",)},
        {"min_port": 50000, "max_port": 40000},
    ],
)
def test_settings_refuse_bad_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (several messages)
        settings(**overrides)


def test_dual_stack_listens_and_relays_on_both_families(tmp_path: Path) -> None:
    both = ("203.0.113.10", "203.0.113.11", "2001:db8::10", "2001:db8::11")
    config = render(settings(listening_ips=both, relay_ips=()), tmp_path)
    assert values(config, "listening-ip") == list(both) == values(config, "relay-ip")
    assert "no-rfc5780" not in config


def test_settings_repr_hides_the_secret() -> None:
    assert SECRET not in repr(settings())


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def coturn_461_in_range(low: Address, high: Address, addr: Address) -> bool:
    """coturn 4.6.1's ioa_addr_in_range/addr_less_eq, faithfully: an all-zero bound is no bound,
    another family orders by AF_INET (2) < AF_INET6 (10), IPv6 compares byte by byte."""

    def less_eq(a: Address, b: Address) -> bool:
        if a.version != b.version:
            return a.version < b.version
        if a.version == 4:
            return int(a) <= int(b)
        return all(x <= y for x, y in zip(a.packed, b.packed, strict=True))

    if int(low) == 0 or less_eq(low, addr):
        return int(high) == 0 or less_eq(addr, high)
    return False


def parsed_ranges(config: str) -> list[tuple[Address, Address]]:
    found = []
    for text in values(config, "denied-peer-ip"):
        low, _, high = text.partition("-")
        found.append((ipaddress.ip_address(low), ipaddress.ip_address(high or low)))
    return found


def test_deny_list_is_the_computed_one_and_safe_for_coturn_461(tmp_path: Path) -> None:
    config = render(settings(), tmp_path)
    assert values(config, "denied-peer-ip") == [r for _, r in denied_peer_ranges()]
    ranges = parsed_ranges(config)
    for low, high in ranges:
        # CIDR-aligned (the byte-wise IPv6 compare is right only then), never from :: (deny-all).
        assert len(list(ipaddress.summarize_address_range(low, high))) == 1, (low, high)
        assert not (low.version == 6 and int(low) == 0)
    required = [ipaddress.ip_network(n) for n in (*DENIED_IPV4, *DENIED_IPV6)]
    required += [ipaddress.ip_network(f"::ffff:{n.network_address}/{96 + n.prefixlen}")
                 for n in map(ipaddress.IPv4Network, DENIED_IPV4)]  # fmt: skip
    for net in required:
        first, last = net.network_address, net.broadcast_address
        for block in ipaddress.summarize_address_range(first if int(first) else first + 1, last):
            assert any(
                int(lo) <= int(block.network_address) and int(block.broadcast_address) <= int(hi)
                for lo, hi in ranges
                if lo.version == first.version
            ), net
    for peer in DENIED_PEERS:
        if peer == "::":
            continue  # refused by coturn's own zero-address check, never by a line (see config)
        addr = ipaddress.ip_address(peer)
        assert any(coturn_461_in_range(lo, hi, addr) for lo, hi in ranges)
    for peer in PUBLIC:
        addr = ipaddress.ip_address(peer)
        assert not any(coturn_461_in_range(lo, hi, addr) for lo, hi in ranges), peer


# --- a real coturn ---------------------------------------------------------------------------


def in_ns(namespace: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[Any]]:
    """`python -m turn ARGS` inside the namespace; its exit status and JSON lines."""
    done = subprocess.run(
        [*netns.in_namespace(namespace), sys.executable, "-m", "turn", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, events


@pytest.fixture
def namespace() -> Iterator[str]:
    require_root()
    require_binary("ip")
    require_binary("turnserver")
    with netns.isolated_loopback("turn") as name:
        ip = ["ip", "-n", name, "addr", "add"]
        subprocess.run([*ip, f"{HOST6}/128", "dev", "lo", "nodad"], check=True, timeout=10)
        subprocess.run([*ip, f"{SECOND}/32", "dev", "lo"], check=True, timeout=10)
        yield name


@pytest.fixture
def coturn(namespace: str, tmp_path: Path) -> Iterator[TurnEndpoint]:
    with running_turn(settings(), tmp_path, netns.in_namespace(namespace)) as endpoint:
        yield endpoint


def shown(events: list[Any]) -> str:
    """The probe's events whole, a line each: pytest cuts a list's repr short, and CI once
    failed with the step that went wrong cut out of it."""
    return "\n".join(json.dumps(e) for e in events)


def probe(namespace: str, *args: str, user: str = "", password: str = "") -> tuple[int, list[Any]]:
    env = {"FILESHARE_TURN_USERNAME": user, "FILESHARE_TURN_PASSWORD": password}
    return in_ns(namespace, "probe", f"{HOST}:3478", *args, env=env)


def fresh(secret: str = SECRET, **kw: Any) -> credentials.TurnCredential:
    return credentials.issue(
        secret, kw.get("session", "12345678"), 3600, kw.get("now", time.time())
    )


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET])
def test_valid_credential_allocates(namespace: str, coturn: TurnEndpoint, secret: str) -> None:
    """Both secrets work while a rotation is under way."""
    cred = fresh(secret)
    status, events = probe(
        namespace, "--deny", "10.0.0.1", user=cred.username, password=cred.password
    )
    assert status == 0, shown(events)
    assert events[0]["step"] == "allocate" and events[0]["ok"]
    assert events[0]["relayed"].startswith(f"{HOST}:")


def forged() -> credentials.TurnCredential:
    """Another session id in the username, the password left as it was."""
    good = fresh()
    expiry, _, _ = good.username.partition(":")
    return credentials.TurnCredential(f"{expiry}:87654321", good.password, good.expires_at)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: fresh(now=time.time() - 7200), id="expired"),
        pytest.param(lambda: fresh("not-the-secret"), id="wrong-secret"),
        pytest.param(forged, id="forged-username"),
    ],
)
def test_bad_credentials_are_refused_with_401(
    namespace: str, coturn: TurnEndpoint, make: Any
) -> None:
    cred = make()
    status, events = probe(
        namespace, "--deny", "10.0.0.1", user=cred.username, password=cred.password
    )
    assert status == 3, shown(events)
    assert events == [
        {"step": "allocate", "family": 4, "ok": False, "code": 401, "reason": events[0]["reason"]}
    ]


def test_relay_refuses_denied_peers_and_allows_the_test_bed(
    namespace: str, coturn: TurnEndpoint
) -> None:
    cred = fresh()
    deny = [a for peer in DENIED_PEERS for a in ("--deny", peer)]
    status, events = probe(
        namespace, *deny, "--allow", HOST, user=cred.username, password=cred.password
    )
    assert status == 0, shown(events)
    asked = {e["peer"]: e for e in events if e["step"] == "permission"}
    assert set(asked) == {*DENIED_PEERS, HOST}
    for peer in DENIED_PEERS:
        assert (asked[peer]["ok"], asked[peer]["code"]) == (False, 403), asked[peer]
    assert asked[HOST]["ok"]
    allocations = [e for e in events if e["step"] == "allocate"]
    assert [(a["family"], a["ok"]) for a in allocations] == [(4, True), (6, True)]
    log = coturn.log()
    assert "A peer IP ::ffff:127.0.0.1 denied in the range: ::ffff:127.0.0.0-" in log
    assert SECRET not in log and OLD_SECRET not in log and cred.password not in log


def coturn_version() -> tuple[int, ...]:
    out = subprocess.run(
        [require_binary("turnserver"), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    assert found, out
    return tuple(map(int, found.groups()))


def test_without_the_mapped_rules_this_coturn_would_relay_to_loopback(
    namespace: str, tmp_path: Path
) -> None:
    """The control for CVE-2026-27624: the same config minus the IPv4-mapped lines grants
    ::ffff:127.0.0.1 on coturn < 4.9. A grant is only a permission: nothing is sent."""
    config = write_config(settings(), tmp_path)
    kept = [
        line
        for line in config.read_text().splitlines()
        if not line.startswith("denied-peer-ip=::ffff:")
    ]
    config.write_text("\n".join(kept) + "\n")
    with running_config(config, settings(), tmp_path, netns.in_namespace(namespace)):
        cred = fresh()
        status, events = probe(
            namespace, "--deny", "::ffff:127.0.0.1", user=cred.username, password=cred.password
        )
    asked = next(e for e in events if e["step"] == "permission")
    if coturn_version() < (4, 9, 0):
        assert asked["ok"] and status == 1, events
    else:
        assert asked["code"] == 403 and status == 0, events


def test_rfc5780_only_with_two_addresses(namespace: str, tmp_path: Path) -> None:
    prefix = netns.in_namespace(namespace)
    with running_turn(settings(listening_ips=(HOST, SECOND)), tmp_path / "two", prefix):
        status, events = in_ns(namespace, "ping", f"{HOST}:3478")
        assert status == 0 and events[0]["other"] == [SECOND, 3479], events
    with running_turn(settings(), tmp_path / "one", prefix):
        status, events = in_ns(namespace, "ping", f"{HOST}:3478")
        assert status == 0 and events[0]["other"] is None, events


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    return certs.self_signed(tmp_path, dns=(TLS_NAME,))


def test_tcp_and_tls_listeners_allocate(namespace: str, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = settings(cert=cert, pkey=key, server_name=TLS_NAME)
    with running_turn(tls, tmp_path / "run", netns.in_namespace(namespace)) as endpoint:
        assert endpoint.urls == [
            f"turn:{TLS_NAME}:3478?transport=udp",
            f"turn:{TLS_NAME}:3478?transport=tcp",
            f"turns:{TLS_NAME}:5349?transport=tcp",
        ]
        cred = fresh()
        auth = {"user": cred.username, "password": cred.password}
        status, events = probe(namespace, "--transport", "tcp", "--deny", "10.0.0.1", **auth)
        assert status == 0, shown(events)
        status, events = in_ns(
            namespace,
            "probe",
            f"{HOST}:5349",
            "--transport",
            "tls",
            "--ca",
            str(cert),
            "--server-name",
            TLS_NAME,
            "--deny",
            "10.0.0.1",
            env={
                "FILESHARE_TURN_USERNAME": cred.username,
                "FILESHARE_TURN_PASSWORD": cred.password,
            },
        )
        assert status == 0, shown(events)
        assert events[0]["ok"] and events[1]["code"] == 403


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP right now."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no free port")


def test_launcher_starts_and_stops_cleanly_on_loopback(tmp_path: Path) -> None:
    """No namespace: the in-process readiness check; afterwards nothing is left running or
    listening, and nothing was written outside the work dir."""
    require_binary("turnserver")
    port, relay_port = free_udp_tcp_port(), free_udp_tcp_port()
    local = settings(
        listening_ips=("127.0.0.1",),
        relay_ips=("127.0.0.1",),
        port=port,
        min_port=relay_port,  # relays on loopback only, on one port we saw free
        max_port=relay_port,
        test_allow=(),
    )
    var_log_before = set(Path("/var/log").glob("turn*"))
    with running_turn(local, tmp_path) as endpoint:
        pid = endpoint.pid
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"turnserver")
        assert (tmp_path / "turnserver.pid").read_text().strip() == str(pid)
        with stun.Connection(("127.0.0.1", port), "udp") as conn:
            answer = stun.binding(conn)
            assert answer.address(stun.XOR_MAPPED_ADDRESS) == conn.sock.getsockname()
    assert (
        not Path(f"/proc/{pid}").exists()
        or b"turnserver" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # free again
    assert set(Path("/var/log").glob("turn*")) == var_log_before
    assert SECRET not in endpoint.log()
    assert {p.name for p in tmp_path.iterdir()} <= {
        "turnserver.conf",
        "turnserver.log",
        "turnserver.pid",
        "turndb",
    }


# What an allocation made with a credential may do after the credential expired (run inside the
# namespace): a Refresh and a CreatePermission on it, and a new Allocate with it.
AFTER_EXPIRY = """
import json, struct, sys, time
from fsproto import stun
from turn import credentials
host, secret = sys.argv[1], sys.argv[2]
cred = credentials.issue(secret, "12345678", 2, time.time())
def attempt(step):
    try:
        return {"ok": True, "result": step()}
    except stun.TurnError as exc:
        return {"ok": False, "code": exc.code}
def nonce(client):
    return dict(client.auth)[stun.NONCE]
with stun.Connection((host, 3478), "udp") as conn:
    client = stun.TurnClient(conn)
    client.allocate(cred.username, cred.password)
    first_nonce = nonce(client)
    time.sleep(max(0.0, cred.expires_at - time.time()) + 3.0)
    report = {"past_expiry": round(time.time() - cred.expires_at, 1)}
    report["refresh"] = attempt(lambda: client.refresh(600))
    report["nonce_renewed"] = nonce(client) != first_nonce
    # The same allocation, signed with a fresh credential of the same session (what a client
    # that asked the signaling server for one would hold): RFC 8656 section 7 binds an
    # allocation to the username it was made with.
    fresh = credentials.issue(secret, "12345678", 600, time.time())
    realm = dict(client.auth)[stun.REALM]
    request = stun.Message(stun.REFRESH, stun.REQUEST, attributes=[
        (stun.LIFETIME, struct.pack("!I", 600)), (stun.USERNAME, fresh.username.encode()),
        (stun.REALM, realm), (stun.NONCE, nonce(client))])
    conn.sock.sendall(request.encode(stun.long_term_key(fresh.username, realm.decode(),
                                                        fresh.password)))
    conn.sock.settimeout(3)
    try:
        while (answer := stun.decode(conn.sock.recv(4096))).tid != request.tid:
            pass
        error = answer.error()
        signed = answer.get(stun.MESSAGE_INTEGRITY) is not None
        report["refresh_new_credential"] = {"ok": error is None, "code": error and error.code,
                                            "signed": signed}
    except TimeoutError:
        report["refresh_new_credential"] = "no answer"
    report["refresh_after"] = attempt(lambda: client.refresh(600))
    report["permission"] = attempt(lambda: client.create_permission(host))
    with stun.Connection((host, 3478), "udp") as other:
        report["allocate"] = attempt(lambda: str(stun.TurnClient(other).allocate(
            cred.username, cred.password)))
    with stun.Connection((host, 3478), "udp") as third:
        report["allocate_new_credential"] = attempt(lambda: str(stun.TurnClient(third).allocate(
            fresh.username, fresh.password)))
    client.release()
print(json.dumps(report))
"""


def test_an_allocation_outlives_its_credential(namespace: str, tmp_path: Path) -> None:
    """Measured for issue 15 (turn/README.md), against coturn 4.6.1 whose nonces go stale
    after 2 s: a TURN REST credential's expiry is checked when coturn authenticates an
    Allocate, not on later requests of the allocation it made, even once the nonce went stale
    and the client signed again (438, then the same key). A Refresh signed with a fresh
    credential of the same session is refused (441 Wrong Credentials: an allocation belongs
    to the username it was made with) and does not end the allocation. So an expired
    credential allocates nothing new, an allocation made in time lives on as long as its
    client refreshes it with its first credential, and a fresh credential serves new
    allocations only."""
    config = settings(stale_nonce=2)
    with running_turn(config, tmp_path, netns.in_namespace(namespace)):
        done = subprocess.run(
            [*netns.in_namespace(namespace), sys.executable, "-c", AFTER_EXPIRY, HOST, SECRET],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    print("coturn after a credential's expiry:", report)
    assert report["past_expiry"] >= 2.5
    assert report["refresh"] == {"ok": True, "result": 600}
    assert report["nonce_renewed"]  # the nonce had gone stale: 438, signed again, granted
    assert report["refresh_new_credential"] == {"ok": False, "code": 441, "signed": False}
    assert report["refresh_after"] == {"ok": True, "result": 600}
    assert report["permission"]["ok"]
    assert report["allocate"] == {"ok": False, "code": 401}
    assert report["allocate_new_credential"]["ok"]
