-- The sandbox processor's saved cards: a payment method belongs to one customer, and
-- only that customer may pay with it (servers/order/sandbox.py). ``card`` is the test
-- card it behaves as. The shared test cards (pm_card_visa, ...) stand for one-off card
-- tokens and are anyone's, as a processor's test tokens are.
CREATE TABLE IF NOT EXISTS orders.sandbox_payment_methods (
    payment_method_id text PRIMARY KEY,
    customer_id       text NOT NULL,
    card              text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
