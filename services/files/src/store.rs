//! The files service's SQL (uploads, contents, files). Runs on SQLite and
//! PostgreSQL alike.

use shared::db::AnyPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/files");

const UPLOAD_COLUMNS: &str =
    "file_id, owner_id, name, kind, length, received, created_at_ms, expires_at_ms";

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UploadRow {
    pub file_id: String,
    pub owner_id: String,
    pub name: String,
    pub kind: String,
    pub length: i64,
    pub received: i64,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A file with what its content is.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct FileRow {
    pub file_id: String,
    pub owner_id: String,
    pub name: String,
    pub kind: String,
    pub sha256: String,
    pub created_at_ms: i64,
    pub media_type: String,
    pub size: i64,
    /// The upload whose parts hold the content's bytes.
    pub parts_of: String,
    /// An image's upright size (0 otherwise).
    pub width: i64,
    pub height: i64,
    /// A voice recording's length (0 otherwise).
    pub duration_ms: i64,
    /// The length of the upload that made it (the content may be shorter:
    /// an image without its metadata); 0 on files from before.
    pub uploaded: i64,
}

/// A thumbnail of a content.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ThumbnailRow {
    pub variant: String,
    pub object_key: String,
    pub size: i64,
    pub width: i64,
    pub height: i64,
}

/// One stored part of an upload: bytes `start..start + size`, in the
/// object store at `object_key`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PartRow {
    pub start: i64,
    pub size: i64,
    pub object_key: String,
    /// The ETag the object store gave its write (NULL on parts from before
    /// it was kept): a part is never replaced, so it names these bytes.
    pub e_tag: Option<String>,
}

pub async fn insert_upload(pool: &AnyPool, row: &UploadRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO uploads (file_id, owner_id, name, kind, length, received, created_at_ms, expires_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&row.file_id)
    .bind(&row.owner_id)
    .bind(&row.name)
    .bind(&row.kind)
    .bind(row.length)
    .bind(row.received)
    .bind(row.created_at_ms)
    .bind(row.expires_at_ms)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn upload(pool: &AnyPool, file_id: &str) -> Result<Option<UploadRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE file_id = $1"
    )))
    .bind(file_id)
    .fetch_optional(pool)
    .await
}

/// Records the part stored at `from` and moves the upload's offset from
/// `from` to `to`, in one transaction; false when the upload was not at
/// `from` (another writer got there first).
pub async fn advance_upload(
    pool: &AnyPool,
    file_id: &str,
    from: i64,
    to: i64,
    object_key: &str,
    e_tag: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query("UPDATE uploads SET received = $1 WHERE file_id = $2 AND received = $3")
        .bind(to)
        .bind(file_id)
        .bind(from)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO parts (upload_id, start, size, object_key, e_tag) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(file_id)
    .bind(from)
    .bind(to - from)
    .bind(object_key)
    .bind(e_tag)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The parts of `upload_id` that hold bytes of `start..end`, in order.
pub async fn parts(
    pool: &AnyPool,
    upload_id: &str,
    start: i64,
    end: i64,
) -> Result<Vec<PartRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT start, size, object_key, e_tag FROM parts
         WHERE upload_id = $1 AND start < $2 AND start + size > $3 ORDER BY start",
    )
    .bind(upload_id)
    .bind(end)
    .bind(start)
    .fetch_all(pool)
    .await
}

/// Forgets an unfinished upload (only one that expired by `expired_by`,
/// when given) and its parts' rows, and answers their object keys (the
/// caller's to delete); `None` when no such upload was there to forget (it
/// was finished or forgotten meanwhile, perhaps by another instance).
pub async fn delete_upload(
    pool: &AnyPool,
    file_id: &str,
    expired_by: Option<i64>,
) -> Result<Option<Vec<String>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query("DELETE FROM uploads WHERE file_id = $1 AND expires_at_ms <= $2")
        .bind(file_id)
        .bind(expired_by.unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
    if removed.rows_affected() != 1 {
        return Ok(None);
    }
    let keys = take_parts(&mut tx, file_id).await?;
    tx.commit().await?;
    Ok(Some(keys))
}

