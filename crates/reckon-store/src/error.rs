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

/// tokio-postgres prints a server error as just "db error"; say what it was.
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}
