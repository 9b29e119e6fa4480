-- No driver found, driver lost after pickup (servers/dispatch/escalation.py).

-- When an order was escalated for want of a driver (NULL: not for that), and when the
-- driver carrying it went silent after pickup (NULL: not lost).
ALTER TABLE fleet.assignments ADD COLUMN IF NOT EXISTS no_driver_at timestamptz;
ALTER TABLE fleet.assignments ADD COLUMN IF NOT EXISTS driver_lost_at timestamptz;

-- Alerts owed to the Order service (FlagOrder), recorded with the change that raises
-- them and sent by a loop until done, oldest first per order.
CREATE TABLE IF NOT EXISTS fleet.order_flags (
    id                bigserial PRIMARY KEY,
    order_id          text NOT NULL,
    -- 'no_driver', 'driver_lost' or '' (clear the order's alert).
    kind              text NOT NULL,
    reason            text NOT NULL DEFAULT '',
    driver_id         text NOT NULL DEFAULT '',
    lat               double precision,
    lon               double precision,
    bonus_minor       bigint NOT NULL DEFAULT 0,
    currency          text NOT NULL DEFAULT 'USD',
    free_cancel_after timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    done_at           timestamptz
);
CREATE INDEX IF NOT EXISTS order_flags_pending ON fleet.order_flags (id) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS assignments_waiting ON fleet.assignments (created_at)
    WHERE status IN ('pending', 'escalated') AND no_driver_at IS NULL;
