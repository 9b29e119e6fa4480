"""Typed settings read from ``FOODMESH_*`` environment variables: the one mechanism.

The services (``servers.runtime.config.Settings``), the gateway (``GatewayConfig``) and
the dashboard (``DashboardConfig``) read their variables through these helpers, so a
wrong value fails the same way everywhere: at start, with a one-line
:class:`~foodmesh.core.errors.ConfigError` naming the variable, the value and what
would be accepted. A blank number is its default; a blank flag is false.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from foodmesh.core.auth import AuthConfigError, AuthSettings, auth_settings
from foodmesh.core.errors import ConfigError
from foodmesh.core.telemetry import EXPORTERS, exporter_from_env
from foodmesh.core.tls import TlsConfigError, TlsFiles, require_tls_outside_dev

__all__ = [
    "LOG_LEVELS",
    "NATS_SCHEMES",
    "POSTGRES_SCHEMES",
    "REDIS_SCHEMES",
    "ConfigError",
    "auth_from_env",
    "env_bool",
    "env_choice",
    "env_first",
    "env_float",
    "env_int",
    "env_list",
    "env_namespace",
    "env_port",
    "env_str",
    "env_targets",
    "env_url",
    "read_at_start",
    "tls_from_env",
    "trace_exporter",
]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

#: One server, or a Redis Cluster by any of its nodes (``redis+cluster://h1:p1,h2:p2``).
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
NATS_SCHEMES = ("nats", "tls", "ws", "wss")
POSTGRES_SCHEMES = ("postgresql", "postgres")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _invalid(name: str, raw: str, expected: str) -> ConfigError:
    return ConfigError(f"{name}={raw!r} is not valid: expected {expected}")


def _read(
    env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], expected: str
) -> T:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return parse(raw.strip())
    except (ValueError, TypeError):
        raise _invalid(name, raw, expected) from None


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    """The variable as it is (set but empty stays empty)."""
    return env.get(name, default)


def env_first(env: Mapping[str, str], names: Sequence[str], default: str = "") -> str:
    """The first of ``names`` set to something, else ``default`` (a specific, then a shared one)."""
    return next((v for n in names if (v := env.get(n, ""))), default)


def env_int(
    env: Mapping[str, str], name: str, default: int, *, lo: int | None = None, hi: int | None = None
) -> int:
    """An integer within ``lo..hi`` (each bound optional)."""
    value = _read(env, name, default, int, "an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{lo}..{hi}" if lo is not None and hi is not None else (
            f">= {lo}" if lo is not None else f"<= {hi}")  # fmt: skip
        raise ConfigError(f"{name}={value} is out of range: expected {bounds}")
    return value


def env_port(env: Mapping[str, str], name: str, default: int, *, lo: int = 0) -> int:
    """A TCP port (0: a free one; ``lo=-1`` where -1 means none)."""
    return env_int(env, name, default, lo=lo, hi=65535)


def env_float(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    lo: float = 0.0,
    above: bool = False,
    finite: bool = False,
) -> float:
    """A number ``>= lo`` (``above``: ``> lo``; ``finite``: not infinite); never NaN."""
    value = _read(env, name, default, float, "a number")
    if math.isnan(value) or value < lo or (above and value == lo) or (finite and math.isinf(value)):
        kind = "a finite number" if finite else "a number"
        raise ConfigError(
            f"{name}={value} is out of range: expected {kind} {'>' if above else '>='} {lo:g}"
        )
    return value


def _parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(raw)


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A flag: 1/0, true/false, yes/no, on/off (set but empty: false)."""
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return _parse_bool(raw.strip())
    except ValueError:
        raise _invalid(name, raw, "one of 1/0, true/false, yes/no, on/off") from None


def _one_of(choices: Sequence[str]) -> str:
    return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]


def env_choice(
    env: Mapping[str, str], name: str, default: str, choices: Sequence[str], *, upper: bool = False
) -> str:
    """One of ``choices`` (``upper``: compared in upper case)."""
    value = env.get(name, default)
    value = value.upper() if upper else value
    if value not in choices:
        raise _invalid(name, value, _one_of(choices))
    return value


def env_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list, each item stripped, empty ones dropped."""
    return tuple(p.strip() for p in env.get(name, "").split(",") if p.strip())


def env_url(
    env: Mapping[str, str],
    name: str,
    default: str,
    schemes: tuple[str, ...],
    *,
    several: bool = False,
) -> str:
    """The URL in ``name``; with ``several``, a comma-separated list of them (a cluster's)."""
    value = env.get(name, default)
    parts = value.split(",") if several else [value]
    if value and not all(p.strip().startswith(tuple(f"{s}://" for s in schemes)) for p in parts):
        raise ConfigError(
            f"{name}={value!r} is not valid: expected a URL starting with "
            + " or ".join(f"{s}://" for s in schemes)
        )
    return value


def env_targets(env: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``{prefix}ORDER_TARGET=h:p`` -> ``{"order": "h:p"}`` (empty ones left out)."""
    pattern = re.compile(re.escape(prefix) + r"([A-Z0-9_]+)_TARGET")
    return {m.group(1).lower(): v for k, v in env.items() if (m := pattern.fullmatch(k)) and v}


def env_namespace(env: Mapping[str, str]) -> str:
    """``FOODMESH_NAMESPACE``: the prefix of Redis keys, NATS subjects and streams."""
    namespace = env.get("FOODMESH_NAMESPACE", "")
    if namespace and not namespace.replace("_", "").replace("-", "").isalnum():
        raise _invalid("FOODMESH_NAMESPACE", namespace, "letters, digits, - or _")
    return namespace


def trace_exporter(env: Mapping[str, str]) -> str:
    """Where spans go: ``FOODMESH_TRACE_EXPORTER``, else ``otlp`` given an OTLP endpoint."""
    exporter = exporter_from_env(env)
    if exporter not in EXPORTERS:
        raise _invalid("FOODMESH_TRACE_EXPORTER", exporter, _one_of(sorted(EXPORTERS)))
    return exporter


def tls_from_env(env: Mapping[str, str]) -> TlsFiles:
    """The TLS files (``FOODMESH_TLS_*``); plaintext when none are set."""
    try:
        return TlsFiles.from_env(env)
    except TlsConfigError as exc:
        raise ConfigError(str(exc)) from None


def auth_from_env(env: Mapping[str, str], *, process: str, service: bool = False) -> AuthSettings:
    """The keys and identity provider (:func:`~foodmesh.core.auth.auth_settings`; ``service``:
    the process signs service tokens and needs the services' own key).

    Read last by every process, so a wrong setting elsewhere is named first.
    """
    try:
        return auth_settings(env, process=process, service=service)
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from None


def read_at_start(process: str, read: Callable[[], T]) -> T | None:
    """``read()`` the settings of an edge process (gateway, dashboard) and check that it
    calls the services over TLS outside dev mode.

    Every refusal is printed as one line ``<process>: <what is wrong>``, so one start
    names them all; None when there was any (the process exits 1).
    """
    problems: list[str] = []
    value: T | None = None
    try:
        value = read()
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        require_tls_outside_dev(TlsFiles.from_env(), who=process, serves=False, dials=True)
    except TlsConfigError as exc:
        problems.append(str(exc))
    for problem in dict.fromkeys(problems):  # a bad TLS file is named by both, once
        print(f"{process}: {problem}", flush=True)
    return None if problems else value
