-- Location history: every accepted fix, partitioned by day of the device time.
-- Partitions are created ahead by the service (history.py) and dropped after the
-- retention period; there is no default partition, so a row for a day without a
-- partition fails loudly instead of piling up somewhere nobody drops.
CREATE SCHEMA IF NOT EXISTS location;

CREATE TABLE location.history (
    driver_id   text             NOT NULL,
    ts          timestamptz      NOT NULL,
    lat         double precision NOT NULL,
    lon         double precision NOT NULL,
    heading     real             NOT NULL,
    speed_mps   real             NOT NULL,
    accuracy_m  real             NOT NULL,
    order_id    text             NOT NULL DEFAULT '',
    received_at timestamptz      NOT NULL
) PARTITION BY RANGE (ts);

-- A driver's path between two times is the one query this table serves.
CREATE INDEX history_driver_ts ON location.history (driver_id, ts);
