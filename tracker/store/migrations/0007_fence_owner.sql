-- Which process evaluates a device's fences, when several share the database (tracker.store.fence_owner).
-- A process takes a device by raising its epoch, then reads the device's fence state; it writes fence
-- state or events for the device only while the epoch is still the one it set.
ALTER TABLE devices ADD COLUMN fence_epoch bigint NOT NULL DEFAULT 0;
