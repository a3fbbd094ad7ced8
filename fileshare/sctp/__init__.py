"""A small layer over aiortc's SCTP association, pinned to the aiortc release it was written
against (see `association` for what it changes and `congestion` for the controllers).

`install()` checks the aiortc version and the exact source of every function it replaces,
and refuses (`IncompatibleAiortc`) if either moved: a new aiortc must be read again, not
patched blind. It is idempotent per process; the controller is chosen once, at install.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import aioice
import aiortc
from aioice.ice import Connection
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcsctptransport import RTCSctpTransport

from fileshare import pinned
from fileshare.sctp import arrival, association, congestion, records, streams
from fileshare.sctp.originals import ORIGINALS

AIORTC_VERSION = "1.16.0"
# sha256 of inspect.getsource() of each RTCSctpTransport function replaced, wrapped or relied
# on (_handle_data calls _send_sack after each packet; _init offers `_inbound_streams_max`,
# which `streams` sets) in AIORTC_VERSION.
PINNED_SOURCES = {
    "__init__": "294b0e510843850977697fc56059d70ae4f55e28ed88f1d66046e69e648d2c31",
    "_mark_received": "2ac68b6a3934ca87cf9d9383d4dd764a8fbef83c9d06f9a0435bedde7df46499",
    "_receive_data_chunk": "790c2bb8cd0f5dd735cb051ac669ccc5749a25965fb19a6aeb740fc861563048",
    "_send_sack": "ac92513522fa60e7f298fd0e5849dd8b9aa9ac969cf840aa653f96c2de690d43",
    "_receive_sack_chunk": "4b35ccf1372cdec8705f378a04de43d9c4ad5675afae09781eddd69ecdb473b1",
    "_transmit": "aa8941d5f8f020e8b4e438e02084533dd78399da498638a013025252e5fe8115",
    "_t3_expired": "0e759bf4b1b2d8c8afa3d656a8f34839c974d0104cb66f895a9a9d266f6499af",
    "_handle_data": "8661b724e20776bbf9af6f68a828cfb952d2deb617d7a9e0f143d641bdae95e2",
    "_send": "f0f8aff63a9a87439230618a25e4e7db919f5001459f06281b4c08724ec395a6",
    "_send_chunk": "eb2f909e3c2ff5cc948062e5eeaee54868455940ea62c6c9162145a4550127e6",
    "_receive_chunk": "830bae988365ba89e183334cec6cd47efd03a10909db903e1805d9aad2a5380d",
    "_get_extensions": "5dd7216e5694cd10862ea571027687652ac38c5394df2ae9630a94ccc377725b",
    "_set_extensions": "62ddbc393a800a4fa10c18030dfca8f2d9ca0b346b11823d04df80c59f609547",
    "_init": "46e38c9bf7095b6d6fb1ef92fed1695ed557f9ea8dd4135e1a254d061b3e0567",
    "_receive_forward_tsn_chunk": "a7b72a09e9c4bb20d2d25dca2563bdeccfb7cb2c35c73009e4a589772c7b7d41",  # noqa: E501
    "_receive_reconfig_param": "f1ff2094dd96fa2f75b8dfab3873840f5067c8125b9c59117401128b43ce24c5",
    "_data_channel_receive": "3df88b4b9c662b3bafeab11951c1efb218c5c8b8d56c1d4e12acf6b1841b6c4b",
}
# What `wire` and `arrival` do in their place or read: the DTLS send `wire` replaces (and the
# state and counters that come with it), the DTLS receive whose 1,500-byte read it completes
# and that `arrival` does in its place, the task that closes the transport when `arrival`
# hands it the end, and aioice's way to the nominated pair.
DTLS = "RTCDtlsTransport"
WIRE_SOURCES = {
    f"{DTLS}._send_data": "ee6cd411dd7f8eda6da0344f01b98f3c24ae9072cd3ef36d0a0acdd7a618eb47",
    f"{DTLS}._write_ssl": "6573c0237063bdf0df41ede543428ea6e669020e86b93e8484bbac9c9730a54a",
    f"{DTLS}._recv_next": "998076720c05aa13faadff2dfa337f6964c171fa6791789a72693e1480c74102",
    f"{DTLS}.__run": "24d63d929a104e16e20d0196590ee21cc41f9d569b134d2779b1d62d876e6815",
    "Connection.sendto": "bf162ec03bdce2cc2b9602cd47a03aa70b15b45383da4d0618090e65179f7e85",
}
ENV = "FILESHARE_CONGESTION"  # reno | bbr | stock (stock: leave aiortc untouched)
DEFAULT: congestion.Kind = "bbr"

_installed: str | None = None


class IncompatibleAiortc(pinned.IncompatibleDependency):
    """aiortc is not the release this layer was written for."""


def wire_functions() -> dict[str, Callable[..., Any]]:
    return {
        "RTCDtlsTransport._send_data": RTCDtlsTransport._send_data,
        "RTCDtlsTransport._write_ssl": RTCDtlsTransport._write_ssl,
        "RTCDtlsTransport._recv_next": RTCDtlsTransport._recv_next,
        "RTCDtlsTransport.__run": RTCDtlsTransport._RTCDtlsTransport__run,  # type: ignore[attr-defined]
        "Connection.sendto": Connection.sendto,
    }


def check(
    version: str,
    functions: dict[str, Callable[..., Any]],
    sources: dict[str, str] = PINNED_SOURCES,
) -> None:
    """Raise unless `version` and the source of each of `functions` are the pinned `sources`."""
    pinned.check(
        "fileshare.sctp", "aiortc", AIORTC_VERSION, version, functions, sources, IncompatibleAiortc
    )


def replacements() -> dict[str, Callable[..., Any]]:
    """Every RTCSctpTransport function the layer puts in place, by name."""
    return {**association.REPLACEMENTS, **streams.REPLACEMENTS}


def install(kind: str | None = None) -> str:
    """Patch RTCSctpTransport with `kind` (default: $FILESHARE_CONGESTION, else bbr)."""
    global _installed
    chosen = kind or os.environ.get(ENV) or DEFAULT
    if chosen not in ("reno", "bbr", "stock"):
        raise ValueError(f"{ENV} must be reno, bbr or stock, not {chosen!r}")
    if _installed is not None:
        if _installed != chosen:
            raise RuntimeError(f"fileshare.sctp is installed as {_installed}, not {chosen}")
        return chosen
    if chosen == "stock":
        _installed = chosen
        return chosen
    originals = {name: getattr(RTCSctpTransport, name) for name in PINNED_SOURCES}
    check(aiortc.__version__, originals)
    check(aiortc.__version__, wire_functions(), WIRE_SOURCES)
    arrival.install(aioice.__version__)
    records.install()
    ORIGINALS.update(originals)
    RTCSctpTransport.__init__ = association.make_init(originals["__init__"], chosen)  # type: ignore[method-assign,arg-type]
    for name, replacement in replacements().items():
        setattr(RTCSctpTransport, name, replacement)
    _installed = chosen
    return chosen
