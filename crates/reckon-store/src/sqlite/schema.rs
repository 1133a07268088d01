//! The SQLite schema, as numbered migrations tracked in `PRAGMA user_version`.
//!
//! Tables hold the current state (accounts, live grants, holds) and the
//! history (events), plus idempotency records and settings. Amounts are
//! INTEGER micro-units, instants INTEGER Unix milliseconds.

use crate::error::StoreError;
use rusqlite::Connection;

/// Applied in order; a database at `user_version = n` has the first `n`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    id              TEXT PRIMARY KEY,
    unit            TEXT NOT NULL,
    status          TEXT NOT NULL,
    expires_at      INTEGER,
    timezone        TEXT,
    metadata        TEXT NOT NULL,
    overage         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    granted         INTEGER NOT NULL,
    used            INTEGER NOT NULL,
    expired         INTEGER NOT NULL,
    next_grant_seq  INTEGER NOT NULL,
    -- earliest grant or open-hold expiry: what the sweeper looks for
    next_due        INTEGER,
    -- live grants, encoded by codec::encode_grants: kept in the account's
    -- row so a change to an account rewrites one row, not two
    grants          TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX accounts_next_due ON accounts(next_due) WHERE next_due IS NOT NULL;


CREATE TABLE holds (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    amount          INTEGER NOT NULL,
    status          TEXT NOT NULL,
    expires_at      INTEGER NOT NULL,
    allocations     TEXT NOT NULL,
    settled_amount  INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    resolved_at     INTEGER
);
-- Hold ids are time-ordered UUIDs (v7), so new holds append to the primary
-- key instead of landing on random pages.
CREATE INDEX holds_account ON holds(account_id, created_at);
CREATE INDEX holds_open ON holds(account_id) WHERE status = 'held';

-- seq is the rowid: events are never deleted, so it only grows (and
-- AUTOINCREMENT would cost a sqlite_sequence write per event).
CREATE TABLE events (
    seq              INTEGER PRIMARY KEY,
    account_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    amount           INTEGER NOT NULL,
    available_after  INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    grant_id         TEXT,
    hold_id          TEXT,
    idempotency_key  TEXT,
    attributes       TEXT
);
CREATE INDEX events_account ON events(account_id, seq);

CREATE TABLE idempotency (
    account_id   TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (account_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_created ON idempotency(created_at);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE credentials (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    -- sk:<sha256 of a private key> or pk:<public identifier>
    lookup      TEXT NOT NULL UNIQUE,
    public      INTEGER NOT NULL,
    display     TEXT NOT NULL,
    active      INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX credentials_account ON credentials(account_id, created_at);
"#,
];

/// Brings the database up to the newest schema; returns how many migrations ran.
pub fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let version: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this reckon ({}); upgrade reckon",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(MIGRATIONS.len() - version)
}
