-- One rotating refresh token per device: only the hash of its secret is kept.
-- '' = the device is logged out (no refresh possible).
ALTER TABLE devices ADD COLUMN refresh_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN refresh_expires_at_ms BIGINT NOT NULL DEFAULT 0;
