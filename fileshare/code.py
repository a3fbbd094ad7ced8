"""The share code a person reads out or types: `<session number>-<word>-<word>-<word>`.

The number finds the session on the signaling server; the words are the PAKE secret, which the
server never sees. The link form adds the server: `fileshare://host:port/48213907-crane-opera-lemon`
(`fileshares://` for TLS), which is what the QR code carries.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from fileshare.wordlist import INDEX, WORDS

CODE_WORDS: Final = 3  # 24 bits against one online guess per session, which ends it


class BadCode(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ShareCode:
    session_id: str
    words: tuple[str, ...]
    server: str | None = None  # ws:// or wss:// URL, when the code came as a link

    def __str__(self) -> str:
        return "-".join((self.session_id, *self.words))

    @property
    def secret(self) -> bytes:
        return "-".join(self.words).encode()

    def link(self, server_url: str) -> str:
        parts = urlsplit(server_url)
        scheme = "fileshares" if parts.scheme == "wss" else "fileshare"
        path = parts.path if parts.path not in ("", "/ws") else ""
        return f"{scheme}://{parts.netloc}{path}/{self}"


def new_code(session_id: str) -> ShareCode:
    return ShareCode(session_id, tuple(secrets.choice(WORDS) for _ in range(CODE_WORDS)))


_CODE = re.compile(r"^(?P<sid>[0-9]{4,32})[-\s]+(?P<words>[a-z]+(?:[-\s]+[a-z]+)*)$")


def parse_code(text: str) -> ShareCode:
    """Accept what a person types (any case, dashes or spaces) or the link form."""
    text = text.strip()
    server = None
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("fileshare", "fileshares") or not parts.netloc:
            raise BadCode("a link must look like fileshare://host:port/CODE")
        ws_scheme = "wss" if parts.scheme == "fileshares" else "ws"
        prefix, _, text = parts.path.rpartition("/")
        server = f"{ws_scheme}://{parts.netloc}{prefix or '/ws'}"
    match = _CODE.match(text.lower())
    if match is None:
        raise BadCode("a code looks like 48213907-crane-opera-lemon")
    words = tuple(re.split(r"[-\s]+", match["words"]))
    unknown = [w for w in words if w not in INDEX]
    if unknown:
        raise BadCode(f"not a code word: {unknown[0]!r} (check the spelling)")
    if len(words) != CODE_WORDS:
        raise BadCode(f"a code has {CODE_WORDS} words after the number")
    return ShareCode(match["sid"], words, server)
