-- The ETag the object store gave each part's write: parts are never
-- replaced, so a read names the bytes by it (on the NATS object store it
-- reads the chunks without looking up the object's description first).
-- NULL on parts stored before: those are read by their key.
ALTER TABLE parts ADD COLUMN e_tag TEXT;
