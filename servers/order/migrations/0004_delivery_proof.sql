-- Proof of delivery. Each order gets a 4-digit PIN at placement, shown only to its
-- customer, which the driver must give (through DispatchService.DriverSession) to mark
-- it delivered; pin_attempts counts wrong ones, and at 5 the PIN is locked (ops decide).
-- An order placed with leave_at_door may be proven with a photo reference instead.
-- Orders placed before this column have no PIN ('') and only ops can close them.
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS delivery_pin text NOT NULL DEFAULT '';
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS pin_attempts smallint NOT NULL DEFAULT 0;
ALTER TABLE orders.orders ADD COLUMN IF NOT EXISTS leave_at_door boolean NOT NULL DEFAULT false;
