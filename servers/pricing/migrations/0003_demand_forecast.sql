-- The demand forecast's history (servers/pricing/forecast.py): orders placed per geohash-5
-- cell per five-minute bucket, counted once per placed event (in the inbox's transaction,
-- so a redelivered event never counts twice), and every version of the conditions with
-- when it took effect, so a model learns from what was known at each moment.
CREATE TABLE IF NOT EXISTS pricing.demand_counts (
    cell    text NOT NULL,
    bucket  timestamptz NOT NULL,
    orders  integer NOT NULL CHECK (orders >= 0),
    PRIMARY KEY (cell, bucket)
);
CREATE INDEX IF NOT EXISTS demand_counts_bucket ON pricing.demand_counts (bucket);

CREATE TABLE IF NOT EXISTS pricing.condition_history (
    version  bigint PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    events   jsonb NOT NULL,
    weather  jsonb NOT NULL
);
