-- The Catalog: restaurants, their delivery zones, menus and reviews.
CREATE SCHEMA IF NOT EXISTS catalog;

CREATE TABLE catalog.restaurants (
    restaurant_id       text PRIMARY KEY,
    name                text NOT NULL,
    cuisines            text[] NOT NULL DEFAULT '{}',
    address             jsonb NOT NULL,
    lat                 double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon                 double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    -- geohash-9 of (lat, lon): its first 4 characters are the Redis region.
    geohash             text NOT NULL,
    time_zone           text NOT NULL,
    -- [[iso_weekday, open_minute, close_minute], ...]
    hours               jsonb NOT NULL DEFAULT '[]',
    -- [[YYYY-MM-DD, reason], ...]
    closures            jsonb NOT NULL DEFAULT '[]',
    price_level         smallint NOT NULL CHECK (price_level BETWEEN 1 AND 4),
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    minimum_order_minor bigint NOT NULL CHECK (minimum_order_minor >= 0),
    avg_prep_time_min   integer NOT NULL CHECK (avg_prep_time_min > 0),
    image_url           text NOT NULL DEFAULT '',
    paused              boolean NOT NULL DEFAULT false,
    max_delivery_miles  double precision NOT NULL CHECK (max_delivery_miles > 0),
    owner_id            text NOT NULL DEFAULT '',
    -- The rating is rating_sum / review_count, kept up to date review by review.
    rating_sum          bigint NOT NULL DEFAULT 0 CHECK (rating_sum >= 0),
    review_count        integer NOT NULL DEFAULT 0 CHECK (review_count >= 0),
    order_count         bigint NOT NULL DEFAULT 0,
    -- +1 on every write of the row: orders the writes to the search index.
    version             bigint NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    menu_updated_at     timestamptz
);
CREATE INDEX restaurants_by_geohash ON catalog.restaurants (geohash text_pattern_ops);

CREATE TABLE catalog.delivery_zones (
    restaurant_id       text NOT NULL REFERENCES catalog.restaurants ON DELETE CASCADE,
    zone_id             text NOT NULL,
    position            integer NOT NULL,
    -- The outer ring in 1e-7 degrees: [lat0, lon0, lat1, lon1, ...], not closed.
    vertices_e7         bigint[] NOT NULL CHECK (cardinality(vertices_e7) >= 6),
    delivery_fee_minor  bigint NOT NULL CHECK (delivery_fee_minor >= 0),
    minimum_order_minor bigint NOT NULL CHECK (minimum_order_minor >= 0),
    PRIMARY KEY (restaurant_id, zone_id)
);

CREATE TABLE catalog.menu_categories (
    restaurant_id text NOT NULL REFERENCES catalog.restaurants ON DELETE CASCADE,
    category_id   text NOT NULL,
    position      integer NOT NULL,
    name          text NOT NULL,
    PRIMARY KEY (restaurant_id, category_id)
);

CREATE TABLE catalog.menu_items (
    restaurant_id  text NOT NULL,
    item_id        text NOT NULL,
    category_id    text NOT NULL,
    position       integer NOT NULL,
    name           text NOT NULL,
    description    text NOT NULL DEFAULT '',
    price_minor    bigint NOT NULL CHECK (price_minor >= 0),
    available      boolean NOT NULL,
    image_url      text NOT NULL DEFAULT '',
    -- [{"id", "name", "min", "max", "options": [{"id", "name", "delta", "available"}]}]
    customizations jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (restaurant_id, item_id),
    FOREIGN KEY (restaurant_id, category_id)
        REFERENCES catalog.menu_categories ON DELETE CASCADE
);

CREATE TABLE catalog.reviews (
    order_id      text PRIMARY KEY,
    restaurant_id text NOT NULL REFERENCES catalog.restaurants ON DELETE CASCADE,
    customer_id   text NOT NULL,
    rating        smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    text          text NOT NULL DEFAULT '',
    create_time   timestamptz NOT NULL
);
CREATE INDEX reviews_newest_first
    ON catalog.reviews (restaurant_id, create_time DESC, order_id DESC);
