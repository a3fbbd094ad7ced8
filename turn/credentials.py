"""Short-lived TURN credentials in coturn's `use-auth-secret` (TURN REST API) scheme.

The username is `expiry:sessionId`; the password is base64(HMAC-SHA1(secret, username)). coturn
recomputes the password from the username, so nothing is stored and a credential dies on its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TurnCredential:
    username: str
    password: str
    expires_at: int


def _password(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def issue(secret: str, session_id: str, ttl_seconds: int, now: float) -> TurnCredential:
    expires_at = int(now) + ttl_seconds
    username = f"{expires_at}:{session_id}"
    return TurnCredential(username, _password(secret, username), expires_at)


def expiry_of(username: str) -> int | None:
    """The expiry (Unix time) a TURN REST username starts with; None for another scheme."""
    expiry, sep, _ = username.partition(":")
    if not sep or not (expiry.isascii() and expiry.isdigit()):
        return None
    return int(expiry)


def verify(secret: str, username: str, password: str, now: float) -> bool:
    """What coturn checks: the HMAC matches and the expiry in the username is still ahead."""
    expiry = expiry_of(username)
    if expiry is None or expiry <= now:
        return False
    try:
        expected = _password(secret, username).encode()
        return hmac.compare_digest(expected, password.encode())
    except UnicodeEncodeError:
        return False
