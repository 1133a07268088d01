//! The PostgreSQL schema, as numbered migrations recorded in
//! `reckon_schema`. The same tables as the SQLite backend, with the same
//! column encodings (`codec`): amounts BIGINT micro-units, instants BIGINT
//! Unix milliseconds. Ids use the "C" collation so that ordering (pages,
//! lock order) is by bytes on every server, as in SQLite.

use crate::error::StoreError;
use tokio_postgres::Client;

/// Applied in order; a schema with `n` rows in `reckon_schema` has the first `n`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    id              TEXT COLLATE "C" PRIMARY KEY,
    unit            TEXT NOT NULL,
    status          TEXT NOT NULL,
    expires_at      BIGINT,
    timezone        TEXT,
    metadata        TEXT NOT NULL,
    overage         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    granted         BIGINT NOT NULL,
    used            BIGINT NOT NULL,
    expired         BIGINT NOT NULL,
    next_grant_seq  BIGINT NOT NULL,
    -- earliest grant or open-hold expiry: what the sweeper claims
    next_due        BIGINT,
    -- live grants, encoded by codec::encode_grants
    grants          TEXT NOT NULL
);
CREATE INDEX accounts_next_due ON accounts(next_due) WHERE next_due IS NOT NULL;

CREATE TABLE holds (
    id              TEXT COLLATE "C" PRIMARY KEY,
    account_id      TEXT COLLATE "C" NOT NULL,
    amount          BIGINT NOT NULL,
    status          TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    allocations     TEXT NOT NULL,
    settled_amount  BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    resolved_at     BIGINT
);
CREATE INDEX holds_account ON holds(account_id, created_at);
CREATE INDEX holds_open ON holds(account_id) WHERE status = 'held';
CREATE INDEX holds_open_by_age ON holds(created_at) WHERE status = 'held';

CREATE TABLE events (
    -- Per account, seq follows commit order: every event of an account is
    -- written by a transaction holding that account's row lock.
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id       TEXT COLLATE "C" NOT NULL,
    kind             TEXT NOT NULL,
    amount           BIGINT NOT NULL,
    available_after  BIGINT NOT NULL,
    at               BIGINT NOT NULL,
    grant_id         TEXT,
    hold_id          TEXT,
    idempotency_key  TEXT,
    attributes       TEXT
);
CREATE INDEX events_account ON events(account_id, seq);

CREATE TABLE idempotency (
    account_id   TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    fingerprint  TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_created ON idempotency(created_at);

CREATE TABLE settings (
    key    TEXT COLLATE "C" PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE credentials (
    id          TEXT COLLATE "C" PRIMARY KEY,
    account_id  TEXT COLLATE "C" NOT NULL,
    -- sk:<sha256 of a private key> or pk:<public identifier>
    lookup      TEXT COLLATE "C" NOT NULL UNIQUE,
    public      BOOLEAN NOT NULL,
    display     TEXT NOT NULL,
    active      BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX credentials_account ON credentials(account_id, created_at);
"#,
    // Open holds by expiry, for the sweeper: `next_due` no longer counts
    // holds, so a lock or a settle no longer changes an indexed column of
    // the account (which made its update non-HOT). Values stored before
    // still count them; they are only early, and a sweep rewrites them.
    r#"
CREATE INDEX holds_expiring ON holds(expires_at) WHERE status = 'held';
"#,
];

/// Any constant both nodes agree on: serialises migrations when several
/// nodes start at once against one database.
const MIGRATION_LOCK: i64 = 0x7265_636b_6f6e; // "reckon"

/// Brings the schema (the first one on the connection's `search_path`) up
/// to date; returns how many migrations ran. Safe to run from several nodes
/// at once: they take turns on an advisory lock.
pub async fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS reckon_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let version: i64 = tx
        .query_one("SELECT count(*) FROM reckon_schema", &[])
        .await?
        .get(0);
    let version = version as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO reckon_schema (version) VALUES ($1)",
            &[&((i + 1) as i32)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(MIGRATIONS.len() - version)
}
