-- When the kitchen marked the food ready (the Order service's ``ready_for_pickup``):
-- a driver's wait for the food is measured to it, the counter's handover apart.
ALTER TABLE fleet.assignments ADD COLUMN IF NOT EXISTS food_ready_at timestamptz;
