"""The typed error tree every service raises; mapped to gRPC status in one place.

Domain code raises these; ``servers.runtime.interceptors`` turns them into a
``google.rpc.Status`` with rich details. Nothing else in a service touches
status codes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
import psycopg
from nats import errors as nats_errors
from psycopg_pool import PoolTimeout, TooManyRequests
from redis import exceptions as redis_errors

__all__ = [
    "Aborted",
    "AlreadyExists",
    "ConfigError",
    "DeadlineExceeded",
    "DependencyUnavailable",
    "FailedPrecondition",
    "FieldViolation",
    "FoodmeshError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Violations",
    "dependency_error",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: its path (``delivery_address.lat``) and what is wrong with it."""

    field: str
    description: str


class FoodmeshError(Exception):
    """Base of every error a foodmesh service raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Machine-readable UPPER_SNAKE reason, sent as google.rpc.ErrorInfo.
        self.reason = reason


class InvalidArgument(FoodmeshError):
    """The request is malformed; ``violations`` name every bad field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        violations: Iterable[FieldViolation] | FieldViolation,
        message: str | None = None,
    ) -> None:
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        if message is None:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or "invalid argument", reason="INVALID_ARGUMENT")

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """Shorthand for one bad field."""
        return cls(FieldViolation(field, description))


class NotFound(FoodmeshError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FoodmeshError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(FoodmeshError):
    """The system is not in a state where this is allowed (e.g. an illegal transition)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(FoodmeshError):
    """A concurrency conflict; the caller may retry the whole operation."""

    code = grpc.StatusCode.ABORTED


class PermissionDenied(FoodmeshError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(FoodmeshError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(FoodmeshError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(FoodmeshError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(FoodmeshError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class DependencyUnavailable(Unavailable):
    """A server we depend on (PostgreSQL, Redis, NATS, another service) does not answer."""


class ConfigError(FoodmeshError):
    """A ``FOODMESH_*`` setting is missing or malformed; the message names the variable."""

    code = grpc.StatusCode.FAILED_PRECONDITION


def dependency_error(exc: BaseException) -> FoodmeshError | None:
    """What a dependency's own exception means for the caller, when it means something.

    A PostgreSQL pool with every connection busy for its whole wait (``PoolTimeout``)
    or too many waiters (``TooManyRequests``) is load, not a bug, and a Redis,
    PostgreSQL or NATS that cannot be reached is an outage: the caller gets
    UNAVAILABLE and may retry, and nothing is logged as an unhandled error.
    """
    if isinstance(exc, PoolTimeout | TooManyRequests):
        return DependencyUnavailable("database busy: retry", reason="DATABASE_BUSY")
    # A server that refuses or drops connections (restarting, failing over) is away,
    # not broken: the same answer, and the caller's retry finds it back.
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return DependencyUnavailable("Redis unavailable: retry", reason="REDIS_UNAVAILABLE")
    if isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40"):
        # class 40, transaction rollback: a serialization failure or a deadlock
        return Aborted("conflicting concurrent change: retry", reason="DATABASE_CONFLICT")
    if isinstance(exc, psycopg.OperationalError) and not isinstance(
        exc,
        psycopg.errors.QueryCanceled,  # a deadline's cancel: the interceptor says so
    ):
        return DependencyUnavailable("database unavailable: retry", reason="DATABASE_UNAVAILABLE")
    if isinstance(exc, nats_errors.NoServersError | nats_errors.ConnectionClosedError):
        return DependencyUnavailable("NATS unavailable: retry", reason="NATS_UNAVAILABLE")
    return None


class Violations:
    """Collects field violations so a request reports every bad field at once.

    >>> v = Violations()
    >>> v.check(lat_ok, "delivery_address.lat", "must be between -90 and 90")
    >>> v.raise_if_any()
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._items.append(FieldViolation(field, description))

    def check(self, ok: bool, field: str, description: str) -> bool:
        """Records a violation unless ``ok``; returns ``ok`` for dependent checks."""
        if not ok:
            self.add(field, description)
        return ok

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def raise_if_any(self) -> None:
        if self._items:
            raise InvalidArgument(self._items)
