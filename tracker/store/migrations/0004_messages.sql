-- Messages to devices (contract: `message` on /device, viewer `send`, HTTP). A row is stored before any
-- delivery, so a message survives a restart; it is delivered in id order until the device acks it.
CREATE TABLE messages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    body        json NOT NULL,          -- json, not jsonb: the body goes out exactly as it came in
    sender      text NOT NULL,
    created_ts  bigint NOT NULL,        -- ms since the epoch
    sent_ts     bigint,                 -- last time it was handed to a connection of the device
    attempts    integer NOT NULL DEFAULT 0,
    acked_ts    bigint                  -- when the device acked it; NULL while pending
);
CREATE INDEX messages_device ON messages (device_id, id);
CREATE INDEX messages_pending ON messages (device_id, id) WHERE acked_ts IS NULL;
