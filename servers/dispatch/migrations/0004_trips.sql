-- Trips: a driver may carry up to K orders at once (bundled or stacked orders).
-- The rule "a driver carries at most one order" (assignments_one_per_driver) becomes
-- "an order is carried by at most one driver (the primary key: one row, one driver_id),
-- and a driver carries at most K": K lives in fleet.trip_limits and a trigger enforces
-- it. The trigger takes a transaction-scoped advisory lock on the driver before it
-- counts, so two replicas giving the same driver an order at once are serialised: the
-- second counts after the first committed and, at K, fails with a check violation
-- that rolls its whole step back.
DROP INDEX IF EXISTS fleet.assignments_one_per_driver;

CREATE TABLE fleet.trip_limits (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    max_orders  integer NOT NULL DEFAULT 3 CHECK (max_orders BETWEEN 1 AND 10)
);
INSERT INTO fleet.trip_limits DEFAULT VALUES;

-- The trip an order rides in (empty: a trip of its own).
ALTER TABLE fleet.assignments ADD COLUMN trip_id text NOT NULL DEFAULT '';

CREATE INDEX assignments_held_by_driver ON fleet.assignments (driver_id)
    WHERE status IN ('assigned', 'at_restaurant', 'picked_up', 'at_customer');

CREATE FUNCTION fleet.driver_load_within_k() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    k integer;
    held integer;
BEGIN
    IF NEW.driver_id = '' OR NEW.status NOT IN ('assigned', 'at_restaurant', 'picked_up',
                                                'at_customer') THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.driver_id = NEW.driver_id
       AND OLD.status IN ('assigned', 'at_restaurant', 'picked_up', 'at_customer') THEN
        RETURN NEW;  -- a step along a trip already counted
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('fleet.driver_load'), hashtext(NEW.driver_id));
    SELECT max_orders INTO k FROM fleet.trip_limits;
    SELECT count(*) INTO held FROM fleet.assignments
        WHERE driver_id = NEW.driver_id AND order_id <> NEW.order_id
          AND status IN ('assigned', 'at_restaurant', 'picked_up', 'at_customer');
    IF held >= coalesce(k, 1) THEN
        RAISE EXCEPTION 'driver % carries % order(s) already (at most %)', NEW.driver_id,
            held, coalesce(k, 1) USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER assignments_driver_load
    BEFORE INSERT OR UPDATE OF status, driver_id ON fleet.assignments
    FOR EACH ROW EXECUTE FUNCTION fleet.driver_load_within_k();
