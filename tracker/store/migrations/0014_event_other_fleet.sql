-- A near/far event names another device (`other_device`), and is listed to that device's fleet too. The
-- fleet it had when the event fired is kept here: a device moved to another fleet later must not take its
-- old encounters along, and the other side's events page walks (other_fleet, id) instead of the table.
ALTER TABLE events ADD COLUMN other_fleet text;
UPDATE events AS e SET other_fleet = d.fleet FROM devices AS d WHERE d.id = e.other_device;
CREATE INDEX events_other_fleet ON events (other_fleet, id) WHERE other_fleet IS NOT NULL;
