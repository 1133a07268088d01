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
    // An account's events become a chain (each points to the account's
    // previous one, the account row to its newest) instead of an index on
    // (account_id, seq): that index took an insert on a random page for
    // every event, most of the writer's cost per operation.
    r#"
ALTER TABLE accounts ADD COLUMN last_event_seq INTEGER;
ALTER TABLE events ADD COLUMN prev_seq INTEGER;
UPDATE events SET prev_seq =
    (SELECT max(e.seq) FROM events e WHERE e.account_id = events.account_id AND e.seq < events.seq);
UPDATE accounts SET last_event_seq =
    (SELECT max(e.seq) FROM events e WHERE e.account_id = accounts.id);
DROP INDEX events_account;
"#,
    // An existing account's changes append its whole row here instead of
    // updating it in `accounts` in place (see `account_log.rs`): at a
    // million accounts each in-place update dirtied a random page.
    r#"
CREATE TABLE account_log (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL,
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
    grants          TEXT NOT NULL,
    last_event_seq  INTEGER
);
"#,
    // Open holds by expiry, for the sweeper: `next_due` no longer counts
    // holds, so a lock or a settle leaves the account's row in `accounts`
    // alone (see `executor::next_due`). Values stored before still count
    // them; they are only early, and a sweep rewrites them.
    r#"
CREATE INDEX holds_expiring ON holds(expires_at) WHERE status = 'held';
"#,
    // Idempotency records are appended, with an index of key hashes, instead
    // of kept in a table keyed by (account, key): see `idempotency.rs`.
    // Records already kept stay where they are until they age out.
    r#"
CREATE TABLE idempotency_log (
    seq          INTEGER PRIMARY KEY,
    -- idempotency::key_hash(account_id, key)
    key_hash     INTEGER NOT NULL,
    account_id   TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX idempotency_log_hash ON idempotency_log(key_hash);
"#,
    // The account log's rows keep an account's state in one compact blob
    // (`compact::encode_stored`, ~60 bytes) instead of its columns (~160),
    // so each change writes fewer WAL pages. Rows written before keep their
    // columns and a NULL `state`; both read the same (`rows::account_row`).
    r#"
ALTER TABLE account_log ADD COLUMN state BLOB;
"#,
    // The account log is a ring of slots rewritten in order instead of
    // appended to with its head deleted (see `account_log.rs`); `written`
    // orders its rows. Rows written before keep a NULL: theirs is their slot.
    r#"
ALTER TABLE account_log ADD COLUMN written INTEGER;
"#,
    // An account's holds become a chain, as its events did (each hold
    // points to the account's previous one, the account's row to its
    // newest), instead of the index on (account_id, created_at): every lock
    // inserted into that index at a random page, half the pages a
    // `lock-settle` commit wrote (docs/performance-log.md). Holds are never
    // deleted, so a chain never breaks. Chains are built in one sorted pass
    // (a lookup of each hold's predecessor would walk the account's holds
    // once per hold: quadratic for an account that locks all day). Only
    // accounts with holds get a head; their older log rows get one too,
    // which nothing reads.
    r#"
ALTER TABLE holds ADD COLUMN prev_hold INTEGER;
ALTER TABLE accounts ADD COLUMN last_hold INTEGER;
ALTER TABLE account_log ADD COLUMN last_hold INTEGER;
UPDATE holds SET prev_hold = chained.prev
    FROM (SELECT rowid AS hold, lag(rowid) OVER (PARTITION BY account_id ORDER BY rowid) AS prev
          FROM holds) AS chained
    WHERE holds.rowid = chained.hold AND chained.prev IS NOT NULL;
UPDATE accounts SET last_hold = newest.hold
    FROM (SELECT account_id, max(rowid) AS hold FROM holds GROUP BY account_id) AS newest
    WHERE accounts.id = newest.account_id;
UPDATE account_log SET last_hold = newest.hold
    FROM (SELECT account_id, max(rowid) AS hold FROM holds GROUP BY account_id) AS newest
    WHERE account_log.id = newest.account_id;
DROP INDEX holds_account;
"#,
];

