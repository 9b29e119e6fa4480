"""Payment providers: authorize at placement, capture on delivery, refund on cancellation;
and the processor's vault, where a customer's cards and digital wallets are saved.

Every operation carries an idempotency key: repeating it (a retried RPC, a relay
that crashed halfway) has the effect of doing it once, as with a card processor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "Authorization",
    "InvalidToken",
    "MethodVault",
    "Hold",
    "HoldLookup",
    "PaymentDeclined",
    "PaymentError",
    "PaymentProvider",
    "ProviderUnavailable",
    "RefundOutcome",
    "SavedMethod",
]


class PaymentError(Exception):
    """Base of what a provider raises on purpose."""


class PaymentDeclined(PaymentError):
    """The card said no; ``code`` is the processor's decline code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidToken(PaymentError):
    """The token to save is not one the processor issued."""


class ProviderUnavailable(PaymentError):
    """The provider did not answer; nothing is known to have happened, retry with the same key."""


@dataclass(frozen=True, slots=True)
class Authorization:
    payment_id: str
    amount_minor: int
    currency: str
    #: What paid, as the processor describes it (``card``/``wallet``, brand, last four,
    #: wallet); empty when the provider does not say.
    kind: str = ""
    brand: str = ""
    last4: str = ""
    wallet: str = ""


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    #: ``voided`` (released before capture), ``refunded`` or ``partially_refunded``.
    status: str
    refunded_minor: int


class PaymentProvider(Protocol):
    name: str

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
        """Holds ``amount_minor`` on the card; a method that is not ``customer_id``'s is
        declined (``invalid_payment_method``) before anything is held."""
        ...

    async def capture(self, *, key: str, payment_id: str, amount_minor: int) -> None: ...

    async def refund(self, *, key: str, payment_id: str, amount_minor: int) -> RefundOutcome: ...


@dataclass(frozen=True, slots=True)
class SavedMethod:
    """A payment method the processor saved for a customer: what it is, never its number."""

    payment_method_id: str
    #: ``card`` or ``wallet``.
    kind: str
    brand: str
    last4: str
    #: ``apple_pay``, ``google_pay``; empty for a card.
    wallet: str = ""


class MethodVault(Protocol):
    """The processor's vault: saves a token as a customer's method, and forgets it."""

    async def save_method(self, *, key: str, token: str, customer_id: str) -> SavedMethod:
        """Saves ``token`` for ``customer_id`` once per ``key``; raises InvalidToken."""
        ...

    async def detach_method(self, *, payment_method_id: str, customer_id: str) -> None:
        """Forgets the customer's method: it authorizes nothing any more (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class Hold:
    """A card authorization as the processor reports it."""

    payment_id: str
    amount_minor: int
    status: str


@runtime_checkable
class HoldLookup(Protocol):
    """A provider that can find the authorizations made for a reference (the order id)."""

    async def holds_for(self, *, reference: str) -> list[Hold]: ...

    async def void(self, *, key: str, payment_id: str, amount_minor: int) -> None: ...
