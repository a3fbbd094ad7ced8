"""fileshare.turnrefresh: the pin against the aioice it wraps, and against a real coturn whose
channel bindings and permissions are shortened (RFC 8656: 600 s and 300 s), what happens to a
relay that keeps sending past them, with aioice as it is and with the layer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fileshare import turnrefresh
from netsim import netns
from tests.conftest import require_binary, require_root
from tests.pins import assert_aioice_pin
from turn import credentials
from turn.config import TurnSettings
from turn.launcher import TurnEndpoint, running_turn

HOST = netns.HOST_ADDRESS
SECRET = "turn-refresh-secret-0123456789"
SECONDS = 26  # past twice the shortened channel lifetime


def test_the_pin_holds_for_this_aioice_and_refuses_another_release_or_changed_source() -> None:
    assert_aioice_pin(turnrefresh.originals(), turnrefresh.PINNED_SOURCES, "send_data")


def _echoes(namespace: str, coturn: TurnEndpoint, refreshes: list[int]) -> list[list[int]]:
    """tests/turn_echo.py once per entry of `refreshes` (0: aioice as it is), all at once."""
    cred = credentials.issue(SECRET, "12345678", 3600, time.time())
    args = [HOST, str(coturn.port), cred.username, cred.password, str(SECONDS)]
    procs = [
        subprocess.Popen(
            [
                *netns.in_namespace(namespace),
                sys.executable,
                "-m",
                "tests.turn_echo",
                *args,
                str(r),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in refreshes
    ]
    found = []
    for proc in procs:
        out, err = proc.communicate(timeout=SECONDS + 30)
        assert proc.returncode == 0, err[-2000:]
        found.append(json.loads(out)["per_second"])
    return found


@pytest.fixture
def namespace() -> Iterator[str]:
    require_root()
    require_binary("turnserver")
    with netns.isolated_loopback("trf") as name:
        yield name


def _coturn(permission: int, channel: int) -> TurnSettings:
    return TurnSettings(
        listening_ips=(HOST,),
        realm="fileshare.test",
        secrets=(SECRET,),
        relay_ips=(HOST,),
        test_allow=(HOST,),
        permission_lifetime=permission,
        channel_lifetime=channel,
    )


def test_channels_are_bound_again_before_they_and_their_permission_end(
    namespace: str, tmp_path: Path
) -> None:
    """Channels of 12 s, permissions of 6 s. aioice as it is binds again after 500 s: the
    echo stops once the channel ends (about 12 s in). With the layer refreshing every 4 s
    (scaled as 240 s is to 300 s), echoes come back every second of the run."""
    settings = _coturn(permission=6, channel=12)
    with running_turn(settings, tmp_path, netns.in_namespace(namespace)) as coturn:
        stock, layered = _echoes(namespace, coturn, [0, 4])
    print("echoes per second, aioice as it is:", stock, "with the layer:", layered)
    assert all(stock[1:10]) and not any(stock[15:])
    assert all(layered[1:])


def test_coturn_gives_a_channels_permission_the_channels_lifetime(
    namespace: str, tmp_path: Path
) -> None:
    """Measured for turn/README.md: coturn 4.6.1 with permissions of 6 s and channels of the
    default 600 s keeps relaying both ways through a channel bound once, past 6 s (RFC 8656
    would end the permission at 6 s, until a refresh)."""
    settings = _coturn(permission=6, channel=0)
    with running_turn(settings, tmp_path, netns.in_namespace(namespace)) as coturn:
        (stock,) = _echoes(namespace, coturn, [0])
    print("echoes per second, permissions of 6 s, channel of 600 s:", stock)
    assert all(stock[1:])
