"""TURN permissions kept alive under relayed transfers longer than 300 s.

aioice 0.13 (under aiortc) never sends CreatePermission: its first send to a peer binds a
channel (ChannelBind also installs the peer's permission, RFC 8656 section 12), and it binds
again on the first send after `channel_refresh_time`, 500 s by default. A channel lives 600 s,
but a permission 300 s (RFC 8656 sections 9 and 12): a server that ends the permission on time
drops what the peer sends to the relay from 300 s until that rebind, every 500 s, although
the transfer is sending all along. (coturn 4.6.1 gives a permission installed by ChannelBind
the channel's lifetime, so the gap does not show with it: tests/test_turn_refresh.py measures
both, turn/README.md has the figures.)

So every TURN endpoint aioice makes binds its channels again every REFRESH_SECONDS (240 s, a
minute before the permission ends), refreshing the permission with the channel. aiortc
exposes none of this: `install()` wraps `aioice.turn.create_turn_endpoint`, which aioice's
`relayed_candidate` calls through the module. Pinned as fileshare.sctp is: the aioice release
and the source of each function relied on; another aioice must be read again, not patched
blind.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final

import aioice
from aioice import ice, turn

from fileshare import pinned

REFRESH_SECONDS: Final = 240
AIOICE_VERSION: Final = "0.13.0"
# sha256 of inspect.getsource() of what this relies on in AIOICE_VERSION: the endpoint factory
# (passes channel_refresh_time on), the send that rebinds after it, the caller through the module.
PINNED_SOURCES: Final = {
    "create_turn_endpoint": "c84ad1cc7c547570eb869d950bfcc7f108d374c41c06c1f90df2abb5aeee04f9",
    "send_data": "c25f67f43c7dcdb57c16831475ea8437cb0866edf28396c01ee50949896254ab",
    "relayed_candidate": "271e25be8724ce381b2bdfe17c1518f314f3588927b34254f5830f98676dcc25",
}

_installed: int | None = None


class IncompatibleAioice(pinned.IncompatibleDependency):
    """aioice is not the release a layer of ours over it was written for."""


def originals() -> dict[str, Callable[..., Any]]:
    """The functions PINNED_SOURCES names, as aioice has them (unwrapped)."""
    factory = turn.create_turn_endpoint
    return {
        "create_turn_endpoint": getattr(factory, "__wrapped__", factory),
        "send_data": turn.TurnClientMixin.send_data,
        "relayed_candidate": ice.relayed_candidate,
    }


def check(
    version: str,
    functions: dict[str, Callable[..., Any]],
    sources: dict[str, str] = PINNED_SOURCES,
    layer: str = __name__,
) -> None:
    """Raise unless `version` and the source of each of `functions` are the pinned `sources`
    (`layer` is the module that relies on them: fileshare.gathering checks its own)."""
    pinned.check(layer, "aioice", AIOICE_VERSION, version, functions, sources, IncompatibleAioice)


def install(refresh: int = REFRESH_SECONDS) -> None:
    """Make every TURN endpoint aioice creates from now on bind its channels again every
    `refresh` seconds (at most). Idempotent per process."""
    global _installed
    if _installed is not None:
        if _installed != refresh:
            raise RuntimeError(f"fileshare.turnrefresh is installed at {_installed} s")
        return
    found = originals()
    check(aioice.__version__, found)
    original = found["create_turn_endpoint"]

    @functools.wraps(original)
    async def create_turn_endpoint(*args: Any, **kwargs: Any) -> Any:
        asked = kwargs.get("channel_refresh_time", turn.DEFAULT_CHANNEL_REFRESH_TIME)
        return await original(*args, **{**kwargs, "channel_refresh_time": min(asked, refresh)})

    turn.create_turn_endpoint = create_turn_endpoint
    _installed = refresh
