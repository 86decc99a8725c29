-- Core schema: who may write (devices), who may read (viewers), and what was written (fixes).
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE devices (
    id          text PRIMARY KEY,
    fleet       text NOT NULL,
    name        text,
    token_hash  bytea NOT NULL UNIQUE,
    created     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_fleet ON devices (fleet);

-- fleets NULL means every fleet.
CREATE TABLE viewers (
    name        text PRIMARY KEY,
    fleets      text[],
    token_hash  bytea NOT NULL UNIQUE,
    created     timestamptz NOT NULL DEFAULT now()
);

-- One row per stored fix, range-partitioned by fix time (one partition per UTC day) so that retention
-- drops whole partitions. (device_id, ts) is the identity of a fix: a retried fix is a duplicate.
CREATE TABLE fixes (
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    geom        geometry(Point, 4326) NOT NULL,
    speed       real,
    heading     real,
    accuracy    real,
    altitude    real,
    battery     real,
    attrs       jsonb,
    cell        bigint NOT NULL,
    received    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX fixes_geom ON fixes USING gist (geom);
CREATE INDEX fixes_ts ON fixes USING brin (ts);
