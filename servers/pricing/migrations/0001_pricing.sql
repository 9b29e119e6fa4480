-- The Pricing service: promo codes and their redemptions, the customers' order counts
-- (first-order promos), the events and weather that move surge, surge history, and
-- the inbox that dedupes the order events it consumes. Quotes and the live surge
-- cache live in Redis (they expire within minutes).
CREATE SCHEMA IF NOT EXISTS pricing;

CREATE TABLE pricing.promo_codes (
    code                text PRIMARY KEY CHECK (code ~ '^[A-Z0-9_-]{2,32}$'),
    kind                text NOT NULL CHECK (kind IN ('percent', 'fixed')),
    percent_bps         integer NOT NULL DEFAULT 0 CHECK (percent_bps BETWEEN 0 AND 10000),
    amount_off_minor    bigint NOT NULL DEFAULT 0 CHECK (amount_off_minor >= 0),
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    min_subtotal_minor  bigint NOT NULL DEFAULT 0 CHECK (min_subtotal_minor >= 0),
    max_discount_minor  bigint NOT NULL DEFAULT 0 CHECK (max_discount_minor >= 0),
    first_order_only    boolean NOT NULL DEFAULT false,
    per_customer_limit  integer NOT NULL DEFAULT 0 CHECK (per_customer_limit >= 0),
    total_limit         integer NOT NULL DEFAULT 0 CHECK (total_limit >= 0),
    start_at            timestamptz,
    end_at              timestamptz,
    regions             text[] NOT NULL DEFAULT '{}',
    -- Uses counted now (held + confirmed redemptions), kept with each change.
    uses                integer NOT NULL DEFAULT 0 CHECK (uses >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- One use of a code. Keyed by the order id (or "quote:<id>" when the caller has no
-- order id yet); held at placement, confirmed by the order's placed event, released
-- by its cancellation (or when a hold is never confirmed: the placement failed).
CREATE TABLE pricing.promo_redemptions (
    redemption_key  text PRIMARY KEY,
    code            text NOT NULL REFERENCES pricing.promo_codes (code) ON DELETE CASCADE,
    customer_id     text NOT NULL,
    order_id        text NOT NULL DEFAULT '',
    state           text NOT NULL CHECK (state IN ('held', 'confirmed', 'released')),
    release_reason  text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX promo_redemptions_customer ON pricing.promo_redemptions (code, customer_id)
    WHERE state <> 'released';
CREATE INDEX promo_redemptions_order ON pricing.promo_redemptions (order_id) WHERE order_id <> '';
CREATE INDEX promo_redemptions_held ON pricing.promo_redemptions (created_at)
    WHERE state = 'held';

-- Orders each customer has placed (from orders.v1 events), for first-order-only codes.
CREATE TABLE pricing.customer_orders (
    customer_id text NOT NULL,
    order_id    text NOT NULL,
    cancelled   boolean NOT NULL DEFAULT false,
    placed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, order_id)
);
CREATE INDEX customer_orders_order ON pricing.customer_orders (order_id);

-- The events and weather in force (SetConditions replaces them all, bumping the version).
CREATE TABLE pricing.condition_events (
    event_id    text PRIMARY KEY,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    attendance  bigint NOT NULL CHECK (attendance >= 0),
    start_at    timestamptz,
    end_at      timestamptz
);
CREATE TABLE pricing.condition_weather (
    area  text PRIMARY KEY,
    kind  integer NOT NULL
);
CREATE TABLE pricing.condition_version (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    version     bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO pricing.condition_version (id, version) VALUES (true, 0);

-- One point per surge computation of a cell (at most one a minute per cell).
CREATE TABLE pricing.surge_history (
    cell                text NOT NULL,
    at                  timestamptz NOT NULL,
    multiplier          double precision NOT NULL,
    demand              bigint NOT NULL,
    supply              bigint NOT NULL,
    ratio               double precision NOT NULL,
    event_multiplier    double precision NOT NULL,
    weather_multiplier  double precision NOT NULL,
    reason              text NOT NULL,
    fallback            boolean NOT NULL,
    PRIMARY KEY (cell, at)
);
CREATE INDEX surge_history_at ON pricing.surge_history (at);

CREATE TABLE pricing.inbox (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
