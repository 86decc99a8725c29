-- Daily reports (contract part 2, "Reports") read every fix of a fleet's day straight off the covering
-- primary key, an index-only scan; a `flag IS NULL` filter there would visit the heap for every fix (the
-- flag is not in the index: five times slower, measured). The few flagged fixes are found here instead and
-- left out afterwards. A partial index holds only them, so it costs nothing for the good fixes.
CREATE INDEX IF NOT EXISTS fixes_flagged ON fixes (device_id, ts) WHERE flag IS NOT NULL;

-- Messages of the day are counted by when they were stored; without this the count reads every message
-- the fleet's devices ever had.
CREATE INDEX IF NOT EXISTS messages_created ON messages (created_ts);
