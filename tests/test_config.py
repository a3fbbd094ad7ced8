"""Server settings: defaults, FILESHARE_* variables, flags, and the help that documents them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from signaling.config import ENV_PREFIX, Config, build_parser, load
from signaling.sessions import SessionPolicy

VISIBLE = [f for f in dataclasses.fields(Config) if not f.metadata.get("hidden")]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def test_defaults() -> None:
    config = load([], {})
    assert config.host == "127.0.0.1"
    assert config.port == 8765
    assert config.redis_url == ""
    assert config.max_message_bytes == 65536
    assert config.hard_message_bytes == 262144
    assert config.messages_per_second == 50.0
    assert config.failed_joins_per_minute == 6.0
    assert config.credentials_per_minute == 2.0
    assert config.turn_ttl_seconds == 600
    assert config.grace_seconds == 60.0
    assert config.stun_urls == ()
    assert config.turn_urls == ()
    assert config.trusted_proxies == ()
    assert config.turn_secret == ""
    assert config.log_json is False
    assert config.log_level == "info"
    # Everything but the random instance id equals the dataclass defaults.
    for f in dataclasses.fields(Config):
        if f.name != "instance_id":
            assert getattr(config, f.name) == f.default, f.name


def test_default_instance_id_is_random() -> None:
    first, second = load([], {}), load([], {})
    assert first.instance_id
    assert first.instance_id != second.instance_id
    assert load(["--instance-id", "sig-1"], {}).instance_id == "sig-1"


def test_policy_follows_config() -> None:
    config = load(
        ["--session-idle-seconds", "5", "--failed-joins-per-minute", "7"],
        {"FILESHARE_SESSION_LIFETIME_SECONDS": "50", "FILESHARE_GRACE_SECONDS": "2.5"},
    )
    assert config.policy == SessionPolicy(
        idle_seconds=5.0, lifetime_seconds=50.0, grace_seconds=2.5
    )
    assert config.failed_joins_per_minute == 7.0


def test_env_vars_parse() -> None:
    config = load(
        [],
        {
            "FILESHARE_HOST": "0.0.0.0",
            "FILESHARE_PORT": "9000",
            "FILESHARE_REDIS_URL": "redis://localhost:6379/2",
            "FILESHARE_MESSAGES_PER_SECOND": "12.5",
            "FILESHARE_MAX_SESSIONS_PER_IP": "4",
            "FILESHARE_LOG_JSON": "yes",
            "FILESHARE_LOG_LEVEL": "debug",
            "FILESHARE_STUN_URLS": "stun:a.example:3478",
            "UNRELATED": "ignored",
        },
    )
    assert config.host == "0.0.0.0"
    assert config.port == 9000
    assert isinstance(config.port, int)
    assert config.redis_url == "redis://localhost:6379/2"
    assert config.messages_per_second == 12.5
    assert config.max_sessions_per_ip == 4
    assert config.log_json is True
    assert config.log_level == "debug"
    assert config.stun_urls == ("stun:a.example:3478",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("ON", True), ("0", False), ("no", False), ("", False)],
)
def test_env_bool(text: str, expected: bool) -> None:
    assert load([], {"FILESHARE_LOG_JSON": text}).log_json is expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FILESHARE_PORT", "eighty"),
        ("FILESHARE_GRACE_SECONDS", "soon"),
        ("FILESHARE_LOG_JSON", "maybe"),
    ],
)
def test_bad_env_value_raises(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=value):
        load([], {name: value})


def test_bad_flag_value_exits() -> None:
    with pytest.raises(SystemExit):
        load(["--port", "eighty"], {})


def test_flags_override_env() -> None:
    env = {
        "FILESHARE_PORT": "9000",
        "FILESHARE_HOST": "0.0.0.0",
        "FILESHARE_LOG_JSON": "true",
        "FILESHARE_STUN_URLS": "stun:env.example",
    }
    config = load(["--port", "9001", "--no-log-json", "--stun-urls", "stun:flag.example"], env)
    assert config.port == 9001
    assert config.host == "0.0.0.0"  # not given as a flag: the variable still applies
    assert config.log_json is False
    assert config.stun_urls == ("stun:flag.example",)
    assert load(["--log-json"], {"FILESHARE_LOG_JSON": "0"}).log_json is True


def test_repeatable_flags() -> None:
    config = load(
        [
            "--stun-urls",
            "stun:one.example",
            "--stun-urls",
            "stun:two.example",
            "--trusted-proxies",
            "10.0.0.1",
        ],
        {},
    )
    assert config.stun_urls == ("stun:one.example", "stun:two.example")
    assert config.trusted_proxies == ("10.0.0.1",)


def test_repeatable_env_is_a_comma_list() -> None:
    config = load(
        [],
        {
            "FILESHARE_TURN_URLS": " turn:a.example:3478 ,turns:a.example:5349,, ",
            "FILESHARE_TURN_SECRET": "s3cret",
            "FILESHARE_TRUSTED_PROXIES": "10.0.0.1,10.0.0.2",
            "FILESHARE_STUN_URLS": "",
        },
    )
    assert config.turn_urls == ("turn:a.example:3478", "turns:a.example:5349")
    assert config.trusted_proxies == ("10.0.0.1", "10.0.0.2")
    assert config.stun_urls == ()


def test_turn_urls_flag_twice_with_secret_from_env() -> None:
    config = load(
        ["--turn-urls", "turn:a.example", "--turn-urls", "turns:b.example"],
        {"FILESHARE_TURN_SECRET": "s3cret"},
    )
    assert config.turn_urls == ("turn:a.example", "turns:b.example")
    assert config.turn_secret == "s3cret"


def test_turn_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "turn.secret"
    path.write_text("from-the-file\n")
    config = load(["--turn-urls", "turn:a.example", "--turn-secret-file", str(path)], {})
    assert config.turn_secret == "from-the-file"
    assert config.turn_secret_file == str(path)


def test_turn_secret_file_from_env(tmp_path: Path) -> None:
    path = tmp_path / "turn.secret"
    path.write_text("  env-file-secret  \n")
    config = load(
        [],
        {"FILESHARE_TURN_URLS": "turn:a.example", "FILESHARE_TURN_SECRET_FILE": str(path)},
    )
    assert config.turn_secret == "env-file-secret"


def test_missing_turn_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the TURN secret file"):
        load(["--turn-secret-file", str(tmp_path / "absent")], {})


def test_abbreviated_secret_flag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load(["--turn-secret", "hunter2"], {})
    assert "hunter2" not in capsys.readouterr().out


def test_bad_environment_value_names_its_variable() -> None:
    with pytest.raises(ValueError, match="FILESHARE_PORT"):
        load([], {"FILESHARE_PORT": "eighty"})


def test_turn_secret_stays_out_of_repr() -> None:
    config = load(["--turn-urls", "turn:a.example"], {"FILESHARE_TURN_SECRET": "hunter2-xyz"})
    assert "hunter2-xyz" not in repr(config)


def test_turn_urls_without_secret_raises() -> None:
    with pytest.raises(ValueError, match="TURN secret"):
        load(["--turn-urls", "turn:a.example"], {})
    with pytest.raises(ValueError, match="TURN secret"):
        load([], {"FILESHARE_TURN_URLS": "turn:a.example"})
    with pytest.raises(ValueError, match="TURN secret"):
        Config(turn_urls=("turn:a.example",))


def test_turn_secret_without_urls_is_fine() -> None:
    assert load([], {"FILESHARE_TURN_SECRET": "s"}).turn_secret == "s"


def test_soft_limit_above_hard_limit_raises() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        load(["--max-message-bytes", "1000", "--hard-message-bytes", "999"], {})
    assert load(["--max-message-bytes", "999", "--hard-message-bytes", "999"], {})


def test_config_is_frozen() -> None:
    config = load([], {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def sample(field: dataclasses.Field[object], tmp_path: Path) -> tuple[str, object]:
    """A non-default value for `field`, as text and as the Config value it must become."""
    if field.name == "turn_secret_file":
        path = tmp_path / "secret"
        path.write_text("s")
        return str(path), str(path)
    if field.name == "hard_message_bytes":
        return "70000", 70000
    if field.name == "route_tag":
        return "42", "42"
    if field.metadata.get("repeat"):
        return "x.example", ("x.example",)
    return {
        "str": ("x-value", "x-value"),
        "int": ("7", 7),
        "float": ("7.5", 7.5),
        "bool": ("true", True),
    }[str(field.type)]


@pytest.mark.parametrize("field", VISIBLE, ids=lambda f: f.name)
def test_every_field_has_a_flag_and_variable(
    field: dataclasses.Field[object], tmp_path: Path
) -> None:
    text, value = sample(field, tmp_path)
    base = {"FILESHARE_TURN_SECRET": "s"}
    from_env = load([], {**base, env_name(field.name): text})
    assert getattr(from_env, field.name) == value
    argv = [flag(field.name)] if field.type == "bool" else [flag(field.name), text]
    from_flag = load(argv, base)
    assert getattr(from_flag, field.name) == value
    assert field.metadata["help"]


def test_help_mentions_every_flag_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = " ".join(build_parser().format_help().split())
    for f in VISIBLE:
        assert flag(f.name) in text, f.name
        assert f"[env {env_name(f.name)}]" in text, f.name
    assert "--log-json" in text
    assert "--no-log-json" in text


def test_turn_secret_is_never_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = build_parser().format_help()
    assert re.search(r"--turn-secret(?![-\w])", text) is None
    assert "FILESHARE_TURN_SECRET" in text
    assert "--turn-secret" not in build_parser()._option_string_actions
