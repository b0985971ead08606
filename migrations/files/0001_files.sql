-- Uploads and files of the files service.
-- Portable between SQLite and PostgreSQL (see migrations/auth/0001).

-- An upload in progress: its bytes so far are parts in the object store
-- (`uploads/<file_id>/<offset>`), one per write, until the last write
-- composes them into the file's content.
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

-- A stored content, once for all files with the same bytes
-- (`blobs/<sha256>` in the object store).
CREATE TABLE blobs (
    sha256        TEXT PRIMARY KEY,
    size          BIGINT NOT NULL,
    media_type    TEXT NOT NULL,
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
