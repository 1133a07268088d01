//! Idempotency records in SQLite: appended in the order they are made, and
//! found through a small index of 64-bit hashes of (account, key).
//!
//! They were a `WITHOUT ROWID` table keyed by (account, key). Keys are
//! random, so every new record landed on a random leaf, and a ~360-byte
//! row on 1 KiB pages spilled into an overflow page: the writer read two
//! or three pages from the OS for each new key and wrote as many to the
//! WAL, ~40 µs of its time a request (a third of the throughput without
//! keys). Now a record is appended to the table's last page, and only its
//! ~14-byte index entry lands at random: ~60 entries share a leaf, so a
//! new key costs one leaf (its read, when not cached, and its WAL frame)
//! and the index grows ~5 times slower than the table did.
//!
//! Purging takes the oldest records, a prefix of the table, so it needs no
//! index by time either (see [`purge`]).
//!
//! Records written before the log stay in the old table, `idempotency`,
//! until they age out: lookups that miss the log look there too, and the
//! purge drops the table once it is empty (see [`Legacy`]). Moving them at
//! start instead took 38 s per million records.

use crate::error::StoreError;
use crate::executor::{IdempotencyRecord, IdempotencyWrite, Plan, Prefetched};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};

/// The index key of a record: the first 8 bytes of SHA-256 over the
/// account id's length, the id and the key. Stored, so it must never
/// change. A digest rather than a fast hash: clients choose their keys,
/// and keys that collided on purpose would pile up under one index entry.
/// A collision only costs a look at the row; the lookup compares both.
pub fn key_hash(account_id: &str, key: &str) -> i64 {
    let mut h = Sha256::new();
    h.update((account_id.len() as u32).to_le_bytes());
    h.update(account_id.as_bytes());
    h.update(key.as_bytes());
    let digest = h.finalize();
    i64::from_le_bytes(digest[..8].try_into().expect("a digest has 32 bytes"))
}

/// Whether the table of records written before the log still exists: set
/// at open, cleared by the purge step that empties and drops it. Shared by
/// the writer (lookups, purge) and the store.
#[derive(Debug, Default)]
pub struct Legacy(AtomicBool);

