-- When the driver carrying the food was first under 3 minutes from the customer:
-- ``dispatch.v1.arriving`` commits with it, once per order.
ALTER TABLE fleet.assignments ADD COLUMN IF NOT EXISTS arriving_at timestamptz;
