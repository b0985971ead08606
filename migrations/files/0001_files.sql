-- Uploads and files of the files service.
-- Portable between SQLite and PostgreSQL (see migrations/auth/0001).

-- An upload in progress: its bytes so far are parts in the object store,
-- one per write (see `parts`).
CREATE TABLE uploads (
    file_id       TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    length        BIGINT NOT NULL,
    -- bytes received (tus Upload-Offset); moved only by the write that
    -- stored the part at the old value
    received      BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE INDEX uploads_by_expiry ON uploads (expires_at_ms);
CREATE INDEX uploads_by_owner ON uploads (owner_id);

-- The parts an upload's writes stored (at most 512 KiB each, under a key
-- of their own: `parts/<upload_id>/<start>-<write id>`, so a write that
-- lost the race for an offset never overwrites the winner's bytes): once
-- the upload is complete, they are its content's bytes, not copied anywhere.
CREATE TABLE parts (
    upload_id     TEXT NOT NULL,
    start         BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    object_key    TEXT NOT NULL,
    PRIMARY KEY (upload_id, start)
);

-- A stored content, once for all files with the same bytes: the parts of
-- the upload that brought it first (`parts_of`).
CREATE TABLE blobs (
    sha256        TEXT PRIMARY KEY,
    size          BIGINT NOT NULL,
    media_type    TEXT NOT NULL,
    parts_of      TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- A file: a name and an owner for a content.
CREATE TABLE files (
    file_id       TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    sha256        TEXT NOT NULL REFERENCES blobs (sha256),
    created_at_ms BIGINT NOT NULL
);

CREATE INDEX files_by_sha256 ON files (sha256);
CREATE INDEX files_by_owner ON files (owner_id);
