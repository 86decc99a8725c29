-- Who did what, when: admin actions, token changes, viewers' messages, erasures and exports. Rows are
-- written in the transaction of the change they record (or right after it) and never hold a token.
CREATE TABLE audit (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts      bigint NOT NULL,            -- ms since the epoch
    actor   text NOT NULL,              -- 'admin' (the admin token), 'cli:<os user>', or a viewer's name
    action  text NOT NULL,              -- device.add, device.rekey, device.revoke, viewer.add, ...
    target  text NOT NULL,              -- the device id or viewer name acted on
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_ts ON audit (ts);

-- A device's erasure (a data-protection request): started, then finished with what was deleted. A
-- process that starts finds the unfinished ones and completes them.
CREATE TABLE erasures (
    device_id    text PRIMARY KEY,
    actor        text NOT NULL,
    started_ts   bigint NOT NULL,
    finished_ts  bigint,
    deleted      jsonb NOT NULL DEFAULT '{}'
);
