"""Saved payment methods: each customer's cards and digital wallets, and their default.

The processor's vault (``payments.MethodVault``) keeps what a method is; this module
keeps the customer's list (``orders.payment_methods``): which methods they saved, with
which idempotency key, which one is the default. A customer sees and uses only their
own: another customer's method answers as an unknown one (NOT_FOUND; at PlaceOrder the
processor's "no such payment method"), as an order of someone else looks like no order.

Writes of one customer's list are serialized by a transaction-scoped advisory lock, so
two racing adds cannot both become the default and the count stays within its bound.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import grpc
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from foodmesh.core.auth import Principal
from foodmesh.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    Violations,
)
from foodmesh.v1 import order_pb2
from servers.order.payments import (
    InvalidToken,
    MethodVault,
    PaymentError,
    ProviderUnavailable,
    SavedMethod,
)
from servers.runtime.auth import require

__all__ = ["MAX_METHODS", "Method", "MethodStore", "PaymentMethodsServicer", "display_name"]

_log = logging.getLogger("foodmesh.order")
Ctx = grpc.aio.ServicerContext[Any, Any]

#: Saved methods a customer may hold at once.
MAX_METHODS = 20
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_BRANDS = {"visa": "Visa", "mastercard": "Mastercard", "amex": "Amex"}
_WALLETS = {"apple_pay": "Apple Pay", "google_pay": "Google Pay"}
#: The processor's answer to an unknown method, also given for one the customer removed.
_NO_SUCH_METHOD = "payment_method_id: no such payment method"


@dataclass(frozen=True, slots=True)
class Method:
    """One saved method of a customer."""

    payment_method_id: str
    kind: str
    brand: str
    last4: str
    wallet: str
    is_default: bool
    created_at: dt.datetime
    removed: bool = False


def display_name(kind: str, brand: str, last4: str, wallet: str) -> str:
    """How a method is shown: ``Visa •••• 4242``, ``Apple Pay · Visa •••• 4242``."""
    card = f"{_BRANDS.get(brand, brand.title())} •••• {last4}"
    if kind == "wallet":
        return f"{_WALLETS.get(wallet, wallet.replace('_', ' ').title())} · {card}"
    return card


def method_to_pb(m: Method) -> order_pb2.PaymentMethod:
    out = order_pb2.PaymentMethod(
        payment_method_id=m.payment_method_id,
        kind=order_pb2.PAYMENT_METHOD_KIND_WALLET
        if m.kind == "wallet"
        else order_pb2.PAYMENT_METHOD_KIND_CARD,
        brand=m.brand,
        last4=m.last4,
        wallet=m.wallet,
        is_default=m.is_default,
        display_name=display_name(m.kind, m.brand, m.last4, m.wallet),
    )
    out.create_time.FromDatetime(m.created_at)
    return out


def _method(row: dict[str, Any]) -> Method:
    return Method(
        payment_method_id=row["payment_method_id"],
        kind=row["kind"],
        brand=row["brand"],
        last4=row["last4"],
        wallet=row["wallet"],
        is_default=row["is_default"],
        created_at=row["created_at"],
        removed=row["removed_at"] is not None,
    )


_SELECT = (
    "SELECT payment_method_id, kind, brand, last4, wallet, is_default, created_at, removed_at,"
    " request_hash FROM orders.payment_methods"
)


class MethodStore:
    """The customers' lists of saved methods (``orders.payment_methods``)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @staticmethod
    async def _lock(conn: AsyncConnection[Any], customer_id: str) -> None:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("pm:" + customer_id,)
        )

    async def by_key(self, customer_id: str, key: str) -> tuple[str, Method] | None:
        """The method saved with ``key`` and the hash of the request that saved it."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_SELECT + " WHERE customer_id = %s AND add_key = %s",
                              (customer_id, key))  # fmt: skip
            row = await cur.fetchone()
        return None if row is None else (row["request_hash"], _method(row))

    async def count(self, customer_id: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM orders.payment_methods"
                " WHERE customer_id = %s AND removed_at IS NULL",
                (customer_id,),
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def add(
        self, customer_id: str, key: str, request_hash: str, saved: SavedMethod, *,
        make_default: bool,
    ) -> tuple[str, Method]:  # fmt: skip
        """Records a saved method once per key; the first one, or ``make_default``, is the
        default. Returns the request hash it was saved with and the method as stored."""
        async with self.pool.connection() as conn, conn.transaction():
            await self._lock(conn, customer_id)
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_SELECT + " WHERE customer_id = %s AND add_key = %s",
                              (customer_id, key))  # fmt: skip
            row = await cur.fetchone()
            if row is not None:  # a retry, or a racing twin that got here first
                return row["request_hash"], _method(row)
            await cur.execute(
                "SELECT count(*) AS n, bool_or(is_default) AS has_default"
                " FROM orders.payment_methods WHERE customer_id = %s AND removed_at IS NULL",
                (customer_id,),
            )
            stats = await cur.fetchone()
            assert stats is not None
            if stats["n"] >= MAX_METHODS:
                raise FailedPrecondition(
                    f"at most {MAX_METHODS} payment methods may be saved: remove one first",
                    reason="TOO_MANY_PAYMENT_METHODS",
                )
            default = make_default or not stats["has_default"]
            if default:
                await conn.execute(
                    "UPDATE orders.payment_methods SET is_default = false"
                    " WHERE customer_id = %s AND is_default",
                    (customer_id,),
                )
            await cur.execute(
                "INSERT INTO orders.payment_methods (customer_id, payment_method_id, add_key,"
                " request_hash, kind, brand, last4, wallet, is_default)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING payment_method_id, kind, brand, last4, wallet, is_default,"
                " created_at, removed_at, request_hash",
                (customer_id, saved.payment_method_id, key, request_hash, saved.kind,
                 saved.brand, saved.last4, saved.wallet, default),
            )  # fmt: skip
            row = await cur.fetchone()
        assert row is not None
        return row["request_hash"], _method(row)

    async def list_for(self, customer_id: str) -> list[Method]:
        """The customer's methods, the default first, then newest first."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                _SELECT + " WHERE customer_id = %s AND removed_at IS NULL"
                " ORDER BY is_default DESC, created_at DESC, payment_method_id",
                (customer_id,),
            )
            return [_method(r) for r in await cur.fetchall()]

    async def get(self, customer_id: str, payment_method_id: str) -> Method | None:
        """One of the customer's methods, removed ones too; None if it is not theirs."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(_SELECT + " WHERE customer_id = %s AND payment_method_id = %s",
                              (customer_id, payment_method_id))  # fmt: skip
            row = await cur.fetchone()
        return None if row is None else _method(row)

    async def remove(self, customer_id: str, payment_method_id: str) -> bool:
        """Removes the customer's method (the newest left becomes the default if it was);
        False if it is not theirs. Removing it again is no error."""
        async with self.pool.connection() as conn, conn.transaction():
            await self._lock(conn, customer_id)
            cur = await conn.execute(
                "SELECT is_default, removed_at IS NOT NULL FROM orders.payment_methods"
                " WHERE customer_id = %s AND payment_method_id = %s",
                (customer_id, payment_method_id),
            )
            row = await cur.fetchone()
            if row is None:
                return False
            was_default, removed = row
            if removed:
                return True
            await conn.execute(
                "UPDATE orders.payment_methods SET removed_at = now(), is_default = false"
                " WHERE customer_id = %s AND payment_method_id = %s",
                (customer_id, payment_method_id),
            )
            if was_default:
                await conn.execute(
                    "UPDATE orders.payment_methods SET is_default = true"
                    " WHERE customer_id = %s AND payment_method_id = ("
                    "   SELECT payment_method_id FROM orders.payment_methods"
                    "   WHERE customer_id = %s AND removed_at IS NULL"
                    "   ORDER BY created_at DESC, payment_method_id LIMIT 1)",
                    (customer_id, customer_id),
                )
        return True

    async def set_default(self, customer_id: str, payment_method_id: str) -> Method | None:
        """Makes the customer's (not removed) method the default; None if there is none."""
        async with self.pool.connection() as conn, conn.transaction():
            await self._lock(conn, customer_id)
            cur = await conn.execute(
                "SELECT 1 FROM orders.payment_methods WHERE customer_id = %s"
                " AND payment_method_id = %s AND removed_at IS NULL",
                (customer_id, payment_method_id),
            )
            if await cur.fetchone() is None:
                return None
            # Two statements: the one-default index is checked row by row.
            await conn.execute(
                "UPDATE orders.payment_methods SET is_default = false"
                " WHERE customer_id = %s AND is_default AND payment_method_id <> %s",
                (customer_id, payment_method_id),
            )
            await conn.execute(
                "UPDATE orders.payment_methods SET is_default = true"
                " WHERE customer_id = %s AND payment_method_id = %s",
                (customer_id, payment_method_id),
            )
            dcur = conn.cursor(row_factory=dict_row)
            await dcur.execute(_SELECT + " WHERE customer_id = %s AND payment_method_id = %s",
                               (customer_id, payment_method_id))  # fmt: skip
            row = await dcur.fetchone()
        return None if row is None else _method(row)

    async def resolve(self, customer_id: str, payment_method_id: str) -> str:
        """What PlaceOrder charges: the default for an empty id; a removed method of the
        customer is refused as the processor refuses an unknown one; anything else (a
        saved method, a one-off token) goes to the processor as it is."""
        if not payment_method_id:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT payment_method_id FROM orders.payment_methods"
                    " WHERE customer_id = %s AND is_default",
                    (customer_id,),
                )
                row = await cur.fetchone()
            if row is None:
                raise InvalidArgument.field(
                    "payment_method_id", "is required: no default payment method is saved"
                )
            return str(row[0])
        saved = await self.get(customer_id, payment_method_id)
        if saved is not None and saved.removed:
            raise FailedPrecondition(_NO_SUCH_METHOD, reason="PAYMENT_INVALID_PAYMENT_METHOD")
        return payment_method_id


