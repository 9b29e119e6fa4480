-- Why an order was offered to a driver: the score's parts, the trip it joins, the
-- expected times (JSON of matching.Proposal.why), sent on the offer and its events.
ALTER TABLE fleet.offers ADD COLUMN IF NOT EXISTS why text NOT NULL DEFAULT '';

-- Kitchen-timed offers: an order held with a driver planned is released at this time;
-- it is "without a driver" (escalation) only from then. NULL: not held.
ALTER TABLE fleet.assignments ADD COLUMN IF NOT EXISTS held_until timestamptz;
