-- Whether the restaurant was warned that an order's confirmation deadline is near
-- (``orders.v1.confirm_due_soon``, committed with this flag: once per order).
ALTER TABLE orders.confirm_deadlines ADD COLUMN IF NOT EXISTS warned boolean NOT NULL DEFAULT false;
