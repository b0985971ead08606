-- When a file was last found used (by a message or a profile): the sweep
-- of unused files looks again at most once per `unreferenced_file_secs`.
ALTER TABLE files ADD COLUMN checked_at_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX files_by_check ON files (checked_at_ms);
