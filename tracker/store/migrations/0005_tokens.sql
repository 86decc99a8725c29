-- Token lifecycle (contract part 2, "Tokens"). A revoked token's hash is NULL: the device or viewer
-- stays, with its history, and `--replace` gives it a new token. A viewer token may expire (ms since
-- the epoch; NULL: never). Every change of a token is announced on the channel `tracker_tokens`
-- ('device:<id>' or 'viewer:<name>') so that each process cuts what the old token had opened.
ALTER TABLE devices ALTER COLUMN token_hash DROP NOT NULL;
ALTER TABLE viewers ALTER COLUMN token_hash DROP NOT NULL;
ALTER TABLE viewers ADD COLUMN expires_ts bigint;
