"""Layers that patch or rely on a dependency's private functions are written against one
release: each records that release and the sha256 of every such function's source, and
refuses to run on anything else. A new release must be read again, not patched blind."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any


class IncompatibleDependency(RuntimeError):
    """The installed release, or a function's source in it, is not the one a layer was
    written against."""


def source_digest(function: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def check(
    layer: str,
    package: str,
    written_for: str,
    found: str,
    functions: Mapping[str, Callable[..., Any]],
    pinned: Mapping[str, str],
    error: type[IncompatibleDependency] = IncompatibleDependency,
) -> None:
    """Raise `error` unless `found` is `written_for` and each of `functions` has the source
    digest `pinned` names for it."""
    if found != written_for:
        raise error(f"{layer} was written for {package} {written_for}, found {found}")
    changed = [name for name, digest in pinned.items() if source_digest(functions[name]) != digest]
    if changed:
        raise error(f"{package} {found}'s internals changed underneath: {', '.join(changed)}")
