//! The store layer's errors: one enum for "the database failed", one for
//! "this request did not execute".

use reckon_core::Rejection;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// No database connection could be had (PostgreSQL down or unreachable).
    #[error("no database connection: {0}")]
    Connect(String),
    /// A stored row could not be read back: a bug or a hand-edited database.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database was migrated by a newer reckon; this one cannot read it.
    #[error("database schema version {found} is newer than this reckon ({known}); upgrade reckon")]
    SchemaTooNew { found: usize, known: usize },
    /// The executor has stopped (shutdown, or its thread died).
    #[error("the executor is not running")]
    Unavailable,
    /// The batch this request was in did not commit; nothing of it applied.
    #[error("the write batch failed: {0}")]
    BatchFailed(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The core refused: nothing changed.
    #[error("{0}")]
    Rejected(Rejection),
    /// The idempotency key was used before for a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyConflict,
    /// The batch did not commit: nothing of it changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoreError {
    /// The database could not be reached or the write could not be made
    /// now, but may succeed if retried (with the same idempotency key: a
    /// write whose commit was cut off may have applied). Bugs and corrupt
    /// rows are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable | StoreError::Connect(_) | StoreError::BatchFailed(_) => true,
            StoreError::Io(_) => true,
            // SQLITE_BUSY, SQLITE_FULL and friends: another writer, a full disk.
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
            ),
            StoreError::Sqlite(_) | StoreError::Corrupt(_) | StoreError::SchemaTooNew { .. } => {
                false
            }
            StoreError::Postgres(e) => match e.as_db_error() {
                // No server error: the connection failed or was cut.
                None => true,
                // Connection exceptions, shutdowns, too many connections.
                Some(db) => {
                    let class = &db.code().code()[..2];
                    matches!(class, "08" | "53" | "57" | "40")
                }
            },
        }
    }
}

/// tokio-postgres prints a server error as just "db error"; say what it was.
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}