/// Brings the database up to the newest schema; returns how many migrations ran.
pub fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let version: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(MIGRATIONS.len() - version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reckon_core::AccountId;

    /// An in-memory database with the first `version` migrations applied,
    /// as an older reckon left it.
    fn database_at(version: usize) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..version] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", version as i64)
            .unwrap();
        tx.commit().unwrap();
        conn
    }

    /// Whether the schema has a table or index of this name.
    fn exists(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            > 0
    }

    /// A database written before events were chained (schema version 2,
    /// with the `events_account` index) gets its chains built from the
    /// existing history, which then pages exactly as before.
    #[test]
    fn chaining_migration_keeps_history() {
        let mut conn = database_at(2);
        for name in ["a", "b"] {
            conn.execute(
                "INSERT INTO accounts VALUES (?1, 'unit', 'active', NULL, NULL, '{}', 'reject', 0, 0, 0, 0, 0, 0, NULL, '')",
                [name],
            )
            .unwrap();
        }
        for (i, name) in ["a", "b", "a", "a", "b"].iter().enumerate() {
            conn.execute(
                "INSERT INTO events (account_id, kind, amount, available_after, at) VALUES (?1, 'used', 1, 0, ?2)",
                rusqlite::params![name, i as i64],
            )
            .unwrap();
        }
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() - 2);
        let seqs = |name: &str, before: Option<i64>| -> Vec<i64> {
            let id = AccountId::parse(name).unwrap();
            let log = super::super::account_log::AccountLog::default();
            super::super::rows::load_events(&conn, &log, &id, before, 10)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        assert_eq!(seqs("a", None), [4, 3, 1]);
        assert_eq!(seqs("b", None), [5, 2]);
        assert_eq!(seqs("a", Some(4)), [3, 1]);
        assert!(
            !exists(&conn, "events_account"),
            "the per-event index is gone"
        );
    }

    /// Holds kept before they were chained (schema version 8, with the
    /// `holds_account` index) get their chains and heads built, and list
    /// newest first as the index listed them.
    #[test]
    fn hold_chaining_migration_keeps_the_listing() {
        let mut conn = database_at(8);
        for name in ["a", "b"] {
            conn.execute(
                "INSERT INTO accounts (id, unit, status, metadata, overage, created_at, updated_at, granted, used, expired, next_grant_seq, grants)
                 VALUES (?1, 'unit', 'active', '{}', 'reject', 0, 0, 0, 0, 0, 0, '')",
                [name],
            )
            .unwrap();
        }
        // b also has a row in the account log (its columns, as before schema 7).
        conn.execute(
            "INSERT INTO account_log (id, unit, status, metadata, overage, created_at, updated_at, granted, used, expired, next_grant_seq, grants)
             VALUES ('b', 'unit', 'active', '{}', 'reject', 0, 0, 0, 0, 0, 0, '')",
            [],
        )
        .unwrap();
        for (i, (hold, name, status)) in [
            ("h1", "a", "settled"),
            ("h2", "b", "held"),
            ("h3", "a", "released"),
            ("h4", "a", "held"),
        ]
        .iter()
        .enumerate()
        {
            conn.execute(
                "INSERT INTO holds (id, account_id, amount, status, expires_at, allocations, settled_amount, created_at)
                 VALUES (?1, ?2, 1, ?3, 1000000, '', 0, ?4)",
                rusqlite::params![hold, name, status, i as i64],
            )
            .unwrap();
        }
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() - 8);
        let list =
            |name: &str, status: Option<reckon_core::HoldStatus>, limit: usize| -> Vec<String> {
                let id = AccountId::parse(name).unwrap();
                let log = super::super::account_log::AccountLog::default();
                let now = reckon_core::Timestamp::from_millis(0);
                super::super::rows::load_holds(&conn, &log, &id, status, now, limit)
                    .unwrap()
                    .into_iter()
                    .map(|h| h.id)
                    .collect()
            };
        assert_eq!(list("a", None, 10), ["h4", "h3", "h1"]);
        assert_eq!(list("a", None, 2), ["h4", "h3"]);
        assert_eq!(list("a", Some(reckon_core::HoldStatus::Held), 10), ["h4"]);
        assert_eq!(list("b", None, 10), ["h2"]);
        let head: Option<i64> = conn
            .query_row(
                "SELECT last_hold FROM account_log WHERE id = 'b'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(head, Some(2), "the log row has the head too");
        assert!(!exists(&conn, "holds_account"), "the index is gone");
    }
}
