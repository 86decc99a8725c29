-- Closed day partitions of `fixes` whose primary key was rebuilt (tracker/store/compaction.py). Live ingest
-- writes fixes in time order across devices, which leaves the (device_id, ts) key of a day about half
-- full; a closed day is rebuilt once, and this row says it was (and what it gained).
CREATE TABLE IF NOT EXISTS compacted_partitions (
    partition           text PRIMARY KEY,       -- fixes_pYYYYMMDD
    compacted           timestamptz NOT NULL DEFAULT now(),
    key_bytes_before  bigint NOT NULL,
    key_bytes_after   bigint NOT NULL,
    seconds             real NOT NULL
);
