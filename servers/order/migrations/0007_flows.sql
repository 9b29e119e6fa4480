-- Restaurants hear about orders, and nothing is left waiting (servers/order/feed.py,
-- confirm.py, holds.py).

-- A restaurant's order feed: every change of any of its orders, numbered per restaurant
-- without gaps. The number is taken under the restaurant's row lock in the change's own
-- transaction, so positions commit in order and a reader resuming after N misses nothing.
CREATE TABLE IF NOT EXISTS orders.restaurant_feeds (
    restaurant_id text PRIMARY KEY,
    last_seq      bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS orders.restaurant_feed (
    restaurant_id text        NOT NULL,
    seq           bigint      NOT NULL,
    order_id      text        NOT NULL,
    order_seq     integer     NOT NULL,
    event         text        NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (restaurant_id, seq)
);
CREATE INDEX IF NOT EXISTS restaurant_feed_at ON orders.restaurant_feed (at);

-- A restaurant's order-taking settings (absent: manual confirmation, the default timeout).
CREATE TABLE IF NOT EXISTS orders.restaurant_settings (
    restaurant_id      text PRIMARY KEY,
    auto_confirm       boolean NOT NULL DEFAULT false,
    -- [[start_minute, end_minute], ...] in the restaurant's local time; [] all day.
    auto_confirm_hours jsonb   NOT NULL DEFAULT '[]',
    confirm_timeout_s  integer NOT NULL DEFAULT 0,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- When a placed order must be confirmed (auto: confirmed by the sweeper at due_at;
-- otherwise cancelled and refunded at due_at unless its restaurant confirmed it). Written
-- with the order; swept with SKIP LOCKED by any replica, so a restart or a second replica
-- neither loses nor doubles one.
CREATE TABLE IF NOT EXISTS orders.confirm_deadlines (
    order_id      text PRIMARY KEY,
    restaurant_id text        NOT NULL,
    due_at        timestamptz NOT NULL,
    auto          boolean     NOT NULL,
    timeout_s     integer     NOT NULL
);
CREATE INDEX IF NOT EXISTS confirm_deadlines_due ON orders.confirm_deadlines (due_at);

-- What is wrong with an order in flight (no driver, driver lost), and from when its
-- customer may cancel free of charge.
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS alert jsonb;
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS free_cancel_after timestamptz;

-- The holds sweeper looks for claims left pending past their expiry (a placement that
-- died after the card hold).
CREATE INDEX IF NOT EXISTS idempotency_keys_pending
    ON orders.idempotency_keys (expires_at) WHERE state = 'pending';

-- The holds sweeper asks the sandbox processor for the holds of an order id.
CREATE INDEX IF NOT EXISTS sandbox_payments_reference ON orders.sandbox_payments (reference);
