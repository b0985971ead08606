-- Sessions ended (logouts, password and phone changes, reused refresh
-- tokens), kept as long as an access token issued before them can live: an
-- edge that starts reads them (im.v1.auth.revocations), besides hearing new
-- ones on im.evt.v1.device.revoked.
CREATE TABLE revocations (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    -- space-separated device ids; '' with every_device_but
    device_ids       TEXT NOT NULL,
    every_device_but TEXT NOT NULL,
    at_ms            BIGINT NOT NULL
);
CREATE INDEX revocations_by_time ON revocations (at_ms);
