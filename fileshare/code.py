"""The share code a person reads out or types: `<session number>-<word>-<word>-<word>`.

The number finds the session on the signaling server; the words are the PAKE secret, which the
server never sees. The link form is the web app's address with the code as its fragment,
`https://host/#48213907-crane-opera-lemon` (`http://` for a plain local server): what the QR code
carries, so a phone opens the page the signaling server serves (web/), which reads the fragment;
the fragment never reaches the server. The CLI takes the link too, and the server from it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

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
        """The web app's page: where the signaling server serves it, beside its `/ws`."""
        parts = urlsplit(server_url)
        scheme = "https" if parts.scheme == "wss" else "http"
        prefix = parts.path.removesuffix("/ws").rstrip("/")
        return f"{scheme}://{parts.netloc}{prefix}/#{self}"


def new_code(session_id: str) -> ShareCode:
    return ShareCode(session_id, tuple(secrets.choice(WORDS) for _ in range(CODE_WORDS)))


_CODE = re.compile(r"^(?P<sid>[0-9]{4,32})[-\s]+(?P<words>[a-z]+(?:[-\s]+[a-z]+)*)$")


def parse_code(text: str) -> ShareCode:
    """Accept what a person types (any case, dashes or spaces) or the link form."""
    text = text.strip()
    server = None
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc or not parts.fragment:
            raise BadCode("a link must look like https://host/#CODE")
        ws_scheme = "wss" if parts.scheme == "https" else "ws"
        server = f"{ws_scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws"
        text = unquote(parts.fragment)
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


def complete(line: str) -> list[str]:
    """The code words the last word of `line` may become (for Tab at the prompt), each with
    the dash that leads to the next word, but the last; nothing for the session number."""
    parts = re.split(r"[-\s]+", line.lower())
    if len(parts) < 2 or len(parts) > CODE_WORDS + 1:
        return []
    ending = "-" if len(parts) <= CODE_WORDS else ""
    return [w + ending for w in WORDS if w.startswith(parts[-1])]
