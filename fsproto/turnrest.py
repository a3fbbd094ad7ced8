"""The username of a TURN REST API credential (coturn's `use-auth-secret`): `expiry:name`.

Shared because both sides read it: the server mints and verifies credentials (`turn.credentials`),
the client reads the expiry to refresh its credential before it runs out (`fileshare.ice`).
"""

from __future__ import annotations


def expiry_of(username: str) -> int | None:
    """The expiry (Unix time) a TURN REST username starts with; None for another scheme."""
    expiry, sep, _ = username.partition(":")
    if not sep or not (expiry.isascii() and expiry.isdigit()):
        return None
    return int(expiry)
