"""The built-in sandbox payment provider: a card processor's test mode, kept in PostgreSQL.

Test tokens (``payment_method_id``, or AddPaymentMethod's ``token``):

- ``pm_card_visa`` (Visa 4242), ``pm_card_mastercard`` (Mastercard 4444): authorized;
- ``pm_card_declined``: declined (``card_declined``);
- ``pm_card_insufficient_funds``: declined (``insufficient_funds``);
- ``pm_card_timeout``: the processor does not answer (nothing recorded; retry is safe);
- digital wallets: ``pm_wallet_apple_pay`` (Apple Pay, Visa 4242) and
  ``pm_wallet_google_pay`` (Google Pay, Mastercard 4444) authorize, capture and refund as
  cards do; ``pm_wallet_declined`` (Apple Pay) is declined (``wallet_declined``);
- a saved method (``orders.sandbox_payment_methods``, made by :meth:`save_method` from a
  test token): as its test token, for the customer it belongs to only;
- anything else, or another customer's saved method: declined (``invalid_payment_method``)
  before anything is recorded.

Its tables (``orders.sandbox_payments``, ``orders.sandbox_operations``) stand for
the processor's own ledger; the Order service reads them only through this class.
An authorization is keyed by its idempotency key, as are capture and refund, so
repeating any of them changes nothing. A declined attempt is recorded too, and
the same key gets the same decline.
"""

from __future__ import annotations

import secrets
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from servers.order._pg import autocommit
from servers.order.payments import (
    Authorization,
    Hold,
    InvalidToken,
    PaymentDeclined,
    PaymentError,
    ProviderUnavailable,
    RefundOutcome,
    SavedMethod,
)

__all__ = ["TEST_CARDS", "TEST_TOKENS", "SandboxProvider"]

#: What each test token is: (kind, brand, last4, wallet).
TEST_TOKENS: dict[str, tuple[str, str, str, str]] = {
    "pm_card_visa": ("card", "visa", "4242", ""),
    "pm_card_mastercard": ("card", "mastercard", "4444", ""),
    "pm_card_declined": ("card", "visa", "0002", ""),
    "pm_card_insufficient_funds": ("card", "visa", "9995", ""),
    "pm_wallet_apple_pay": ("wallet", "visa", "4242", "apple_pay"),
    "pm_wallet_google_pay": ("wallet", "mastercard", "4444", "google_pay"),
    "pm_wallet_declined": ("wallet", "visa", "0002", "apple_pay"),
}
#: The decline code of each test token (None: authorized).
TEST_CARDS: dict[str, str | None] = {
    "pm_card_visa": None,
    "pm_card_mastercard": None,
    "pm_card_declined": "card_declined",
    "pm_card_insufficient_funds": "insufficient_funds",
    "pm_wallet_apple_pay": None,
    "pm_wallet_google_pay": None,
    "pm_wallet_declined": "wallet_declined",
}
_MESSAGES = {
    "card_declined": "the card was declined",
    "insufficient_funds": "the card has insufficient funds",
    "wallet_declined": "the wallet declined the payment",
    "invalid_payment_method": "no such payment method",
    "authorization_voided": "this attempt's card hold was released after the attempt was"
    " abandoned: place the order again with a new idempotency_key",
}


