-- The conditions of the restaurant's geohash-5 cell when the order was placed, as
-- Pricing's surge gave them: free drivers there, the weather kind in force, the event
-- factor. Sent with every ETA estimate of the order and read back for training, so the
-- model learns from what it is later given (double precision: the factor reads back as
-- sent, 1.2 and not 1.2000000476). NULL: unknown (Pricing did not answer).
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS eta_drivers_nearby int;
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS eta_weather smallint;
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS eta_event_multiplier double precision;
