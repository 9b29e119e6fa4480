-- Why an order was offered to a driver: the score's parts, the trip it joins, the
-- expected times (JSON of matching.Proposal.why), sent on the offer and its events.
ALTER TABLE fleet.offers ADD COLUMN IF NOT EXISTS why text NOT NULL DEFAULT '';
