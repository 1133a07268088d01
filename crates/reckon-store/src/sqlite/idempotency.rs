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

use crate::error::StoreError;
use crate::executor::{IdempotencyRecord, IdempotencyWrite, Plan, Prefetched};
use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

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

/// Makes [`key_hash`] callable from SQL as `reckon_key_hash(account_id,
/// key)`, for the migration that moves existing records into the log.
pub fn register_key_hash(conn: &Connection) -> Result<(), StoreError> {
    conn.create_scalar_function(
        "reckon_key_hash",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let account_id = ctx.get_raw(0).as_str()?;
            let key = ctx.get_raw(1).as_str()?;
            Ok(key_hash(account_id, key))
        },
    )?;
    Ok(())
}

const LOOKUP: &str = "SELECT fingerprint, outcome FROM idempotency_log
     WHERE key_hash = ?1 AND account_id = ?2 AND key = ?3";
const INSERT: &str =
    "INSERT INTO idempotency_log (key_hash, account_id, key, fingerprint, outcome, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Loads the records of the keys `plan` names into `out`, whose accounts
/// are already loaded: a replay answers with the account as it is now (see
/// `codec::encode_outcome`). A record is only ever written for a command
/// that changed its account, so the account exists.
pub fn load(conn: &Connection, plan: &Plan, out: &mut Prefetched) -> Result<(), StoreError> {
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
pub fn purge(
    conn: &Connection,
    before: reckon_core::Timestamp,
    limit: u64,
) -> Result<u64, StoreError> {
    Ok(conn.execute(PURGE, params![before.millis(), limit as i64])? as u64)
}

const PURGE: &str = "DELETE FROM idempotency_log WHERE seq < coalesce(
         (SELECT seq FROM idempotency_log
          WHERE seq < (SELECT min(seq) FROM idempotency_log) + ?2 AND created_at >= ?1
          ORDER BY seq LIMIT 1),
         (SELECT min(seq) FROM idempotency_log) + ?2)";

#[cfg(test)]
mod tests {
    use super::*;
    use reckon_core::Timestamp;

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
        assert_eq!(purge(&conn, before, 3).unwrap(), 3);
        assert_eq!(left(&conn), [4, 5, 9]);
        assert_eq!(purge(&conn, before, 3).unwrap(), 1);
        assert_eq!(left(&conn), [5, 9]);
        assert_eq!(purge(&conn, before, 3).unwrap(), 0);
        assert_eq!(purge(&conn, Timestamp::from_millis(100), 3).unwrap(), 2);
        assert_eq!(left(&conn), Vec::<i64>::new());
        assert_eq!(purge(&conn, Timestamp::from_millis(100), 3).unwrap(), 0);
    }

    /// After the clock was set back, an older record behind a newer one is
    /// kept until the newer one goes: kept too long, never too short.
    #[test]
    fn purge_stops_at_the_first_record_to_keep() {
        let conn = log_with(&[1, 7, 2, 8]);
        assert_eq!(purge(&conn, Timestamp::from_millis(5), 10).unwrap(), 1);
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
