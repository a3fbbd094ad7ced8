"""Text from a peer, a server or a client is hostile. `shown()` is the one way such text reaches
a terminal, an error line or a log, the client's (fileshare) and the server's (signaling.logs)
alike: every character that is not printable (C0/C1 controls such as ESC, bidi overrides and
isolates, zero-width and other format characters, line separators, lone surrogates) becomes a
visible escape such as \\x1b or \\u202e, so it can neither move the cursor, recolour or retitle
the terminal, nor reorder what the reader sees, nor forge a log line. Rich markup is a separate
matter: the CLI prints with markup off, so `[link=…]` stays literal text.

JSON events keep the raw string: json.dumps escapes every non-ASCII and control character.
"""

from __future__ import annotations

from typing import Final

ELLIPSIS: Final = "…"


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def shown(text: object, limit: int | None = None) -> str:
    """`text` (anything; str() of it) made safe to print; with `limit`, at most that many
    characters once escaped (an escape is never cut in half), then an ellipsis if any was cut:
    an attacker's control characters cannot make a log line ten times longer.
    str.isprintable() is False exactly for the Unicode categories that can hurt (Cc, Cf, Cs,
    Co, Cn, Zl, Zp, and spaces other than ' ')."""
    raw = str(text)
    cut = limit is not None and len(raw) > limit
    if limit is not None:
        raw = raw[:limit]  # an escape is never shorter than its character: no more is shown
    if raw.isprintable():
        return raw + ELLIPSIS if cut else raw
    pieces, size = [], 0
    for char in raw:
        piece = char if char.isprintable() else _escape(char)
        size += len(piece)
        if limit is not None and size > limit:
            cut = True
            break
        pieces.append(piece)
    return "".join(pieces) + (ELLIPSIS if cut else "")
