-- Every estimate of an order's delivery time at the stages of its life (placement,
-- confirmation, driver assignment, pickup), kept as given, so the ETA's error and
-- its interval's coverage can be measured per stage once the order is delivered.
CREATE TABLE IF NOT EXISTS orders.eta_estimates (
    order_id                text NOT NULL,
    stage                   text NOT NULL
                            CHECK (stage IN ('placement', 'confirmation', 'assignment', 'pickup')),
    at                      timestamptz NOT NULL,
    estimated_delivery_time timestamptz NOT NULL,
    lower_time              timestamptz,
    upper_time              timestamptz,
    model_version           text NOT NULL DEFAULT '',
    PRIMARY KEY (order_id, stage)
);
