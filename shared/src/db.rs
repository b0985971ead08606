//! Database pools: SQLite (default, one WAL-mode file per service) or
//! PostgreSQL, chosen by URL, through sqlx's `Any` driver so one code path
//! serves both. Schemas stay portable: TEXT, BIGINT and INTEGER columns only.

use std::path::Path;

use sqlx::any::{AnyPoolOptions, install_default_drivers};

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
    let pool = open(url, max_connections).await?;
    migrator.run(&pool).await?;
    Ok(pool)
}

/// A pool for reads and a pool for writes. On SQLite the write pool holds
/// one connection, so writers queue for it in the pool instead of sleeping
/// in SQLite's busy handler (which backs off by milliseconds), while WAL
/// readers run beside them. On PostgreSQL both are the same pool.
#[derive(Clone, Debug)]
pub struct Pools {
    pub read: AnyPool,
    pub write: AnyPool,
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
        });
    }
    let write = connect(url, 1, migrator).await?;
    let read = open(url, readers).await?;
    Ok(Pools { read, write })
}

async fn open(url: &str, max_connections: u32) -> Result<AnyPool, DbError> {
    install_default_drivers();
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let file = rest.split('?').next().unwrap_or_default();
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
        .after_connect(|conn, _meta| {
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
