-- The Notification service: recipients' preferences and push subscriptions, the inbox
-- (one row per event and recipient), and one delivery per event, recipient and
-- channel, keyed so that a redelivered event or a restart never makes a second one.
CREATE SCHEMA IF NOT EXISTS notify;

CREATE TABLE notify.preferences (
    recipient           text PRIMARY KEY,
    email               text NOT NULL DEFAULT '',
    phone               text NOT NULL DEFAULT '',
    locale              text NOT NULL DEFAULT 'en',
    -- event type -> channel names; an event type not here takes its defaults
    events              jsonb NOT NULL DEFAULT '{}',
    quiet_start_minute  integer NOT NULL DEFAULT 0 CHECK (quiet_start_minute BETWEEN 0 AND 1439),
    quiet_end_minute    integer NOT NULL DEFAULT 0 CHECK (quiet_end_minute BETWEEN 0 AND 1439),
    utc_offset_minutes  integer NOT NULL DEFAULT 0 CHECK (utc_offset_minutes BETWEEN -840 AND 840),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE notify.push_subscriptions (
    subscription_id  text PRIMARY KEY,
    recipient        text NOT NULL,
    endpoint         text NOT NULL UNIQUE,
    p256dh           text NOT NULL,
    auth             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- set when the push service said the subscription is gone (404/410)
    gone_at          timestamptz
);
CREATE INDEX push_subscriptions_recipient ON notify.push_subscriptions (recipient);

-- The inbox. (recipient, dedupe_key) is unique: one offer notice per offer, one notice of
-- a status per order (flapping statuses are coalesced into the first).
CREATE TABLE notify.notifications (
    notification_id  text PRIMARY KEY,
    event_id         text NOT NULL,
    recipient        text NOT NULL,
    dedupe_key       text NOT NULL,
    event_type       text NOT NULL,
    order_id         text NOT NULL DEFAULT '',
    title            text NOT NULL,
    body             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    read_at          timestamptz,
    UNIQUE (recipient, dedupe_key)
);
CREATE INDEX notifications_inbox ON notify.notifications (recipient, created_at DESC);
CREATE INDEX notifications_unread ON notify.notifications (recipient) WHERE read_at IS NULL;

-- One channel's message of a notification. delivery_id is the idempotency key of
-- (event, recipient, channel), recorded before anything is sent.
CREATE TABLE notify.deliveries (
    delivery_id      text PRIMARY KEY,
    notification_id  text NOT NULL REFERENCES notify.notifications ON DELETE CASCADE,
    recipient        text NOT NULL,
    event_type       text NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('in_app', 'email', 'push', 'sms')),
    state            text NOT NULL
                     CHECK (state IN ('queued', 'sending', 'sent', 'delivered', 'failed', 'skipped')),
    destination      text NOT NULL DEFAULT '',
    -- what is sent, rendered when recorded (subject, text, html, push payload)
    message          jsonb NOT NULL DEFAULT '{}',
    attempts         integer NOT NULL DEFAULT 0,
    reason           text NOT NULL DEFAULT '',
    next_at          timestamptz NOT NULL DEFAULT now(),
    -- while 'sending': a sender holds it until then; past it the send is in doubt
    lease_until      timestamptz,
    dead             boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_due ON notify.deliveries (next_at) WHERE state IN ('queued', 'sending');
CREATE INDEX deliveries_notification ON notify.deliveries (notification_id);
CREATE INDEX deliveries_dead ON notify.deliveries (updated_at DESC) WHERE dead;

-- The VAPID key pair every replica signs Web Push with (development: made at first start).
CREATE TABLE notify.keys (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Who each order concerns, from its events: the customer a dispatch event does not name,
-- and the driver it was last assigned to (who hears of a reassignment, whose event no
-- longer names them).
CREATE TABLE notify.orders (
    order_id       text PRIMARY KEY,
    customer_id    text NOT NULL DEFAULT '',
    restaurant_id  text NOT NULL DEFAULT '',
    driver_id      text NOT NULL DEFAULT '',
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_updated ON notify.orders (updated_at);
