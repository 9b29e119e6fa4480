"""Issue 17 item 2: no process starts on the public dev secret unless dev mode is explicit."""

from __future__ import annotations

import subprocess

import pytest

from foodmesh.core.auth import DEV_SECRET, AuthConfigError, auth_settings
from foodmesh.core.errors import ConfigError
from foodmesh.infra import RunningInfra
from servers.runtime.config import Settings
from tests.security._identity import REAL_SECRET, base_env, read_until, start, stop

#: Servers' URLs that nothing answers at: a process that does start waits on them.
_NOWHERE = {
    "FOODMESH_POSTGRES_URL": "postgresql://u@127.0.0.1:9/db",
    "FOODMESH_REDIS_URL": "redis://127.0.0.1:9",
    "FOODMESH_NATS_URL": "nats://127.0.0.1:9",
    "FOODMESH_STARTUP_TIMEOUT_S": "120",
    "FOODMESH_GATEWAY_PORT": "0",
    "FOODMESH_DASHBOARD_PORT": "0",
    "FOODMESH_ORDER_PORT": "0",
    "FOODMESH_ORDER_METRICS_PORT": "0",
}
_BAD = [
    pytest.param({}, id="unset"),
    pytest.param({"FOODMESH_AUTH_SECRET": ""}, id="empty"),
    pytest.param({"FOODMESH_AUTH_SECRET": "short-secret"}, id="short"),
    pytest.param({"FOODMESH_AUTH_SECRET": DEV_SECRET}, id="the-dev-secret"),
]


@pytest.mark.parametrize("process", ["order", "gateway", "dashboard"])
@pytest.mark.parametrize("secret", _BAD)
def test_a_process_without_a_real_secret_exits_1_naming_it(
    process: str, secret: dict[str, str]
) -> None:
    proc = start(["serve", process], base_env(**_NOWHERE, **secret))
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail(f"{process} started without a real FOODMESH_AUTH_SECRET")
    assert proc.returncode == 1, out
    problem = [line for line in out.splitlines() if "FOODMESH_AUTH_SECRET" in line]
    assert len(problem) == 1 and "Traceback" not in out, out


def test_jwks_mode_without_an_issuer_does_not_start() -> None:
    env = base_env(**_NOWHERE, FOODMESH_AUTH_SECRET=REAL_SECRET,
                   FOODMESH_AUTH_JWKS_URL="https://id.example/jwks")  # fmt: skip
    proc = start(["serve", "gateway"], env)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail("the gateway started in JWKS mode without FOODMESH_AUTH_ISSUER")
    assert proc.returncode == 1 and "FOODMESH_AUTH_ISSUER" in out, out


def test_explicit_dev_mode_starts_and_says_so_loudly(infra: RunningInfra) -> None:
    urls = {"FOODMESH_REDIS_URL": infra.urls.redis_url, "FOODMESH_NATS_URL": infra.urls.nats_url}
    for process, ready in (("gateway", "gateway listening"), ("dashboard", "dashboard listening")):
        proc = start(["serve", process], base_env(**{**_NOWHERE, **urls, "FOODMESH_DEV": "1"}))
        try:
            lines = read_until(proc, ready)
            assert any(ready in line for line in lines), lines
            assert any("WARNING" in line and "FOODMESH_DEV" in line for line in lines) or any(
                "DEVELOPMENT MODE" in line for line in lines
            ), lines
        finally:
            stop(proc)


def test_a_real_secret_starts_without_dev_mode() -> None:
    got = auth_settings({"FOODMESH_AUTH_SECRET": REAL_SECRET})
    assert not got.dev and got.secret == REAL_SECRET and got.service_secret != REAL_SECRET
    with pytest.raises(AuthConfigError, match="FOODMESH_SERVICE_SECRET"):
        auth_settings({"FOODMESH_AUTH_SECRET": REAL_SECRET, "FOODMESH_SERVICE_SECRET": "x"})


def test_a_service_outside_dev_mode_needs_a_service_key_of_its_own() -> None:
    """Derived from the user secret, the services' key would be one the gateway and the
    dashboard hold too (the master key of item 9): a service refuses to start without it,
    while the edges, which never sign service tokens, do not need it."""
    with pytest.raises(ConfigError, match="FOODMESH_SERVICE_SECRET"):
        Settings.from_env("order", {"FOODMESH_AUTH_SECRET": REAL_SECRET})
    key = "s" * 40
    got = Settings.from_env(
        "order", {"FOODMESH_AUTH_SECRET": REAL_SECRET, "FOODMESH_SERVICE_SECRET": key}
    )
    assert got.service_key == key
    assert auth_settings({"FOODMESH_AUTH_SECRET": REAL_SECRET}).service_secret != key


def test_jwks_mode_needs_an_audience_outside_dev_mode() -> None:
    """Tokens the same provider issued for its other clients are not ours."""
    env = {"FOODMESH_AUTH_SECRET": REAL_SECRET, "FOODMESH_AUTH_JWKS_URL": "https://id.example/j",
           "FOODMESH_AUTH_ISSUER": "https://id.example/"}  # fmt: skip
    with pytest.raises(AuthConfigError, match="FOODMESH_AUTH_AUDIENCE"):
        auth_settings(env)
    assert auth_settings({**env, "FOODMESH_AUTH_AUDIENCE": "foodmesh"}).audience == "foodmesh"
