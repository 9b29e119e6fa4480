-- Text search and real popularity.
-- Popularity: recent orders, decayed. Kept in log space (ln of the sum of
-- exp((t_i - epoch) / tau) over the restaurant's orders), so it never overflows and
-- comparing two restaurants compares their decayed counts at any instant.
ALTER TABLE catalog.restaurants
    ADD COLUMN popularity double precision NOT NULL DEFAULT 0;

-- Each order event counted once (consumers dedupe by event id), and the orders of the
-- last 30 days per restaurant (order_count).
CREATE TABLE catalog.order_events (
    event_id      text PRIMARY KEY,
    restaurant_id text NOT NULL,
    order_id      text NOT NULL,
    placed_at     timestamptz NOT NULL
);
CREATE INDEX order_events_by_restaurant ON catalog.order_events (restaurant_id, placed_at);

-- Search documents now carry dishes and popularity: move every version so that the
-- index rebuild that follows (a new built key) rewrites every document.
UPDATE catalog.restaurants SET version = version + 1;
