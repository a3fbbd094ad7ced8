"""Text from a peer or a server is hostile. `shown()` is the one way such text reaches a
terminal, an error line or a log: every character that is not printable (C0/C1 controls such as
ESC, bidi overrides and isolates, zero-width and other format characters, line separators, lone
surrogates) becomes a visible escape such as \\x1b or \\u202e, so it can neither move the cursor,
recolour or retitle the terminal, nor reorder what the reader sees. Rich markup is a separate
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
    """`text` (anything; str() of it) made safe to print, cut to `limit` characters of the
    original when given. str.isprintable() is False exactly for the Unicode categories that can
    hurt (Cc, Cf, Cs, Co, Cn, Zl, Zp, and spaces other than ' ')."""
    raw = str(text)
    if limit is not None and len(raw) > limit:
        raw = raw[:limit] + ELLIPSIS
    if raw.isprintable():
        return raw
    return "".join(c if c.isprintable() else _escape(c) for c in raw)
