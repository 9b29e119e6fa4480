-- A first-order-only promo is used once per customer, even when placements race: the
-- orders a customer has placed are counted from their events, which come after the
-- placement, so the count alone let concurrent first orders each take the discount.
-- A held or confirmed redemption of any first-order code is now unique per customer,
-- written in the same transaction that takes the use (servers/pricing/store.py, redeem).
-- Rows from before this column are not marked (they cannot clash).
ALTER TABLE pricing.promo_redemptions
    ADD COLUMN IF NOT EXISTS first_order boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX IF NOT EXISTS promo_redemptions_first_order_once
    ON pricing.promo_redemptions (customer_id) WHERE first_order AND state <> 'released';