impl Legacy {
    /// Looks for the old table; drops it at once when it is empty (a new
    /// database gets it from the first migration).
    pub fn open(conn: &Connection) -> Result<Legacy, StoreError> {
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'idempotency')",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(Legacy::default());
        }
        Ok(Legacy(AtomicBool::new(!drop_if_empty(conn)?)))
    }

    pub fn present(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

const LOOKUP: &str = "SELECT fingerprint, outcome FROM idempotency_log
     WHERE key_hash = ?1 AND account_id = ?2 AND key = ?3";
const LOOKUP_LEGACY: &str =
    "SELECT fingerprint, outcome FROM idempotency WHERE account_id = ?1 AND key = ?2";
const INSERT: &str =
    "INSERT INTO idempotency_log (key_hash, account_id, key, fingerprint, outcome, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Loads the records of the keys `plan` names into `out`, whose accounts
/// are already loaded: a replay answers with the account as it is now (see
/// `codec::encode_outcome`). A record is only ever written for a command
/// that changed its account, so the account exists.
pub fn load(
    conn: &Connection,
    plan: &Plan,
    out: &mut Prefetched,
    legacy: &Legacy,
) -> Result<(), StoreError> {
    if plan.idempotency_keys.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(LOOKUP)?;
    for (id, key) in &plan.idempotency_keys {
        let row = stmt
            .query_row(params![key_hash(id.as_str(), key), id.as_str(), key], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?;
        let row = match row {
            None if legacy.present() => load_legacy(conn, id.as_str(), key, legacy)?,
            row => row,
        };
        let (Some((fingerprint, outcome)), Some(state)) = (row, out.accounts.get(id)) else {
            continue;
        };
        let outcome = crate::codec::decode_outcome(&outcome, &state.account)?;
        out.idempotency.insert(
            (id.clone(), key.clone()),
            IdempotencyRecord {
                fingerprint,
                outcome,
            },
        );
    }
    Ok(())
}

/// A record from the old table. Another process (the server, while this is
/// the CLI) may have dropped it since this one looked: then there is none.
fn load_legacy(
    conn: &Connection,
    account_id: &str,
    key: &str,
    legacy: &Legacy,
) -> Result<Option<(String, String)>, StoreError> {
    let mut stmt = match conn.prepare_cached(LOOKUP_LEGACY) {
        Ok(stmt) => stmt,
        Err(e) if e.to_string().contains("no such table") => {
            legacy.0.store(false, Ordering::Relaxed);
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    Ok(stmt
        .query_row(params![account_id, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Appends a batch's new records.
pub fn insert(conn: &Connection, writes: &[IdempotencyWrite]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut insert = conn.prepare_cached(INSERT)?;
    for w in writes {
        insert.execute(params![
            key_hash(w.account_id.as_str(), &w.key),
            w.account_id.as_str(),
            w.key,
            w.record.fingerprint,
            crate::codec::encode_outcome(&w.record.outcome),
            w.created_at.millis(),
        ])?;
    }
    Ok(())
}

/// Most records one purge step deletes: a few milliseconds of the writer.
pub const PURGE_STEP_RECORDS: u64 = 2_000;

/// Deletes up to `limit` of the records made before `before`; returns how
/// many. Records are appended in the order they were made, so these are
/// the table's first rows, up to the first one made at `before` or later.
/// That one is looked for among the first `limit` rows only: a step reads
/// at most what it may delete, however long the backlog behind it. A
/// record made after a later one (the clock set back) waits for it.
/// While the old table exists, a step also deletes up to `limit` of its
/// records made before `before`, and drops it once it is empty.
pub fn purge(
    conn: &Connection,
    before: reckon_core::Timestamp,
    limit: u64,
    legacy: &Legacy,
) -> Result<u64, StoreError> {
    let mut purged = conn.execute(PURGE, params![before.millis(), limit as i64])? as u64;
    if legacy.present() {
        purged += conn.execute(PURGE_LEGACY, params![before.millis(), limit as i64])? as u64;
        if drop_if_empty(conn)? {
            legacy.0.store(false, Ordering::Relaxed);
        }
    }
    Ok(purged)
}

/// Drops the old table if it holds no record; says whether it did.
fn drop_if_empty(conn: &Connection) -> Result<bool, StoreError> {
    let empty: bool = conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM idempotency)", [], |r| {
        r.get(0)
    })?;
    if empty {
        conn.execute_batch("DROP TABLE idempotency")?;
        // A cached lookup must not outlive the table.
        conn.flush_prepared_statement_cache();
    }
    Ok(empty)
}

const PURGE: &str = "DELETE FROM idempotency_log WHERE seq < coalesce(
         (SELECT seq FROM idempotency_log
          WHERE seq < (SELECT min(seq) FROM idempotency_log) + ?2 AND created_at >= ?1
          ORDER BY seq LIMIT 1),
         (SELECT min(seq) FROM idempotency_log) + ?2)";
/// Through the old table's index on `created_at`.
const PURGE_LEGACY: &str = "DELETE FROM idempotency WHERE (account_id, key) IN
         (SELECT account_id, key FROM idempotency WHERE created_at < ?1 LIMIT ?2)";

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use super::*;
    use reckon_core::Timestamp;
    use std::sync::Arc;

    /// Records are found by this hash, so a build that computed it
    /// differently would miss every record made before it, and apply a
    /// retried request a second time. The values were computed apart from
    /// this code, from the definition on `key_hash` (Python's `hashlib`).
    #[test]
    fn key_hash_is_a_stored_format() {
        assert_eq!(key_hash("acct-1", "req_abc123"), 1_809_517_226_348_867_493);
        assert_eq!(
            key_hash("user123", "nilauth-unlock:01a2:1000000"),
            -4_801_470_082_706_236_802
        );
        // The id's length is hashed, so moving bytes between id and key
        // changes the hash.
        assert_ne!(key_hash("ab", "c"), key_hash("a", "bc"));
    }

    fn log_with(created_at: &[i64]) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        for (i, at) in created_at.iter().enumerate() {
            conn.execute(
                INSERT,
                params![
                    key_hash("a", &i.to_string()),
                    "a",
                    i.to_string(),
                    "f",
                    "2",
                    at
                ],
            )
            .unwrap();
        }
        conn
    }

    fn left(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT created_at FROM idempotency_log ORDER BY seq")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    #[test]
    fn purge_takes_the_oldest_prefix_in_steps() {
        let conn = log_with(&[1, 2, 3, 4, 5, 9]);
        let before = Timestamp::from_millis(5);
        assert_eq!(purge(&conn, before, 3, &Legacy::default()).unwrap(), 3);
        assert_eq!(left(&conn), [4, 5, 9]);
        assert_eq!(purge(&conn, before, 3, &Legacy::default()).unwrap(), 1);
        assert_eq!(left(&conn), [5, 9]);
        assert_eq!(purge(&conn, before, 3, &Legacy::default()).unwrap(), 0);
        assert_eq!(
            purge(&conn, Timestamp::from_millis(100), 3, &Legacy::default()).unwrap(),
            2
        );
        assert_eq!(left(&conn), Vec::<i64>::new());
        assert_eq!(
            purge(&conn, Timestamp::from_millis(100), 3, &Legacy::default()).unwrap(),
            0
        );
    }

    /// After the clock was set back, an older record behind a newer one is
    /// kept until the newer one goes: kept too long, never too short.
    #[test]
    fn purge_stops_at_the_first_record_to_keep() {
        let conn = log_with(&[1, 7, 2, 8]);
        assert_eq!(
            purge(&conn, Timestamp::from_millis(5), 10, &Legacy::default()).unwrap(),
            1
        );
        assert_eq!(left(&conn), [7, 2, 8]);
    }

    /// Every part of a step is a search by rowid or index, none a scan of
    /// the table: a backlog of millions must not be read once per step.
    #[test]
    fn purge_and_lookup_read_no_more_than_they_need() {
        let conn = log_with(&[1]);
        let plan = |sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let zeros = vec![0; stmt.parameter_count()];
            let rows = stmt
                .query_map(rusqlite::params_from_iter(zeros), |r| r.get(3))
                .unwrap();
            rows.map(Result::unwrap).collect()
        };
        for sql in [PURGE, LOOKUP] {
            let steps = plan(sql);
            assert!(steps.iter().any(|s| s.starts_with("SEARCH")), "{steps:?}");
            assert!(
                !steps.iter().any(|s| s.starts_with("SCAN")),
                "{sql}: {steps:?}"
            );
        }
    }

    /// A database from before the log: its records are still answered,
    /// new ones go to the log, and the purge empties and drops the old table.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_from_before_the_log_are_answered_until_purged() {
        use crate::{Clock, IdempotencyKey, ManualClock, Request, Store};
        use reckon_core::*;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
        let a = AccountId::parse("a").unwrap();
        let usage = |key: &str, units: i64| {
            let mut r = Request::new(Command::Usage(UsageCmd {
                account: a.clone(),
                amount: Amount::from_micros(units * 1_000_000).unwrap(),
            }));
            r.idempotency_key = Some(IdempotencyKey::parse(key).unwrap());
            r
        };
        let store = SqliteStore::open(&path, clock.clone()).unwrap();
        for command in [
            super::super::tests::credits_account(a.clone()),
            Command::Grant(GrantCmd {
                account: a.clone(),
                grant_id: "g-1".into(),
                amount: Amount::from_micros(10_000_000).unwrap(),
                expiry: GrantExpiry::Never,
                source: "manual".into(),
            }),
        ] {
            store.submit(Request::new(command)).await.unwrap();
        }
        drop(store);
        // What an older reckon left: the keyed table with one record, whose
        // answer (available 7) is not what the account holds now (10).
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE idempotency (account_id TEXT NOT NULL, key TEXT NOT NULL,
                 fingerprint TEXT NOT NULL, outcome TEXT NOT NULL, created_at INTEGER NOT NULL,
                 PRIMARY KEY (account_id, key)) WITHOUT ROWID;
             CREATE INDEX idempotency_created ON idempotency(created_at);",
        )
        .unwrap();
        let outcome = r#"{"account":{"id":"a","unit":"credits","status":"active","expires_at":null,"timezone":null,"metadata":"{}","overage":"reject","created_at":1700000000000,"updated_at":1700000000000},"balance":{"granted":10000000,"used":3000000,"held":0,"available":7000000,"expired":0}}"#;
        conn.execute(
            "INSERT INTO idempotency VALUES ('a', 'old', ?1, ?2, ?3)",
            params![usage("old", 3).fingerprint(), outcome, clock.now().millis()],
        )
        .unwrap();
        drop(conn);
        let old_table = || {
            let conn = Connection::open(&path).unwrap();
            let n: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'idempotency'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            n == 1
        };
        let store = SqliteStore::open(&path, clock.clone()).unwrap();
        assert!(old_table(), "a table with records is kept");
        let replay = store.submit(usage("old", 3)).await.unwrap();
        assert!(replay.replayed);
        assert_eq!(replay.outcome.balance.available.micros(), 7_000_000);
        let conflict = store.submit(usage("old", 4)).await;
        assert!(matches!(
            conflict,
            Err(crate::ExecError::IdempotencyConflict)
        ));
        let new = store.submit(usage("new", 1)).await.unwrap();
        assert!(!new.replayed);
        assert_eq!(new.outcome.balance.available.micros(), 9_000_000);
        clock.advance_secs(1);
        assert_eq!(store.purge_idempotency(clock.now()).await.unwrap(), 2);
        assert!(!old_table(), "the purge that empties it drops it");
        assert!(!store.submit(usage("old", 3)).await.unwrap().replayed);
        drop(store);
        // Reopened: no table, and an empty one would be dropped at once.
        SqliteStore::open(&path, clock.clone()).unwrap();
        assert!(!old_table());
    }

    /// Another process (the server) dropped the table this one (the CLI)
    /// still counted on: a miss, not an error.
    #[test]
    fn an_old_table_dropped_elsewhere_is_a_miss() {
        let conn = log_with(&[]);
        conn.execute_batch("DROP TABLE idempotency").unwrap();
        let legacy = Legacy(AtomicBool::new(true));
        assert_eq!(load_legacy(&conn, "a", "k", &legacy).unwrap(), None);
        assert!(!legacy.present());
    }

    #[test]
    fn the_lookup_checks_account_and_key_under_one_hash() {
        let conn = log_with(&[1]);
        // A row as a colliding key would leave it: same hash, another key.
        conn.execute(
            INSERT,
            params![key_hash("a", "0"), "a", "other", "g", "2", 2],
        )
        .unwrap();
        let found: Vec<String> = conn
            .prepare(LOOKUP)
            .unwrap()
            .query_map(params![key_hash("a", "0"), "a", "0"], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(found, ["f"]);
    }
}