def _check_id(v: Violations, value: str) -> None:
    if not value:
        v.add("payment_method_id", "is required")
    else:
        v.check(bool(_ID.match(value)), "payment_method_id",
                "must be 1-64 letters, digits, '_' or '-'")  # fmt: skip


def _not_found(payment_method_id: str) -> NotFound:
    # Someone else's method looks like no method at all.
    return NotFound(f"no payment method {payment_method_id!r}", reason="PAYMENT_METHOD_NOT_FOUND")


def _request_hash(req: order_pb2.AddPaymentMethodRequest) -> str:
    return hashlib.sha256(f"{req.token}|{int(req.set_default)}".encode()).hexdigest()


class PaymentMethodsServicer:
    """The payment-method RPCs of OrderService, mixed into ``OrderServicer``.

    Needs ``self.methods`` (a :class:`MethodStore`) and ``self.vault`` (the processor).
    """

    methods: MethodStore
    vault: MethodVault | None

    async def ListPaymentMethods(  # noqa: N802
        self, request: order_pb2.ListPaymentMethodsRequest, context: Ctx
    ) -> order_pb2.ListPaymentMethodsResponse:
        p = require()
        found = [method_to_pb(m) for m in await self.methods.list_for(p.subject)]
        return order_pb2.ListPaymentMethodsResponse(payment_methods=found)

    async def AddPaymentMethod(  # noqa: N802
        self, request: order_pb2.AddPaymentMethodRequest, context: Ctx
    ) -> order_pb2.AddPaymentMethodResponse:
        v = Violations()
        if not request.idempotency_key:
            v.add("idempotency_key", "is required (a client-chosen key; retry with the same one)")
        else:
            v.check(bool(_KEY.match(request.idempotency_key)), "idempotency_key",
                    "must be 1-255 printable ASCII characters")  # fmt: skip
        if not request.token:
            v.add("token", "is required (the processor's token of the card or wallet)")
        else:
            v.check(len(request.token) <= 255 and request.token.isprintable(), "token",
                    "at most 255 printable characters")  # fmt: skip
        v.raise_if_any()
        p = require()
        digest = _request_hash(request)
        key = request.idempotency_key
        known = await self.methods.by_key(p.subject, key)
        if known is None and await self.methods.count(p.subject) >= MAX_METHODS:
            raise FailedPrecondition(
                f"at most {MAX_METHODS} payment methods may be saved: remove one first",
                reason="TOO_MANY_PAYMENT_METHODS",
            )
        if known is None:
            saved = await self._save(p, key, request.token)
            known = await self.methods.add(p.subject, key, digest, saved,
                                           make_default=request.set_default)  # fmt: skip
        if known[0] != digest:
            raise AlreadyExists(
                "idempotency_key was already used to save a different payment method",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return order_pb2.AddPaymentMethodResponse(payment_method=method_to_pb(known[1]))

    async def _save(self, p: Principal, key: str, token: str) -> SavedMethod:
        if self.vault is None:
            raise FailedPrecondition("this payment provider saves no payment methods",
                                     reason="NO_VAULT")  # fmt: skip
        try:
            return await self.vault.save_method(key=f"save:{p.subject}:{key}", token=token,
                                                customer_id=p.subject)  # fmt: skip
        except InvalidToken as exc:
            raise InvalidArgument.field("token", str(exc)) from None
        except ProviderUnavailable as exc:
            raise Unavailable(
                f"the payment provider did not answer: {exc}; retry with the same idempotency_key",
                reason="PAYMENT_UNAVAILABLE",
            ) from None
        except PaymentError as exc:
            raise FailedPrecondition(f"token: {exc}", reason="PAYMENT_FAILED") from None

    async def RemovePaymentMethod(  # noqa: N802
        self, request: order_pb2.RemovePaymentMethodRequest, context: Ctx
    ) -> order_pb2.RemovePaymentMethodResponse:
        v = Violations()
        _check_id(v, request.payment_method_id)
        v.raise_if_any()
        p = require()
        if not await self.methods.remove(p.subject, request.payment_method_id):
            raise _not_found(request.payment_method_id)
        # Removed from the customer's list first (PlaceOrder refuses it from now on); the
        # processor forgets it after, again on a retried removal.
        if self.vault is not None:
            try:
                await self.vault.detach_method(payment_method_id=request.payment_method_id,
                                               customer_id=p.subject)  # fmt: skip
            except (PaymentError, OSError) as exc:
                _log.warning("payment method %s removed but not detached: %s",
                             request.payment_method_id, exc)  # fmt: skip
        left = [method_to_pb(m) for m in await self.methods.list_for(p.subject)]
        return order_pb2.RemovePaymentMethodResponse(payment_methods=left)

    async def SetDefaultPaymentMethod(  # noqa: N802
        self, request: order_pb2.SetDefaultPaymentMethodRequest, context: Ctx
    ) -> order_pb2.SetDefaultPaymentMethodResponse:
        v = Violations()
        _check_id(v, request.payment_method_id)
        v.raise_if_any()
        p = require()
        m = await self.methods.set_default(p.subject, request.payment_method_id)
        if m is None:
            raise _not_found(request.payment_method_id)
        return order_pb2.SetDefaultPaymentMethodResponse(payment_method=method_to_pb(m))
