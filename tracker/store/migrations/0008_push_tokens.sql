-- The push token an app registers for its device (Traccar Client POSTs `id` and `notificationToken`
-- with no position), kept as Traccar keeps it: one per device, the newest replacing the last, so that a
-- push service can wake the app. Gone with the device.
CREATE TABLE push_tokens (
    device_id   text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    token       text NOT NULL,
    app         text NOT NULL,          -- which app registered it ('traccar-client')
    updated_ts  bigint NOT NULL         -- ms since the epoch
);
