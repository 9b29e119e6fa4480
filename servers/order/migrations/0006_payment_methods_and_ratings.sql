-- Customers' saved payment methods (servers/order/methods.py): the Order service's own
-- list of what each customer saved with the processor, which one is the default, and
-- the idempotency key that saved it. Keyed by customer first, so it shards by customer.
-- A removed method keeps its row (removed_at) so a retried removal is no error and a
-- removed id is refused at PlaceOrder like an unknown one.
CREATE TABLE IF NOT EXISTS orders.payment_methods (
    customer_id       text NOT NULL,
    payment_method_id text NOT NULL,
    add_key           text NOT NULL,
    request_hash      text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('card', 'wallet')),
    brand             text NOT NULL,
    last4             text NOT NULL,
    wallet            text NOT NULL DEFAULT '',
    is_default        boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    removed_at        timestamptz,
    PRIMARY KEY (customer_id, payment_method_id),
    UNIQUE (customer_id, add_key),
    CHECK (NOT (is_default AND removed_at IS NOT NULL))
);
-- At most one default per customer.
CREATE UNIQUE INDEX IF NOT EXISTS payment_methods_one_default
    ON orders.payment_methods (customer_id) WHERE is_default;

-- The sandbox processor saves a method once per key (a retried save returns the same id).
ALTER TABLE orders.sandbox_payment_methods ADD COLUMN IF NOT EXISTS save_key text;
CREATE UNIQUE INDEX IF NOT EXISTS sandbox_payment_methods_save_key
    ON orders.sandbox_payment_methods (save_key) WHERE save_key IS NOT NULL;

-- Food quality is rated apart from the restaurant (0: not rated).
ALTER TABLE orders.ratings ADD COLUMN IF NOT EXISTS food_rating smallint NOT NULL DEFAULT 0
    CHECK (food_rating BETWEEN 0 AND 5);

-- What paid for an order (a saved method's id or a one-off token) and how it is shown to
-- its customer ("Apple Pay · Visa •••• 4242"); '' for orders placed before.
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS payment_method text NOT NULL DEFAULT '';
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS payment_method_name text NOT NULL DEFAULT '';

-- The settle pass hands the Catalog the ratings it has not confirmed (servers/order/service.py):
-- only those rows are read, not the whole table.
CREATE INDEX IF NOT EXISTS ratings_restaurant_unforwarded ON orders.ratings (created_at)
    WHERE NOT restaurant_forwarded;
