-- The delivery time promised at placement, kept as it was: estimated_delivery_time is
-- moved on by Dispatch's later estimates (AssignDriver), but the ETA-accuracy SLO
-- (foodmesh_eta_error_seconds, observed on delivery) measures the promise the
-- customer was given. NULL for orders placed before this column: their
-- estimated_delivery_time stands in.
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS promised_delivery_time timestamptz;
