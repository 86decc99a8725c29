-- Fix quality and device proximity (contract part 2, "Fix quality" and "Device-to-device proximity").

-- Why a fix filter set a stored fix aside ('inaccurate', 'jump', 'duplicate_position'); NULL for a good fix.
-- Flagged fixes are kept (they are what the device said) but left out of live position, fence state,
-- trails (unless asked), stops, trips and reports. Adding a nullable column without a default rewrites
-- no partition.
ALTER TABLE fixes ADD COLUMN flag text;

-- near/far events name the other device of the pair; their fence_id is ''.
ALTER TABLE events ADD COLUMN other_device text;

-- Per `on: near` rule, the pairs of devices that are near now (device_a < device_b). A row is inserted by
-- the batch that fires `near` and deleted by the one that fires `far`, in the batch's transaction and
-- conditionally (ON CONFLICT DO NOTHING / DELETE ... RETURNING), so that when two processes see the same
-- approach at once only one of them stores the event.
CREATE TABLE near_pairs (
    rule_id     text NOT NULL,
    device_a    text NOT NULL,
    device_b    text NOT NULL,
    since_ts    bigint NOT NULL,          -- ms; the fix that fired `near`
    PRIMARY KEY (rule_id, device_a, device_b),
    CHECK (device_a < device_b)
);
CREATE INDEX near_pairs_b ON near_pairs (device_b);
CREATE INDEX near_pairs_a ON near_pairs (device_a);
CREATE INDEX events_other ON events (other_device) WHERE other_device IS NOT NULL;
