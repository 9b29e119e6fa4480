"""How saved payment methods are shown, and the sandbox's documented test tokens."""

from __future__ import annotations

from servers.order.methods import display_name
from servers.order.sandbox import TEST_CARDS, TEST_TOKENS


def test_cards_and_wallets_are_shown_by_brand_and_last_four_never_more() -> None:
    assert display_name("card", "visa", "4242", "") == "Visa •••• 4242"
    assert display_name("card", "mastercard", "4444", "") == "Mastercard •••• 4444"
    assert display_name("wallet", "visa", "4242", "apple_pay") == "Apple Pay · Visa •••• 4242"
    assert display_name("wallet", "mastercard", "4444", "google_pay") == (
        "Google Pay · Mastercard •••• 4444"
    )
    assert display_name("card", "discover", "1117", "") == "Discover •••• 1117"


def test_every_test_token_says_what_it_is_and_whether_it_declines() -> None:
    assert set(TEST_TOKENS) == set(TEST_CARDS)
    wallets = {t for t, (kind, *_) in TEST_TOKENS.items() if kind == "wallet"}
    assert wallets == {"pm_wallet_apple_pay", "pm_wallet_google_pay", "pm_wallet_declined"}
    assert all(TEST_TOKENS[t][3] in ("apple_pay", "google_pay") for t in wallets)
    assert {t for t, code in TEST_CARDS.items() if code} == {
        "pm_card_declined", "pm_card_insufficient_funds", "pm_wallet_declined"}  # fmt: skip
    assert all(len(last4) == 4 and last4.isdigit() for _, _, last4, _ in TEST_TOKENS.values())
