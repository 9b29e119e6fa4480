"""The one settings mechanism (foodmesh.core.settings): pure, no servers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from foodmesh.core.settings import (
    ConfigError,
    env_bool,
    env_first,
    env_float,
    env_int,
    env_port,
    env_targets,
    read_at_start,
)


def test_a_blank_number_is_its_default_and_a_blank_flag_is_false() -> None:
    env = {"N": " ", "F": "", "B": ""}
    assert env_int(env, "N", 7) == 7 and env_float(env, "F", 2.5) == 2.5
    assert env_bool(env, "B", True) is False


@pytest.mark.parametrize(
    ("read", "named"),
    [
        (lambda: env_int({"X_PORT": "http"}, "X_PORT", 1), "X_PORT='http' is not valid"),
        (lambda: env_port({"X_PORT": "70000"}, "X_PORT", 1), "X_PORT=70000 is out of range"),
        (lambda: env_float({"X_S": "nan"}, "X_S", 1.0), "X_S=nan is out of range"),
        (lambda: env_float({"X_S": "0"}, "X_S", 1.0, above=True), "expected a number > 0"),
        (lambda: env_float({"X_R": "inf"}, "X_R", 1.0, finite=True), "a finite number >= 0"),
        (lambda: env_bool({"X_ON": "perhaps"}, "X_ON", False), "X_ON='perhaps' is not valid"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_variable(
    read: Callable[[], object], named: str
) -> None:
    with pytest.raises(ConfigError) as err:
        read()
    assert named in err.value.message and "\n" not in err.value.message


def test_the_first_set_variable_wins_and_targets_are_keyed_by_service() -> None:
    env = {"A_HOST": "", "HOST": "0.0.0.0", "A_ORDER_TARGET": "o:1", "A_ETA_TARGET": ""}
    assert env_first(env, ("A_HOST", "HOST"), "127.0.0.1") == "0.0.0.0"
    assert env_first({}, ("A_HOST", "HOST"), "127.0.0.1") == "127.0.0.1"
    assert env_targets(env, "A_") == {"order": "o:1"}


def test_a_start_names_every_refusal_each_on_its_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("FOODMESH_DEV", "FOODMESH_TLS_CA", "FOODMESH_TLS_CERT", "FOODMESH_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)

    def bad() -> int:
        raise ConfigError("X_PORT='http' is not valid: expected an integer")

    assert read_at_start("edge", bad) is None
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "edge: X_PORT='http' is not valid: expected an integer"
    assert len(lines) == 2 and "plaintext gRPC is for dev only" in lines[1]
    monkeypatch.setenv("FOODMESH_DEV", "1")
    assert read_at_start("edge", lambda: 42) == 42
