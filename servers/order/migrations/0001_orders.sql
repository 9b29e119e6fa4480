-- The Order service: orders, their lines and timelines, idempotency keys, ratings,
-- the outbox, and the sandbox payment processor's ledger.
-- Every table is keyed by order id first (or by its own key) and no table refers to
-- another order's rows, so the schema shards by order id (hash) unchanged.
CREATE SCHEMA IF NOT EXISTS orders;

CREATE TABLE orders.orders (
    order_id                text PRIMARY KEY,
    customer_id             text NOT NULL,
    restaurant_id           text NOT NULL,
    restaurant_name         text NOT NULL,
    restaurant_lat          double precision NOT NULL,
    restaurant_lon          double precision NOT NULL,
    driver_id               text NOT NULL DEFAULT '',
    status                  text NOT NULL CHECK (status IN ('placed', 'confirmed', 'preparing',
                                'ready_for_pickup', 'picked_up', 'in_transit', 'delivered',
                                'cancelled')),
    delivery_address        jsonb NOT NULL,
    delivery_option         smallint NOT NULL,
    scheduled_time          timestamptz,
    currency                text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    subtotal_minor          bigint NOT NULL CHECK (subtotal_minor >= 0),
    delivery_fee_minor      bigint NOT NULL,
    service_fee_minor       bigint NOT NULL,
    small_order_fee_minor   bigint NOT NULL,
    tax_minor               bigint NOT NULL,
    discount_minor          bigint NOT NULL CHECK (discount_minor <= 0),
    tip_minor               bigint NOT NULL CHECK (tip_minor >= 0),
    total_minor             bigint NOT NULL CHECK (total_minor >= 0),
    surge_multiplier        double precision NOT NULL,
    quote_id                text NOT NULL DEFAULT '',
    promo_code              text NOT NULL DEFAULT '',
    payment_provider        text NOT NULL,
    payment_id              text NOT NULL,
    payment_status          text NOT NULL,
    refunded_minor          bigint NOT NULL DEFAULT 0,
    -- A payment operation decided but not yet confirmed by the provider:
    -- {"op": "capture"|"refund", "amount": n, "key": "..."}; retried until it is.
    payment_pending         jsonb,
    estimated_delivery_time timestamptz NOT NULL,
    eta_confidence          double precision NOT NULL,
    ready_time              timestamptz NOT NULL,
    -- A scheduled order is held (released = false) until release_at =
    -- scheduled_time - (prep + travel); then its orders.v1.placed event goes out.
    release_at              timestamptz,
    released                boolean NOT NULL DEFAULT true,
    cancellation_reason     text NOT NULL DEFAULT '',
    last_seq                integer NOT NULL,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL
);
CREATE INDEX orders_by_customer ON orders.orders (customer_id, order_id DESC);
CREATE INDEX orders_by_restaurant ON orders.orders (restaurant_id, order_id DESC);
CREATE INDEX orders_by_driver ON orders.orders (driver_id, order_id DESC) WHERE driver_id <> '';
CREATE INDEX orders_to_release ON orders.orders (release_at) WHERE NOT released;
CREATE INDEX orders_payment_pending ON orders.orders (order_id) WHERE payment_pending IS NOT NULL;

CREATE TABLE orders.order_items (
    order_id             text NOT NULL,
    position             smallint NOT NULL,
    item_id              text NOT NULL,
    name                 text NOT NULL,
    quantity             smallint NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    unit_price_minor     bigint NOT NULL,
    line_total_minor     bigint NOT NULL,
    customizations       text[] NOT NULL DEFAULT '{}',
    special_instructions text NOT NULL DEFAULT '',
    PRIMARY KEY (order_id, position)
);

CREATE TABLE orders.timeline (
    order_id   text NOT NULL,
    seq        integer NOT NULL CHECK (seq >= 1),
    status     text NOT NULL,
    actor      text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    at         timestamptz NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- A customer's idempotency key: which order it made, for which request body.
CREATE TABLE orders.idempotency_keys (
    customer_id  text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    order_id     text NOT NULL,
    -- 'pending' while the request is being served; 'done' once the order is committed.
    state        text NOT NULL CHECK (state IN ('pending', 'done')),
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, key)
);

CREATE TABLE orders.ratings (
    order_id             text PRIMARY KEY,
    customer_id          text NOT NULL,
    restaurant_id        text NOT NULL,
    restaurant_rating    smallint NOT NULL CHECK (restaurant_rating BETWEEN 1 AND 5),
    restaurant_review    text NOT NULL DEFAULT '',
    driver_id            text NOT NULL DEFAULT '',
    driver_rating        smallint NOT NULL DEFAULT 0 CHECK (driver_rating BETWEEN 0 AND 5),
    restaurant_forwarded boolean NOT NULL DEFAULT false,
    driver_forwarded     boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ratings_driver_unforwarded ON orders.ratings (order_id)
    WHERE driver_rating > 0 AND NOT driver_forwarded;

-- The sandbox processor's ledger (servers/order/sandbox.py).
CREATE TABLE orders.sandbox_payments (
    payment_id     text PRIMARY KEY,
    auth_key       text NOT NULL UNIQUE,
    payment_method text NOT NULL,
    amount_minor   bigint NOT NULL,
    currency       text NOT NULL,
    status         text NOT NULL,
    decline_code   text NOT NULL DEFAULT '',
    captured_minor bigint NOT NULL DEFAULT 0,
    refunded_minor bigint NOT NULL DEFAULT 0,
    reference      text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders.sandbox_operations (
    op_key       text PRIMARY KEY,
    payment_id   text NOT NULL,
    op           text NOT NULL,
    amount_minor bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS orders.outbox (
    id           bigserial   PRIMARY KEY,
    event_id     text        NOT NULL UNIQUE,
    subject      text        NOT NULL,
    payload      bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending ON orders.outbox (id) WHERE published_at IS NULL;
CREATE TABLE IF NOT EXISTS orders.inbox (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

