-- The Dispatch service: drivers and their stats, assignments (one per order), offers,
-- ratings, the queue of calls owed to the Order service, and the outbox/inbox.
-- The invariants of matching live here as constraints, so that no replica, however
-- late or confused about leadership, can break them:
--   * a driver holds at most one open offer        (offers_one_open_per_driver)
--   * an order has at most one open offer          (offers_one_open_per_order)
--   * an order is carried by at most one driver    (assignments primary key: one row,
--     one driver_id) and a driver carries at most one order (assignments_one_per_driver).
CREATE SCHEMA IF NOT EXISTS fleet;

CREATE TABLE fleet.drivers (
    driver_id    text PRIMARY KEY,
    name         text NOT NULL DEFAULT '',
    vehicle_type smallint NOT NULL DEFAULT 3,
    vehicle      text NOT NULL DEFAULT '',
    photo_url    text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'offline'
                 CHECK (status IN ('offline', 'available', 'paused', 'offered', 'on_delivery')),
    region       text NOT NULL DEFAULT '',
    -- The session that owns the driver now; a second session replaces it.
    session_id   text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fleet.stats (
    driver_id     text PRIMARY KEY REFERENCES fleet.drivers (driver_id) ON DELETE CASCADE,
    rating_sum    bigint NOT NULL DEFAULT 0,
    rating_count  bigint NOT NULL DEFAULT 0,
    completed     bigint NOT NULL DEFAULT 0,
    -- The driver's answers to their last 20 offers, oldest first (true = accepted).
    recent_offers boolean[] NOT NULL DEFAULT '{}'
);

CREATE TABLE fleet.ratings (
    order_id  text PRIMARY KEY,
    driver_id text NOT NULL,
    rating    smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    rated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE fleet.assignments (
    order_id        text PRIMARY KEY,
    region          text NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'offered', 'assigned',
                        'at_restaurant', 'picked_up', 'at_customer', 'delivered', 'escalated',
                        'cancelled')),
    driver_id       text NOT NULL DEFAULT '',
    pickup_lat      double precision NOT NULL,
    pickup_lon      double precision NOT NULL,
    pickup_label    text NOT NULL DEFAULT '',
    dropoff_lat     double precision NOT NULL,
    dropoff_lon     double precision NOT NULL,
    dropoff_label   text NOT NULL DEFAULT '',
    ready_at        timestamptz NOT NULL,
    offers_made     integer NOT NULL DEFAULT 0,
    excluded        text[] NOT NULL DEFAULT '{}',
    radius_miles    double precision NOT NULL DEFAULT 5,
    -- Back at the front of the pool (its driver was lost before pickup).
    front           boolean NOT NULL DEFAULT false,
    tip_minor       bigint NOT NULL DEFAULT 0,
    currency        text NOT NULL DEFAULT 'USD',
    est_pickup_at   timestamptz,
    est_delivery_at timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CHECK (status NOT IN ('assigned', 'at_restaurant', 'picked_up', 'at_customer', 'delivered')
           OR driver_id <> '')
);
CREATE UNIQUE INDEX assignments_one_per_driver ON fleet.assignments (driver_id)
    WHERE status IN ('assigned', 'at_restaurant', 'picked_up', 'at_customer');
CREATE INDEX assignments_pool ON fleet.assignments (region, created_at)
    WHERE status IN ('pending', 'escalated');
CREATE INDEX assignments_by_status ON fleet.assignments (status, created_at);

CREATE TABLE fleet.offers (
    offer_id       text PRIMARY KEY,
    order_id       text NOT NULL REFERENCES fleet.assignments (order_id),
    driver_id      text NOT NULL,
    attempt        integer NOT NULL CHECK (attempt >= 1),
    status         text NOT NULL DEFAULT 'open'
                   CHECK (status IN ('open', 'accepted', 'rejected', 'expired', 'withdrawn',
                                     'revoked')),
    reason         text NOT NULL DEFAULT '',
    earnings_minor bigint NOT NULL,
    currency       text NOT NULL,
    distance_miles double precision NOT NULL,
    score          double precision NOT NULL,
    created_at     timestamptz NOT NULL,
    expire_at      timestamptz NOT NULL,
    answered_at    timestamptz,
    UNIQUE (order_id, attempt)
);
CREATE UNIQUE INDEX offers_one_open_per_driver ON fleet.offers (driver_id) WHERE status = 'open';
CREATE UNIQUE INDEX offers_one_open_per_order ON fleet.offers (order_id) WHERE status = 'open';
CREATE UNIQUE INDEX offers_one_accepted_per_order ON fleet.offers (order_id)
    WHERE status = 'accepted';
CREATE INDEX offers_open_expiry ON fleet.offers (expire_at) WHERE status = 'open';

-- What the Order service must be told (AssignDriver), committed with the change that
-- decided it and sent (retried) by a background pass, in id order per order.
CREATE TABLE fleet.order_calls (
    id              bigserial PRIMARY KEY,
    order_id        text NOT NULL,
    driver_id       text NOT NULL DEFAULT '',
    reason          text NOT NULL DEFAULT '',
    est_delivery_at timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz
);
CREATE INDEX order_calls_pending ON fleet.order_calls (id) WHERE done_at IS NULL;

CREATE TABLE IF NOT EXISTS fleet.outbox (
    id           bigserial   PRIMARY KEY,
    event_id     text        NOT NULL UNIQUE,
    subject      text        NOT NULL,
    payload      bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending ON fleet.outbox (id) WHERE published_at IS NULL;
CREATE TABLE IF NOT EXISTS fleet.inbox (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
