-- Trips (contract part 2, "Trips"): a device on its way to a destination, with its status and ETA.
-- Status changes caused by fixes are written in the same transaction as the fixes (tracker.store.trips),
-- compare-and-set on `status`, so each change is stored once, whichever process evaluated it.
CREATE TABLE trips (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id       text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    fleet           text NOT NULL,
    status          text NOT NULL CHECK (status IN ('started', 'approaching', 'arrived', 'completed',
                                                    'cancelled', 'expired')),
    dest_lat        float8,                 -- a point destination (with radius_m), or
    dest_lon        float8,
    radius_m        float8 NOT NULL,
    fence_id        text,                   -- a fence of the geofence engine
    approach_m      float8 NOT NULL,
    ref             text,                   -- the caller's order id
    notify          text[] NOT NULL DEFAULT '{}',  -- webhook URLs of this trip's events
    created_by      text NOT NULL,
    created_ts      bigint NOT NULL,        -- ms since the epoch
    expires_ts      bigint NOT NULL,        -- a trip not arrived by then becomes 'expired'
    approaching_ts  bigint,
    arrived_ts      bigint,
    ended_ts        bigint,                 -- completed, cancelled or expired
    eta_ts          bigint,                 -- as of progress_ts; NULL while the speed is unknown
    remaining_m     float8,
    progress_ts     bigint,                 -- the fix the stored eta_ts and remaining_m come from
    speed_mps       float8,                 -- the device's smoothed moving speed at progress_ts
    -- Share links (filled by the share-link feature): asked for in the POST, the link's lifetime, and
    -- the hash of its token (the token itself is never stored).
    share           boolean NOT NULL DEFAULT false,
    share_ttl_s     integer,
    share_hash      bytea UNIQUE,
    share_expires_ts bigint,
    share_revoked_ts bigint,
    CHECK ((fence_id IS NULL) = (dest_lat IS NOT NULL AND dest_lon IS NOT NULL))
);
CREATE INDEX trips_device ON trips (device_id, id);
CREATE INDEX trips_fleet ON trips (fleet, id);
CREATE INDEX trips_open ON trips (device_id) WHERE status IN ('started', 'approaching', 'arrived');
CREATE INDEX trips_expiry ON trips (expires_ts) WHERE status IN ('started', 'approaching');

-- Each status change. Ids come from the geofence events' sequence, so that one outbox orders both kinds.
CREATE TABLE trip_events (
    id          bigint PRIMARY KEY DEFAULT nextval(pg_get_serial_sequence('events', 'id')::regclass),
    trip_id     bigint NOT NULL REFERENCES trips (id) ON DELETE CASCADE,
    device_id   text NOT NULL,
    fleet       text NOT NULL,
    status      text NOT NULL,
    ts          bigint NOT NULL,            -- ms; the fix (or the request) that caused it
    eta_ts      bigint,
    remaining_m float8,
    ref         text,
    created     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trip_events_trip ON trip_events (trip_id, id);

-- The outbox carries geofence events and trip events, exactly one per row.
ALTER TABLE webhook_outbox ALTER COLUMN event_id DROP NOT NULL;
ALTER TABLE webhook_outbox ADD COLUMN trip_event_id bigint REFERENCES trip_events (id) ON DELETE CASCADE;
ALTER TABLE webhook_outbox ADD CONSTRAINT webhook_outbox_one_event
    CHECK (num_nonnulls(event_id, trip_event_id) = 1);