/// Deletes an upload's parts' rows; their object keys.
async fn take_parts(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    upload_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let keys: Vec<(String,)> = sqlx::query_as("SELECT object_key FROM parts WHERE upload_id = $1")
        .bind(upload_id)
        .fetch_all(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM parts WHERE upload_id = $1")
        .bind(upload_id)
        .execute(&mut **tx)
        .await?;
    Ok(keys.into_iter().map(|(key,)| key).collect())
}

/// Up to `limit` uploads whose expiry has passed.
pub async fn expired_uploads(
    pool: &AnyPool,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT file_id FROM uploads WHERE expires_at_ms <= $1 LIMIT $2")
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// What [`complete_upload`] did.
pub enum Completed {
    /// The parts are the new content's. `obsolete`: the object keys of
    /// parts replaced by cleaned bytes; `unused`: thumbnails not recorded
    /// (the content had them already); both to delete.
    Kept {
        obsolete: Vec<String>,
        unused: Vec<String>,
    },
    /// The content was stored already: the parts' object keys and the
    /// thumbnails not recorded, to delete.
    Duplicate {
        parts: Vec<String>,
        unused: Vec<String>,
    },
    /// The upload was no longer there (terminated or expired meanwhile).
    Gone,
}

/// The upload becomes its file, in one transaction: its parts become the
/// content when the content is new (`file.parts_of` is the upload), and are
/// forgotten when the content was stored already. `cleaned`: the object
/// holding the content instead of the parts (an image without its
/// metadata), as one part: its object key and ETag. `thumbnails`: the
/// content's, stored already.
pub async fn complete_upload(
    pool: &AnyPool,
    file: &FileRow,
    cleaned: Option<(&str, Option<&str>)>,
    thumbnails: &[ThumbnailRow],
) -> Result<Completed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query("DELETE FROM uploads WHERE file_id = $1")
        .bind(&file.file_id)
        .execute(&mut *tx)
        .await?;
    if removed.rows_affected() != 1 {
        return Ok(Completed::Gone);
    }
    let added = sqlx::query(
        "INSERT INTO blobs (sha256, size, media_type, parts_of, created_at_ms, width, height, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&file.sha256)
    .bind(file.size)
    .bind(&file.media_type)
    .bind(&file.file_id)
    .bind(file.created_at_ms)
    .bind(file.width)
    .bind(file.height)
    .bind(file.duration_ms)
    .execute(&mut *tx)
    .await?;
    let completed = if added.rows_affected() == 1 {
        let mut obsolete = Vec::new();
        if let Some((key, e_tag)) = cleaned {
            obsolete = take_parts(&mut tx, &file.file_id).await?;
            sqlx::query(
                "INSERT INTO parts (upload_id, start, size, object_key, e_tag) VALUES ($1, 0, $2, $3, $4)",
            )
            .bind(&file.file_id)
            .bind(file.size)
            .bind(key)
            .bind(e_tag)
            .execute(&mut *tx)
            .await?;
        }
        let unused = record_thumbnails(&mut tx, &file.sha256, thumbnails).await?;
        Completed::Kept { obsolete, unused }
    } else {
        // A content stored before media were read (or as a plain file)
        // gets what this upload read of it.
        sqlx::query(
            "UPDATE blobs SET width = $2, height = $3, duration_ms = $4
             WHERE sha256 = $1 AND width = 0 AND duration_ms = 0",
        )
        .bind(&file.sha256)
        .bind(file.width)
        .bind(file.height)
        .bind(file.duration_ms)
        .execute(&mut *tx)
        .await?;
        let unused = record_thumbnails(&mut tx, &file.sha256, thumbnails).await?;
        Completed::Duplicate {
            parts: take_parts(&mut tx, &file.file_id).await?,
            unused,
        }
    };
    sqlx::query(
        "INSERT INTO files (file_id, owner_id, name, kind, sha256, created_at_ms, uploaded)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&file.file_id)
    .bind(&file.owner_id)
    .bind(&file.name)
    .bind(&file.kind)
    .bind(&file.sha256)
    .bind(file.created_at_ms)
    .bind(file.uploaded)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(completed)
}

/// Records a content's thumbnails where it has none of that variant; the
/// object keys of those not recorded.
async fn record_thumbnails(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sha256: &str,
    thumbnails: &[ThumbnailRow],
) -> Result<Vec<String>, sqlx::Error> {
    let mut unused = Vec::new();
    for t in thumbnails {
        let added = sqlx::query(
            "INSERT INTO thumbnails (sha256, variant, object_key, size, width, height)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256, variant) DO NOTHING",
        )
        .bind(sha256)
        .bind(&t.variant)
        .bind(&t.object_key)
        .bind(t.size)
        .bind(t.width)
        .bind(t.height)
        .execute(&mut **tx)
        .await?;
        if added.rows_affected() == 0 {
            unused.push(t.object_key.clone());
        }
    }
    Ok(unused)
}

pub async fn file(pool: &AnyPool, file_id: &str) -> Result<Option<FileRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT f.file_id, f.owner_id, f.name, f.kind, f.sha256, f.created_at_ms, b.media_type, b.size,
         b.parts_of, b.width, b.height, b.duration_ms, f.uploaded
         FROM files f JOIN blobs b ON b.sha256 = f.sha256 WHERE f.file_id = $1",
    )
    .bind(file_id)
    .fetch_optional(pool)
    .await
}

/// A content's thumbnails.
pub async fn thumbnails(pool: &AnyPool, sha256: &str) -> Result<Vec<ThumbnailRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT variant, object_key, size, width, height FROM thumbnails
         WHERE sha256 = $1 ORDER BY width",
    )
    .bind(sha256)
    .fetch_all(pool)
    .await
}

