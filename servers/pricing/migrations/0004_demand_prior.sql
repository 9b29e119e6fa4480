-- A synthetic demand history per geohash-5 cell (a prior), written at a city's launch from the
-- simulator's model of its demand, so the forecast has a trained model from the first minutes.
-- Kept apart from pricing.demand_counts (what the city really ordered): the forecaster uses a
-- prior bucket only before the first real one, so the city's own orders replace it by time
-- window and it ages out of the training window like any history.
CREATE TABLE IF NOT EXISTS pricing.demand_prior (
    cell         text NOT NULL,
    bucket       timestamptz NOT NULL,
    orders       integer NOT NULL CHECK (orders >= 0),
    imported_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cell, bucket)
);
CREATE INDEX IF NOT EXISTS demand_prior_imported ON pricing.demand_prior (imported_at);
