-- When a pending idempotency claim may be taken over by a retry of the same request:
-- its request's deadline plus a margin (servers/order/store.py, claim_key). A claim of a
-- process that died is then retried within seconds, not after a fixed minute. NULL (rows
-- claimed before this column) means claimed_at + 60 s.
ALTER TABLE orders.idempotency_keys ADD COLUMN IF NOT EXISTS expires_at timestamptz;