class SandboxProvider:
    name = "sandbox"

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def authorize(
        self,
        *,
        key: str,
        payment_method_id: str,
        amount_minor: int,
        currency: str,
        reference: str,
        customer_id: str,
    ) -> Authorization:
        if payment_method_id == "pm_card_timeout":
            raise ProviderUnavailable("the payment processor did not answer (pm_card_timeout)")
        token = payment_method_id
        async with autocommit(self.pool) as conn:
            if payment_method_id in TEST_CARDS:
                decline = TEST_CARDS[payment_method_id]
            else:
                cur = await conn.execute(
                    "SELECT card FROM orders.sandbox_payment_methods"
                    " WHERE payment_method_id = %s AND customer_id = %s",
                    (payment_method_id, customer_id),
                )
                saved = await cur.fetchone()
                if saved is None:  # unknown, or someone else's: the same answer, no hold
                    code = "invalid_payment_method"
                    raise PaymentDeclined(code, _MESSAGES[code])
                token = str(saved[0])
                decline = TEST_CARDS.get(token, "invalid_payment_method")
            # One statement, one round trip for a new key; a repeated key reads what the
            # first attempt recorded.
            cur = await conn.execute(
                "INSERT INTO orders.sandbox_payments (payment_id, auth_key, payment_method,"
                " amount_minor, currency, status, decline_code, reference)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (auth_key) DO NOTHING"
                " RETURNING payment_id, payment_method, amount_minor, currency, decline_code",
                ("pay_" + secrets.token_hex(12), key, payment_method_id, amount_minor,
                 currency, "declined" if decline else "authorized", decline or "", reference),
            )  # fmt: skip
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute(
                    "SELECT payment_id, payment_method, amount_minor, currency, decline_code,"
                    " status FROM orders.sandbox_payments WHERE auth_key = %s",
                    (key,),
                )
                row = await cur.fetchone()
                if row is not None and row[5] == "voided" and not row[4]:
                    # The hold of an abandoned attempt was released (servers/order/deadlines.py):
                    # a processor answers a repeated key with what became of it.
                    code = "authorization_voided"
                    raise PaymentDeclined(code, _MESSAGES[code])
                row = row[:5] if row is not None else None
        assert row is not None
        pid, method, amount, cur_code, code = row
        if (method, amount, cur_code) != (payment_method_id, amount_minor, currency):
            raise PaymentError(f"idempotency key {key!r} was used for a different authorization")
        if code:
            raise PaymentDeclined(code, _MESSAGES.get(code) or code)
        kind, brand, last4, wallet = TEST_TOKENS.get(token, ("card", "", "", ""))
        return Authorization(pid, amount, cur_code, kind=kind, brand=brand, last4=last4,
                             wallet=wallet)  # fmt: skip

    async def _op(
        self, conn: AsyncConnection[Any], key: str, payment_id: str, op: str, amount: int
    ) -> bool:
        cur = await conn.execute(
            "INSERT INTO orders.sandbox_operations (op_key, payment_id, op, amount_minor)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (op_key) DO NOTHING",
            (key, payment_id, op, amount),
        )
        return cur.rowcount == 1

    async def capture(self, *, key: str, payment_id: str, amount_minor: int) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT status, amount_minor FROM orders.sandbox_payments"
                " WHERE payment_id = %s FOR UPDATE",
                (payment_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise PaymentError(f"no payment {payment_id!r}")
            if not await self._op(conn, key, payment_id, "capture", amount_minor):
                return
            status, authorized = row
            if status != "authorized" or amount_minor > authorized:
                raise PaymentError(f"cannot capture {amount_minor} of a {status} payment")
            await conn.execute(
                "UPDATE orders.sandbox_payments SET status = 'captured', captured_minor = %s"
                " WHERE payment_id = %s",
                (amount_minor, payment_id),
            )

    async def holds_for(self, *, reference: str) -> list[Hold]:
        """The authorizations made for ``reference`` (an order id), as they stand."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT payment_id, amount_minor, status FROM orders.sandbox_payments"
                " WHERE reference = %s AND decline_code = ''",
                (reference,),
            )
            return [Hold(r[0], int(r[1]), r[2]) for r in await cur.fetchall()]

    async def void(self, *, key: str, payment_id: str, amount_minor: int) -> None:
        """Releases an authorization whole (once per ``key``; a voided one stays voided)."""
        await self.refund(key=key, payment_id=payment_id, amount_minor=amount_minor)

    async def refund(self, *, key: str, payment_id: str, amount_minor: int) -> RefundOutcome:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT status, amount_minor, captured_minor, refunded_minor"
                " FROM orders.sandbox_payments WHERE payment_id = %s FOR UPDATE",
                (payment_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise PaymentError(f"no payment {payment_id!r}")
            status, authorized, captured, refunded = row
            if await self._op(conn, key, payment_id, "refund", amount_minor):
                if status == "authorized" and amount_minor == authorized:
                    status, refunded = "voided", amount_minor
                elif status in ("captured", "partially_refunded") and (
                    refunded + amount_minor <= captured
                ):
                    refunded += amount_minor
                    status = "refunded" if refunded == captured else "partially_refunded"
                else:
                    raise PaymentError(f"cannot refund {amount_minor} of a {status} payment")
                await conn.execute(
                    "UPDATE orders.sandbox_payments SET status = %s, refunded_minor = %s"
                    " WHERE payment_id = %s",
                    (status, refunded, payment_id),
                )
        return RefundOutcome(status, refunded)

    # -- the vault -----------------------------------------------------------------------

    async def save_method(self, *, key: str, token: str, customer_id: str) -> SavedMethod:
        if token == "pm_card_timeout":
            raise ProviderUnavailable("the payment processor did not answer (pm_card_timeout)")
        if token not in TEST_TOKENS:
            raise InvalidToken(f"not a sandbox test token: use one of {', '.join(TEST_TOKENS)}")
        async with autocommit(self.pool) as conn:
            await conn.execute(
                "INSERT INTO orders.sandbox_payment_methods (payment_method_id, customer_id,"
                " card, save_key) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (save_key) WHERE save_key IS NOT NULL DO NOTHING",
                ("pm_" + secrets.token_hex(12), customer_id, token, key),
            )
            cur = await conn.execute(
                "SELECT payment_method_id, customer_id, card FROM orders.sandbox_payment_methods"
                " WHERE save_key = %s",
                (key,),
            )
            row = await cur.fetchone()
        assert row is not None
        pm_id, owner, card = row
        if (owner, card) != (customer_id, token):
            raise PaymentError(f"idempotency key {key!r} was used to save a different method")
        kind, brand, last4, wallet = TEST_TOKENS[token]
        return SavedMethod(pm_id, kind, brand, last4, wallet)

    async def detach_method(self, *, payment_method_id: str, customer_id: str) -> None:
        async with autocommit(self.pool) as conn:
            await conn.execute(
                "DELETE FROM orders.sandbox_payment_methods"
                " WHERE payment_method_id = %s AND customer_id = %s",
                (payment_method_id, customer_id),
            )
