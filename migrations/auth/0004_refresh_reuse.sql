-- The hashes of a device's last refresh tokens that were already exchanged
-- (newest first, space-separated, at most 8): one presented again means a
-- copy of the token is in someone else's hands, and the device is logged out.
ALTER TABLE devices ADD COLUMN used_refresh_hashes TEXT NOT NULL DEFAULT '';
