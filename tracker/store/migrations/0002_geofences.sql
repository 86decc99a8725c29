-- Geofence state, events and the webhook outbox. All three are written in the same transaction as the
-- fixes that caused them, so an ack means the events are stored and a restart neither loses nor repeats them.

-- Per (device, rule, fence): the state machine of one rule on one fence for one device. rule_id '' is the
-- rule-independent presence (confirm 1) that answers "who is inside now". A missing row means outside.
CREATE TABLE fence_state (
    device_id   text NOT NULL,
    rule_id     text NOT NULL,
    fence_id    text NOT NULL,
    inside      boolean NOT NULL,
    since_ts    bigint NOT NULL,          -- ms; the fix that made it inside (valid while inside)
    pending     smallint NOT NULL DEFAULT 0,  -- consecutive fixes disagreeing with `inside` (confirm_fixes)
    fired       boolean NOT NULL DEFAULT false,  -- dwell/speeding already fired in this visit
    PRIMARY KEY (device_id, rule_id, fence_id)
);
CREATE INDEX fence_state_inside ON fence_state (fence_id) WHERE rule_id = '' AND inside;

CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type        text NOT NULL,
    rule_id     text NOT NULL,
    fence_id    text NOT NULL,
    device_id   text NOT NULL,
    fleet       text NOT NULL,
    ts          bigint NOT NULL,          -- ms; the fix that caused it
    lat         float8 NOT NULL,
    lon         float8 NOT NULL,
    created     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_device ON events (device_id, id);
CREATE INDEX events_fence ON events (fence_id, id);
CREATE INDEX events_fleet ON events (fleet, id);
CREATE INDEX events_ts ON events (ts);

-- One row per (event, webhook URL). A worker POSTs pending rows whose next_at has come, with backoff;
-- after the last attempt a row becomes 'dead' (kept for inspection).
CREATE TABLE webhook_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    url         text NOT NULL,
    state       text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts    integer NOT NULL DEFAULT 0,
    next_at     timestamptz NOT NULL DEFAULT now(),
    last_error  text,
    delivered   timestamptz
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_at) WHERE state = 'pending';