/// The bytes `owner`'s files and unfinished uploads take (a file counts
/// whole, even when its bytes are stored once for many).
pub async fn used_bytes(pool: &AnyPool, owner: &str) -> Result<i64, sqlx::Error> {
    let files: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM files f
         JOIN blobs b ON b.sha256 = f.sha256 WHERE f.owner_id = $1",
    )
    .bind(owner)
    .fetch_one(pool)
    .await?;
    let uploads: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT) FROM uploads WHERE owner_id = $1",
    )
    .bind(owner)
    .fetch_one(pool)
    .await?;
    Ok(files.saturating_add(uploads))
}

/// Up to `limit` files made before `made_before` and not found used since
/// `checked_before`: their ids and kinds.
pub async fn files_to_check(
    pool: &AnyPool,
    made_before: i64,
    checked_before: i64,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT file_id, kind FROM files
         WHERE checked_at_ms < $1 AND created_at_ms < $2 ORDER BY checked_at_ms LIMIT $3",
    )
    .bind(checked_before)
    .bind(made_before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Notes that files were found used at `now`.
pub async fn mark_used(pool: &AnyPool, ids: &[String], now: i64) -> Result<(), sqlx::Error> {
    for id in ids {
        sqlx::query("UPDATE files SET checked_at_ms = $2 WHERE file_id = $1")
            .bind(id)
            .bind(now)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Deletes a file, and its content when no other file has those bytes:
/// the object keys to delete (its parts and thumbnails), empty when the
/// content stays.
pub async fn delete_file(pool: &AnyPool, file_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let sha256: Option<String> =
        sqlx::query_scalar("DELETE FROM files WHERE file_id = $1 RETURNING sha256")
            .bind(file_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(sha256) = sha256 else {
        return Ok(Vec::new());
    };
    let others: Option<i64> = sqlx::query_scalar("SELECT 1 FROM files WHERE sha256 = $1 LIMIT 1")
        .bind(&sha256)
        .fetch_optional(&mut *tx)
        .await?;
    let mut keys = Vec::new();
    if others.is_none() {
        // The thumbnails first: they refer to the content. (A file of the
        // same bytes made meanwhile makes the content's delete fail, and
        // all of this with it, on PostgreSQL; SQLite runs one writer.)
        let thumbs: Vec<(String,)> =
            sqlx::query_as("DELETE FROM thumbnails WHERE sha256 = $1 RETURNING object_key")
                .bind(&sha256)
                .fetch_all(&mut *tx)
                .await?;
        let parts_of: String =
            sqlx::query_scalar("DELETE FROM blobs WHERE sha256 = $1 RETURNING parts_of")
                .bind(&sha256)
                .fetch_one(&mut *tx)
                .await?;
        keys = take_parts(&mut tx, &parts_of).await?;
        keys.extend(thumbs.into_iter().map(|(key,)| key));
    }
    tx.commit().await?;
    Ok(keys)
}
