//! Database pools: SQLite (default, one WAL-mode file per service) or
//! PostgreSQL, chosen by URL, through sqlx's `Any` driver so one code path
//! serves both. Schemas stay portable: TEXT, BIGINT and INTEGER columns only.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use tokio_util::task::AbortOnDropHandle;

pub use sqlx::AnyPool;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot create directory for database {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The URL of an SQLite database file, created if missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Opens a pool for `url` (`sqlite://...` or `postgres://...`) and runs
/// `migrator` on it.
pub async fn connect(
    url: &str,
    max_connections: u32,
    migrator: &sqlx::migrate::Migrator,
) -> Result<AnyPool, DbError> {
    let pool = open(url, max_connections, Checkpoints::OnCommit).await?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// A pool for reads and a pool for writes. On SQLite the write pool holds
/// one connection, so writers queue for it in the pool instead of sleeping
/// in SQLite's busy handler (which backs off by milliseconds), while WAL
/// readers run beside them, and WAL checkpoints run off the commit path
/// (see [`checkpoints`]) until the last clone of these pools is dropped. On
/// PostgreSQL both are the same pool.
#[derive(Clone, Debug)]
pub struct Pools {
    pub read: AnyPool,
    pub write: AnyPool,
    /// SQLite only: the file, for a writer of its own ([`SqliteFile::open_writer`]).
    pub sqlite: Option<SqliteFile>,
    _checkpoints: Option<Arc<AbortOnDropHandle<()>>>,
}

/// An SQLite database file behind [`Pools`], and the gate that a writer
/// outside the write pool takes around each write transaction, so the
/// checkpointer's moment with the write connection (see [`checkpoints`])
/// holds it off too.
#[derive(Clone, Debug)]
pub struct SqliteFile {
    pub path: std::path::PathBuf,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteFile {
    /// Opens a connection of its own on the file, set up as the pools'
    /// connections are, for a writer that runs on a thread of its own.
    pub fn open_writer(&self) -> Result<SqliteWriter, rusqlite::Error> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        for (name, value) in [
            ("journal_mode", "WAL".to_owned()),
            ("synchronous", "NORMAL".to_owned()),
            ("foreign_keys", "ON".to_owned()),
            ("temp_store", "MEMORY".to_owned()),
            ("wal_autocheckpoint", WAL_BACKSTOP.to_string()),
            ("journal_size_limit", WAL_KEEP_BYTES.to_string()),
        ] {
            conn.pragma_update_and_check(None, name, &value, |_| Ok(()))
                .or_else(|e| match e {
                    // Pragmas that set without answering.
                    rusqlite::Error::QueryReturnedNoRows => Ok(()),
                    e => Err(e),
                })?;
        }
        Ok(SqliteWriter {
            conn,
            gate: self.gate.clone(),
        })
    }
}

/// A connection to an SQLite file for a writer thread of its own (blocking
/// calls: never on an async task).
pub struct SqliteWriter {
    conn: rusqlite::Connection,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteWriter {
    /// Runs `write` in an immediate transaction (the write lock taken up
    /// front), committed when it returns `Ok`, rolled back otherwise.
    pub fn transaction<T, E: From<rusqlite::Error>>(
        &mut self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let _gate = self.gate.blocking_lock();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done = write(&tx)?;
        tx.commit()?;
        Ok(done)
    }
}

/// Opens [`Pools`] for `url` with up to `readers` read connections and runs
/// `migrator`.
pub async fn connect_pools(
    url: &str,
    readers: u32,
    migrator: &sqlx::migrate::Migrator,
) -> Result<Pools, DbError> {
    if !url.starts_with("sqlite://") {
        let pool = connect(url, readers, migrator).await?;
        return Ok(Pools {
            read: pool.clone(),
            write: pool,
            sqlite: None,
            _checkpoints: None,
        });
    }
    let write = open(url, 1, Checkpoints::Background).await?;
    migrator.run(&write).await?;
    let read = open(url, readers, Checkpoints::Background).await?;
    let checkpointer = open(url, 1, Checkpoints::Background).await?;
    let file = SqliteFile {
        path: sqlite_path(url).into(),
        gate: Arc::default(),
    };
    let task = tokio::spawn(checkpoints(
        checkpointer,
        write.clone(),
        file.gate.clone(),
        file.path.clone(),
    ));
    Ok(Pools {
        read,
        write,
        sqlite: Some(file),
        _checkpoints: Some(Arc::new(AbortOnDropHandle::new(task))),
    })
}

/// Who copies SQLite's WAL back into the database file.
#[derive(Clone, Copy)]
enum Checkpoints {
    /// SQLite's default: the commit that takes the WAL past 1,000 pages.
    OnCommit,
    /// [`checkpoints`]; a commit does it only past [`WAL_BACKSTOP`] pages.
    Background,
}

/// How often [`checkpoints`] copies the WAL into the database file while
/// writes come in, and how often it looks when none came.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(100);
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);
/// WAL pages past which [`checkpoints`] makes sure the WAL starts over
/// (128 MB). Writes wait each time, 8-11 ms on the benchmark's disk under
/// 3,000 one-to-one messages/s (the last copy's fsyncs, then the first
/// write's; 20-47 ms before the database file was flushed ahead of the
/// hold): at 4,096 pages that came every 250 ms at that rate (each small
/// transaction writes a few pages per message), and was the tail of their
/// latency.
const WAL_RESTART: i64 = 32_768;
/// WAL pages past which a commit checkpoints itself, should the background
/// task fall behind.
const WAL_BACKSTOP: i64 = 2 * WAL_RESTART;
/// A WAL file longer than this is cut back when it starts over (bytes).
/// Above [`WAL_RESTART`]'s length: cutting 64 MB off the file when it
/// started over stalled writes for 100 ms.
const WAL_KEEP_BYTES: i64 = 192 << 20;

/// Keeps an SQLite WAL short without making commits wait for it.
///
/// SQLite checkpoints in the commit that takes the WAL past 1,000 pages, and
/// a checkpoint syncs the WAL and the database file: two fsyncs, milliseconds
/// each on a real disk, that every write queued behind that commit waits for.
/// Here a connection of its own copies the WAL into the database file (a
/// passive checkpoint runs beside the writer) every [`CHECKPOINT_BUSY`]
/// while writes come in. The WAL starts over at the first write after it was
/// copied in full, which a copy beside steady writes never is; so once it
/// is longer than [`WAL_RESTART`] pages, the write connection is taken for
/// a moment to copy what came in meanwhile. Commits wait for that short copy
/// only, once per [`WAL_RESTART`] pages instead of once per 1,000.
async fn checkpoints(
    own: AnyPool,
    write: AnyPool,
    gate: Arc<tokio::sync::Mutex<()>>,
    path: std::path::PathBuf,
) {
    // Said once while checkpoints keep failing (a full disk, say), not each time.
    let mut failing = false;
    let mut last = None;
    loop {
        let copied = async {
            let wal = checkpoint(&own).await?;
            // Even with every page copied, a write may be under way, and
            // the WAL starts over only at a write that begins with nothing
            // left to copy; hence the hold. A WAL unchanged since the last
            // look was held for then, and no write came since.
            if wal.pages < WAL_RESTART || last == Some(wal) {
                return Ok((wal, None));
            }
            // The copy that catches up ends with an fsync of the database
            // file, which flushes every page the passive copies wrote since
            // the last restart, while the writes wait. Flushed first from a
            // handle of our own (fsync works on the file, not the handle),
            // only what the last copy writes is left for then.
            let path = path.clone();
            let synced = std::time::Instant::now();
            tokio::task::spawn_blocking(move || std::fs::File::open(path)?.sync_data())
                .await
                .map_err(std::io::Error::other)??;
            let synced = synced.elapsed();
            let mut conn = write.acquire().await?;
            let _gate = gate.lock().await;
            let held = std::time::Instant::now();
            checkpoint(&mut *conn).await?;
            Ok::<_, sqlx::Error>((wal, Some((synced, held.elapsed()))))
        };
        let mut pause = CHECKPOINT_BUSY;
        match copied.await {
            Ok((wal, held)) => {
                if let Some((synced, held)) = held {
                    tracing::debug!(
                        pages = wal.pages,
                        ?synced,
                        ?held,
                        "WAL copied in full: the next write starts it over"
                    );
                }
                if std::mem::take(&mut failing) {
                    tracing::info!("WAL checkpoints work again");
                }
                if last.replace(wal) == Some(wal) {
                    pause = CHECKPOINT_IDLE;
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        if write.is_closed() {
            return;
        }
    }
}

/// A WAL's length and how much of it is in the database file (pages).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Wal {
    pages: i64,
    copied: i64,
}

/// Runs a passive checkpoint on `conn`.
async fn checkpoint<'c, E>(conn: E) -> Result<Wal, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let (_busy, pages, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok(Wal { pages, copied })
}

async fn open(
    url: &str,
    max_connections: u32,
    checkpoints: Checkpoints,
) -> Result<AnyPool, DbError> {
    install_default_drivers();
    if url.starts_with("sqlite://") {
        let file = sqlite_path(url);
        if let Some(dir) = Path::new(file)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| DbError::Dir {
                path: file.to_owned(),
                source,
            })?;
        }
    }
    let sqlite = url.starts_with("sqlite://");
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        // A local file needs no liveness check on every acquire (a round
        // trip to the connection's worker thread each time).
        .test_before_acquire(!sqlite)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if conn.backend_name() == "SQLite" {
                    // WAL lets readers run beside the writer; NORMAL sync is
                    // durable across process crashes (the WAL is fsynced at checkpoints).
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    // Statement journals of multi-row writes stay in memory.
                    sqlx::query("PRAGMA temp_store = MEMORY")
                        .execute(&mut *conn)
                        .await?;
                    if let Checkpoints::Background = checkpoints {
                        for pragma in [
                            format!("PRAGMA wal_autocheckpoint = {WAL_BACKSTOP}"),
                            format!("PRAGMA journal_size_limit = {WAL_KEEP_BYTES}"),
                        ] {
                            sqlx::query(sqlx::AssertSqlSafe(pragma))
                                .execute(&mut *conn)
                                .await?;
                        }
                    }
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(|source| DbError::Open {
            url: redact(url),
            source,
        })?;
    Ok(pool)
}

/// The file of an `sqlite://` URL.
fn sqlite_path(url: &str) -> &str {
    let rest = url.strip_prefix("sqlite://").unwrap_or(url);
    rest.split('?').next().unwrap_or_default()
}

/// Hides a password in a database URL before it is logged.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// True when `err` is a unique-constraint violation.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// The checkpoint sequence in an SQLite WAL file's header: SQLite
    /// increments it each time the WAL starts over.
    fn wal_restarts(db: &std::path::Path) -> u32 {
        let wal = std::fs::read(db.with_extension("db-wal")).unwrap();
        u32::from_be_bytes(wal[12..16].try_into().unwrap())
    }

    #[tokio::test]
    async fn a_long_sqlite_wal_starts_over_though_commits_never_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let url = super::sqlite_url(&db);
        let pools = super::connect_pools(&url, 2, &sqlx::migrate::Migrator::DEFAULT)
            .await
            .unwrap();
        let (auto,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
            .fetch_one(&pools.write)
            .await
            .unwrap();
        assert_eq!(auto, super::WAL_BACKSTOP);
        sqlx::query("CREATE TABLE t (x TEXT NOT NULL)")
            .execute(&pools.write)
            .await
            .unwrap();
        let before = wal_restarts(&db);
        // Past WAL_RESTART pages, in commits of ~100 pages each: SQLite's
        // default would have started the WAL over a few times by now.
        let row = "x".repeat(3000);
        for _ in 0..(super::WAL_RESTART / 100 + 10) {
            let mut tx = pools.write.begin().await.unwrap();
            for _ in 0..100 {
                sqlx::query("INSERT INTO t (x) VALUES ($1)")
                    .bind(&row)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
        // Writes keep coming, as under load: four writers queue for the
        // write connection, so a commit follows the last one at once. A copy
        // beside them never catches up, so the WAL starts over only because
        // the task holds the write connection for the last of it.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (write, stop) = (pools.write.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        sqlx::query("INSERT INTO t (x) VALUES ('y')")
                            .execute(&write)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        let restarted = loop {
            if wal_restarts(&db) != before {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for writer in writers {
            writer.await.unwrap();
        }
        assert!(restarted, "the WAL did not start over within 20 s");
        let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t")
            .fetch_one(&pools.read)
            .await
            .unwrap();
        assert!(rows > super::WAL_RESTART, "{rows} rows");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            super::redact("sqlite:///tmp/x.db?mode=rwc"),
            "sqlite:///tmp/x.db?mode=rwc"
        );
    }
}
