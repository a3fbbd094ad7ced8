"""coturn TURN REST credentials: `expiry:sessionId`, base64(HMAC-SHA1(secret, username))."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turn.credentials import TurnCredential, issue, verify

SECRET = "north-wind-static-auth-secret"
NOW = 1_700_000_000.75


def reference_password(secret: str, username: str) -> str:
    """Independent of the module: what coturn computes for `use-auth-secret`."""
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def test_username_is_expiry_colon_session() -> None:
    cred = issue(SECRET, "12345678", 3600, NOW)
    assert cred.expires_at == 1_700_000_000 + 3600
    assert cred.username == f"{cred.expires_at}:12345678"
    expiry, _, session = cred.username.partition(":")
    assert expiry.isdigit()
    assert session == "12345678"


def test_password_is_base64_hmac_sha1() -> None:
    cred = issue(SECRET, "12345678", 600, NOW)
    assert cred.password == reference_password(SECRET, cred.username)
    assert len(base64.b64decode(cred.password, validate=True)) == 20  # SHA-1 digest size


def test_known_vector() -> None:
    # Computed by hand from the coturn scheme, not by the module.
    mac = hmac.new(b"secret", b"1700003600:abcd", hashlib.sha1).digest()
    expected = base64.b64encode(mac).decode()
    assert issue("secret", "abcd", 3600, 1_700_000_000.0) == TurnCredential(
        "1700003600:abcd", expected, 1_700_003_600
    )


def test_verify_accepts_valid() -> None:
    cred = issue(SECRET, "12345678", 600, NOW)
    assert verify(SECRET, cred.username, cred.password, NOW)
    assert verify(SECRET, cred.username, cred.password, cred.expires_at - 0.001)


def test_verify_rejects_expired() -> None:
    cred = issue(SECRET, "12345678", 600, NOW)
    assert not verify(SECRET, cred.username, cred.password, cred.expires_at)
    assert not verify(SECRET, cred.username, cred.password, cred.expires_at + 86400)


def test_verify_rejects_wrong_secret() -> None:
    cred = issue(SECRET, "12345678", 600, NOW)
    assert not verify("another-secret", cred.username, cred.password, NOW)
    assert not verify(SECRET + " ", cred.username, cred.password, NOW)


def test_verify_rejects_forged_session() -> None:
    cred = issue(SECRET, "12345678", 600, NOW)
    forged = f"{cred.expires_at}:87654321"
    assert not verify(SECRET, forged, cred.password, NOW)


def test_verify_rejects_extended_expiry() -> None:
    cred = issue(SECRET, "12345678", 600, NOW)
    forged = f"{cred.expires_at + 86400}:12345678"
    assert not verify(SECRET, forged, cred.password, NOW)


def test_verify_rejects_wrong_password() -> None:
    cred = issue(SECRET, "12345678", 600, NOW)
    assert not verify(SECRET, cred.username, "", NOW)
    assert not verify(SECRET, cred.username, cred.password[:-2] + "A=", NOW)


@pytest.mark.parametrize(
    "username", ["", "12345678", ":12345678", "abc:12345678", "-5:12345678", " 1:x", "1.5:x"]
)
def test_verify_rejects_malformed_username(username: str) -> None:
    assert not verify(SECRET, username, reference_password(SECRET, username), 0.0)


@pytest.mark.parametrize(
    "expiry",
    ["\u00b2", "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669\u0660\u0661", "\uff19" * 11],
)
def test_verify_rejects_non_ascii_digit_expiry(expiry: str) -> None:
    """coturn reads the expiry with ASCII digits only; other Unicode digits are no expiry."""
    username = f"{expiry}:12345678"
    assert not verify(SECRET, username, reference_password(SECRET, username), 0.0)


@pytest.mark.parametrize("password", ["p\u00e4ssword", "\udc80", "\u00e9" * 28])
def test_verify_rejects_non_ascii_password(password: str) -> None:
    cred = issue(SECRET, "12345678", 600, NOW)
    assert not verify(SECRET, cred.username, password, NOW)


@given(st.text(max_size=40))
def test_verify_never_raises_on_any_password(password: str) -> None:
    cred = issue(SECRET, "12345678", 600, NOW)
    assert verify(SECRET, cred.username, password, NOW) is (password == cred.password)


def test_zero_ttl_is_already_expired() -> None:
    cred = issue(SECRET, "s", 0, 100.0)
    assert not verify(SECRET, cred.username, cred.password, 100.0)


@given(
    st.text(min_size=1, max_size=64),
    st.from_regex(r"[0-9A-Za-z]{4,32}", fullmatch=True),
    st.integers(min_value=1, max_value=10**6),
    st.floats(min_value=0, max_value=4e9),
)
def test_issued_credentials_verify(secret: str, session_id: str, ttl: int, now: float) -> None:
    cred = issue(secret, session_id, ttl, now)
    assert cred.username == f"{int(now) + ttl}:{session_id}"
    assert cred.password == reference_password(secret, cred.username)
    assert verify(secret, cred.username, cred.password, now)
    assert not verify(secret, cred.username, cred.password, cred.expires_at)
    assert not verify(secret + "x", cred.username, cred.password, now)
