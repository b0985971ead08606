-- What the files service read from media: an image's upright size, a voice
-- recording's duration (0 = not known), and each image's thumbnails.
ALTER TABLE blobs ADD COLUMN width BIGINT NOT NULL DEFAULT 0;
ALTER TABLE blobs ADD COLUMN height BIGINT NOT NULL DEFAULT 0;
ALTER TABLE blobs ADD COLUMN duration_ms BIGINT NOT NULL DEFAULT 0;

-- A JPEG thumbnail of a content (`thumbs/<sha256>/<variant>` in the store).
CREATE TABLE thumbnails (
    sha256     TEXT NOT NULL REFERENCES blobs (sha256),
    variant    TEXT NOT NULL,
    object_key TEXT NOT NULL,
    size       BIGINT NOT NULL,
    width      BIGINT NOT NULL,
    height     BIGINT NOT NULL,
    PRIMARY KEY (sha256, variant)
);

-- The length of the upload that made the file (what tus reports as its
-- offset once done), where the content may be shorter: an image is stored
-- without its metadata. 0 on files from before.
ALTER TABLE files ADD COLUMN uploaded BIGINT NOT NULL DEFAULT 0;
