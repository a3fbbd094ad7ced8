"""The user's defaults, so people stop typing `--server`: `config.toml` in the user config dir
(`~/.config/fileshare/config.toml` on Linux; FILESHARE_CONFIG names another file).

    server = "wss://signal.example.org/ws"
    stun = ["stun:stun.example.org:3478"]
    turn = ["turn:turn.example.org:3478?transport=udp"]
    turn_user = "alice"

Precedence: a flag, then its FILESHARE_* variable, then this file, then the built-in default.
The file is read once, at most 64 KiB, and must be a regular file; anything else (bad TOML, an
unknown key, a wrong type, a URL of the wrong scheme) is one clear ConfigError.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Annotated, Final

import msgspec
import platformdirs

from fsproto.untrusted import shown

MAX_BYTES: Final = 64 * 1024
Url = Annotated[str, msgspec.Meta(max_length=2048)]


class ConfigError(Exception):
    """The config file cannot be used; the message names it and says why, in one line."""


class UserConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    server: Annotated[Url, msgspec.Meta(pattern=r"^wss?://")] | None = None
    stun: Annotated[
        list[Annotated[Url, msgspec.Meta(pattern=r"^stuns?:")]], msgspec.Meta(max_length=8)
    ] = msgspec.field(default_factory=list)
    turn: Annotated[
        list[Annotated[Url, msgspec.Meta(pattern=r"^turns?:")]], msgspec.Meta(max_length=8)
    ] = msgspec.field(default_factory=list)
    turn_user: Annotated[str, msgspec.Meta(max_length=256)] | None = None


def config_path() -> Path:
    named = os.environ.get("FILESHARE_CONFIG")
    if named:
        return Path(named)
    return platformdirs.user_config_path("fileshare") / "config.toml"


def parse(data: bytes, where: str = "config.toml") -> UserConfig:
    """The settings in a config file's bytes (sans-I/O, so hostile files are easy to test)."""
    try:
        text = data.decode("utf-8")
        return msgspec.convert(tomllib.loads(text), UserConfig)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {where}: not UTF-8 (byte {exc.start})") from exc
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"config file {where}: {shown(str(exc))}") from exc


def load(path: Path | None = None) -> UserConfig:
    """The user's config, or the defaults when there is no file."""
    path = path or config_path()
    where = shown(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return UserConfig()
    except OSError as exc:
        raise ConfigError(f"config file {where}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"config file {where}: not a regular file")
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(MAX_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"config file {where}: {exc.strerror}") from exc
    if len(data) > MAX_BYTES:
        raise ConfigError(f"config file {where}: larger than {MAX_BYTES // 1024} KiB")
    return parse(data, where)
