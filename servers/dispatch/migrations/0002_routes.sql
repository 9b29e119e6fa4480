-- The route each driver was last sent for their active leg (a foodmesh.v1.RouteUpdate),
-- so that a reconnect to any replica resends it and rerouting there goes on against the
-- same route. One row per driver, replaced leg by leg: the table stays as small as the
-- fleet. A row whose order and leg are not the driver's active ones is stale and ignored.
CREATE TABLE fleet.routes (
    driver_id  text        PRIMARY KEY,
    order_id   text        NOT NULL,
    leg        smallint    NOT NULL,
    route      bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
