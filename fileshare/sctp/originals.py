"""aiortc's RTCSctpTransport functions as they were before `fileshare.sctp.install` put the
layer's in their place, by name: the wrappers (`association`, `streams`) call through to them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ORIGINALS: dict[str, Callable[..., Any]] = {}
