//! Account state as an append-only log.
//!
//! `accounts` is a B-tree keyed by account id, so updating a row in place
//! dirties the page that account happens to live on. Over a few thousand
//! accounts those pages stay few and hot; over a million, nearly every
//! change dirties a different page, and each one is a random write when the
//! checkpoint copies it into the database file. Those writes, and the disk
//! latency they add to every WAL fsync, held a million accounts to ~70 % of
//! the `usage` throughput of a thousand (docs/performance-log.md).
//!
//! So a change to an existing account appends the account's whole state to
//! `account_log` instead (a rowid table: appends land on its last page; the
//! state in one compact blob, see [`APPEND`]), and this module keeps, in
//! memory, where each account's newest row is:
//! - The newest state of an account is its row in `account_log` at
//!   [`AccountLog::newest`] if it has one, else its row in `accounts`
//!   (written when it was created, or by a version without this log).
//!   `accounts` stays the list of accounts, and keeps `next_due` current
//!   for the sweeper's index; its other columns go stale once an account
//!   is in the log.
//! - The map is exactly "the log scanned in `seq` order, the last row per
//!   account winning", up to `max_seq`. [`AccountLog::catch_up`] scans rows
//!   past `max_seq`, so any connection brings it up to date with whatever
//!   it can see, including rows another process (the CLI) appended. The
//!   writer does so inside its write transaction before reading any
//!   account, so it never works from a stale row; readers do so at the
//!   start of each read.
//! - Old rows are removed only from the log's head by [`clean`], in the
//!   writer's transaction: a head row that is still an account's newest is
//!   appended again first, so a deleted row always has a newer one for the
//!   same account, which a catch-up finds. Rowids are never reused: the
//!   newest row is never in the cleaned range.
//! - A start scans the whole log once (`open`), reading rows on the caller's
//!   thread while another builds the map from them: the two halves of the
//!   work cost about the same, so the scan takes about half as long on two
//!   cores.

use crate::error::StoreError;
use crate::executor::IdMap;
use reckon_core::AccountId;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};
use std::sync::{mpsc, RwLock};

/// Rows the log may hold beyond [`LOG_ROWS_PER_ACCOUNT`] per logged account
/// before the writer starts cleaning its head. Keeps a small log (a few hot
/// accounts) from being cleaned on every batch.
pub const LOG_SLACK_ROWS: i64 = 4_096;
/// The log is cleaned once it holds more than this many rows per logged
/// account, plus the slack. With changes spread evenly over accounts, a
/// head row is still its account's newest with probability p where
/// p = e^(-2(1-p)), about 20 %, so cleaning appends ~0.25 rows per change
/// and deletes ~1.25. At 1.25 rows per account it was p = 61 % (2.6 rows
/// appended per change), which doubled the writer's time per request at a
/// million accounts; a longer log costs less to clean but takes longer to
/// scan at start.
const LOG_ROWS_PER_ACCOUNT: i64 = 2;
/// Fewest head rows one cleaning pass looks at.
const CLEAN_ROWS_MIN: i64 = 32;
/// Most head rows one cleaning pass looks at, so no batch pays for a long
/// backlog at once.
const CLEAN_ROWS_MAX: i64 = 4_096;

/// Rows one chunk of the start-up scan carries to the thread building the
/// map: large enough that handing chunks over costs nothing measurable.
const SCAN_CHUNK_ROWS: usize = 4_096;
/// Chunks the start-up scan may read ahead of the map, bounding its memory.
const SCAN_CHUNKS_AHEAD: usize = 8;

/// Where each logged account's newest row is; see the module docs.
#[derive(Default)]
pub struct AccountLog {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    newest: IdMap<Box<str>, i64>,
    /// Every row with a smaller or equal `seq` has been applied to `newest`.
    max_seq: i64,
}

impl State {
    /// Applies the log row `seq` of account `id`; rows come in `seq` order.
    /// An id already in the map is not allocated again: the log holds up to
    /// two rows per account.
    fn apply(&mut self, seq: i64, id: &str) {
        match self.newest.get_mut(id) {
            Some(newest) => *newest = seq,
            None => {
                self.newest.insert(id.into(), seq);
            }
        }
        self.max_seq = seq;
    }
}

/// Rows of the start-up scan in `seq` order: their ids back to back, and
/// for each row its `seq` and where its id ends.
#[derive(Default)]
struct ScanChunk {
    ids: String,
    rows: Vec<(i64, usize)>,
}

impl AccountLog {
    /// Builds the map by scanning the whole log: this thread reads the rows
    /// and hands them over in chunks, in order, to a thread that builds the
    /// map (see the module docs).
    pub fn open(conn: &Connection) -> Result<AccountLog, StoreError> {
        let (chunks, received) = mpsc::sync_channel::<ScanChunk>(SCAN_CHUNKS_AHEAD);
        let state = std::thread::scope(|scope| -> Result<State, StoreError> {
            let builder = std::thread::Builder::new()
                .name("reckon-log-scan".into())
                .spawn_scoped(scope, move || {
                    let mut state = State::default();
                    for chunk in received {
                        let mut start = 0;
                        for &(seq, end) in &chunk.rows {
                            state.apply(seq, &chunk.ids[start..end]);
                            start = end;
                        }
                    }
                    state
                })?;
            let read = scan(conn, |chunk| {
                // The builder only stops when this sender is dropped.
                let _ = chunks.send(chunk);
            });
            drop(chunks);
            let state = builder
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            read.map(|()| state)
        })?;
        Ok(AccountLog {
            state: RwLock::new(state),
        })
    }

    /// The `seq` of `id`'s newest row, if the account has one in the log.
    pub fn newest(&self, id: &AccountId) -> Option<i64> {
        self.read().newest.get(id.as_str()).copied()
    }

    /// Applies the rows past `max_seq` that `conn` can see: one index seek
    /// when there are none, under the write lock (asking first whether there
    /// are any cost the writer, which always finds its last batch's rows, a
    /// second statement per batch).
    pub fn catch_up(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut state = self.state.write().expect("account log lock");
        let after = state.max_seq;
        rows_after(conn, after, |seq, id| state.apply(seq, id))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("account log lock")
    }
}

/// Passes `seq` and `id` of every log row past `after` to `row`, in order.
fn rows_after(
    conn: &Connection,
    after: i64,
    mut row: impl FnMut(i64, &str),
) -> Result<(), StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, id FROM account_log WHERE seq > ?1 ORDER BY seq")?;
    let mut rows = stmt.query([after])?;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        row(seq, r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?);
    }
    Ok(())
}

/// Reads the whole log in `seq` order and passes it to `send` in chunks of
/// [`SCAN_CHUNK_ROWS`] rows.
fn scan(conn: &Connection, mut send: impl FnMut(ScanChunk)) -> Result<(), StoreError> {
    let mut chunk = ScanChunk::default();
    rows_after(conn, 0, |seq, id| {
        chunk.ids.push_str(id);
        chunk.rows.push((seq, chunk.ids.len()));
        if chunk.rows.len() == SCAN_CHUNK_ROWS {
            send(std::mem::take(&mut chunk));
        }
    })?;
    if !chunk.rows.is_empty() {
        send(chunk);
    }
    Ok(())
}

/// The account columns, in `rows::ACCOUNT_COLUMNS` order, that a log row
/// holds besides its `seq` and `state` (a macro so statements can be built
/// from it at compile time: `rows::INSERT_ACCOUNT`). Rows written since
/// schema version 7 leave them empty (or zero) but for `id` and
/// `last_event_seq`, and keep the rest in `state`.
macro_rules! log_columns {
    () => {
        "id, unit, status, expires_at, timezone, metadata, overage, created_at, updated_at, granted, used, expired, next_grant_seq, grants, last_event_seq"
    };
}
pub(crate) use log_columns;
/// How many columns `log_columns!` names.
pub const LOG_COLUMN_COUNT: usize = 15;
/// A log row's columns as read: `log_columns!`, then `state`.
pub const ROW_COLUMNS: &str = concat!(log_columns!(), ", state");
/// Where `state` is among [`ROW_COLUMNS`].
pub const STATE_COLUMN: usize = LOG_COLUMN_COUNT;
/// Appends an account's state: its id, the seq of its newest event and its
/// state as `compact::encode_stored` writes it. The other columns (NOT NULL
/// since schema version 5) get empty texts and zeros: a byte of the row's
/// header each.
pub const APPEND: &str = "INSERT INTO account_log
    (id, unit, status, metadata, overage, created_at, updated_at, granted, used, expired, next_grant_seq, grants, last_event_seq, state)
    VALUES (?1, '', '', '', '', 0, 0, 0, 0, 0, 0, '', ?2, ?3)";
/// Appends a row's values as read, in [`ROW_COLUMNS`] order.
const APPEND_ROW: &str = concat!(
    "INSERT INTO account_log (",
    log_columns!(),
    ", state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
);

/// Removes rows from the log's head inside the writer's transaction, as
/// many as the log has beyond [`LOG_ROWS_PER_ACCOUNT`] (and the slack). A
/// head row that is still its account's newest is appended again first.
/// `written` are the accounts this transaction already appended (their head
/// rows are stale even though the map, caught up at the transaction's start,
/// does not know it yet), one row each.
pub fn clean(
    conn: &Connection,
    log: &AccountLog,
    written: &crate::executor::IdSet<&str>,
) -> Result<(), StoreError> {
    let Some(head) = conn
        .prepare_cached("SELECT seq FROM account_log ORDER BY seq LIMIT 1")?
        .query_row([], |r| r.get::<_, i64>(0))
        .optional()?
    else {
        return Ok(());
    };
    let state = log.read();
    let rows = state.max_seq - head + 1 + written.len() as i64;
    let allowed = state.newest.len() as i64 * LOG_ROWS_PER_ACCOUNT + LOG_SLACK_ROWS;
    if rows <= allowed {
        return Ok(());
    }
    // Only rows the map has seen (not this transaction's), and never the
    // newest row: the slack keeps the head far from it.
    let budget = (rows - allowed).clamp(CLEAN_ROWS_MIN, CLEAN_ROWS_MAX);
    let end = (head + budget - 1).min(state.max_seq - 1);
    if end < head {
        return Ok(());
    }
    // Live rows are read out and appended as values: `INSERT ... SELECT`
    // may write several rows, so inside a transaction SQLite keeps a
    // statement journal for it, and allocating and freeing that journal
    // (glibc trimming its heap with `madvise` on the way) was ~30 % of the
    // writer's time at a million accounts. A `DELETE` needs none (no
    // triggers or foreign keys here), so the head goes in one statement.
    // Only the live rows' columns are read: most head rows are dead.
    let mut live: Vec<i64> = Vec::new();
    {
        let mut stmt = conn.prepare_cached("SELECT seq, id FROM account_log WHERE seq <= ?1")?;
        let mut rows = stmt.query([end])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let id = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            if !written.contains(id) && state.newest.get(id) == Some(&seq) {
                live.push(seq);
            }
        }
    }
    for seq in live {
        append_copy(conn, seq, |_| {})?;
    }
    conn.prepare_cached("DELETE FROM account_log WHERE seq <= ?1")?
        .execute([end])?;
    Ok(())
}

/// Where `last_event_seq` is among [`ROW_COLUMNS`].
pub const LAST_EVENT_SEQ_COLUMN: usize = LOG_COLUMN_COUNT - 1;

/// Appends a copy of the log row at `seq`, its values (in [`ROW_COLUMNS`]
/// order) changed by `edit` first. Read out and appended as values, not by
/// `INSERT ... SELECT`: see the statement journal in [`clean`].
fn append_copy(
    conn: &Connection,
    seq: i64,
    edit: impl FnOnce(&mut [Value]),
) -> Result<(), StoreError> {
    let mut values: Vec<Value> = conn
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM account_log WHERE seq = ?1"
        ))?
        .query_row([seq], |row| {
            (0..=STATE_COLUMN).map(|i| row.get(i)).collect()
        })?;
    edit(&mut values);
    conn.prepare_cached(APPEND_ROW)?
        .execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

/// Appends a copy of the log row at `seq` whose event chain head is
/// `last_event_seq` (an event appended outside a ledger batch).
pub fn append_with_head(
    conn: &Connection,
    seq: i64,
    last_event_seq: i64,
) -> Result<(), StoreError> {
    append_copy(conn, seq, |values| {
        values[LAST_EVENT_SEQ_COLUMN] = Value::Integer(last_event_seq)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::IdSet;

    #[test]
    fn column_count_matches_the_list() {
        let columns: Vec<&str> = ROW_COLUMNS.split(", ").collect();
        assert_eq!(columns.len(), LOG_COLUMN_COUNT + 1);
        assert_eq!(columns[LAST_EVENT_SEQ_COLUMN], "last_event_seq");
        assert_eq!(columns[STATE_COLUMN], "state");
    }

    /// Appends a row for `id` with `used` as its only distinguishing value,
    /// in columns, as rows were written before schema version 7 (the
    /// cleaning copies them as they are).
    fn append(conn: &Connection, id: &str, used: i64) {
        let (none, no_text) = (None::<i64>, None::<String>);
        let row = rusqlite::params![
            id,
            "credits",
            "active",
            none,
            no_text,
            "{}",
            "reject",
            0,
            0,
            100,
            used,
            0,
            1,
            "",
            none,
            None::<Vec<u8>>
        ];
        conn.execute(APPEND_ROW, row).unwrap();
    }

    /// A log whose head row is `cold`'s only row, followed by enough rows of
    /// `hot` to need cleaning.
    fn log_with_cold_head() -> (Connection, AccountLog) {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        append(&conn, "cold", 1);
        for used in 0..LOG_SLACK_ROWS + 100 {
            append(&conn, "hot", used);
        }
        let log = AccountLog::open(&conn).unwrap();
        (conn, log)
    }

    /// The start-up scan hands rows over in chunks to another thread; what
    /// it builds must be what applying the rows one by one builds: the last
    /// row per account, across chunk boundaries, and the largest `seq`.
    #[test]
    fn the_start_up_scan_builds_what_a_catch_up_builds() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let accounts = 1_000;
        let rows = 2 * SCAN_CHUNK_ROWS + 7;
        for i in 0..rows {
            // Ids of different lengths, and an account's rows spread across
            // chunks.
            append(&conn, &format!("acct-{}", (i * 7919) % accounts), i as i64);
        }
        let scanned = AccountLog::open(&conn).unwrap();
        let caught_up = AccountLog::default();
        caught_up.catch_up(&conn).unwrap();
        let (scanned, caught_up) = (scanned.read(), caught_up.read());
        assert_eq!(scanned.max_seq, rows as i64);
        assert_eq!(scanned.max_seq, caught_up.max_seq);
        assert_eq!(scanned.newest.len(), accounts);
        assert_eq!(scanned.newest, caught_up.newest);
    }

    /// A log with no rows: nothing to hand over, and no thread left waiting.
    #[test]
    fn the_start_up_scan_of_an_empty_log_is_empty() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let log = AccountLog::open(&conn).unwrap();
        assert_eq!(log.read().max_seq, 0);
        assert!(log.read().newest.is_empty());
    }

    fn used_in_newest(conn: &Connection, log: &AccountLog, id: &str) -> i64 {
        let seq = log.newest(&AccountId::parse(id).unwrap()).unwrap();
        conn.query_row("SELECT used FROM account_log WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .unwrap()
    }

    #[test]
    fn cleaning_keeps_a_live_head_row() {
        let (conn, log) = log_with_cold_head();
        clean(&conn, &log, &IdSet::default()).unwrap();
        log.catch_up(&conn).unwrap();
        let head: i64 = conn
            .query_row("SELECT min(seq) FROM account_log", [], |r| r.get(0))
            .unwrap();
        assert!(head > 1, "the head was cleaned");
        assert_eq!(
            used_in_newest(&conn, &log, "cold"),
            1,
            "cold was appended again"
        );
    }

    /// The batch cleaning the head already appended a newer row for the
    /// head's account: the old row must not be appended after it.
    #[test]
    fn cleaning_skips_accounts_the_batch_wrote() {
        let (conn, log) = log_with_cold_head();
        append(&conn, "cold", 2);
        clean(&conn, &log, &IdSet::from_iter(["cold"])).unwrap();
        log.catch_up(&conn).unwrap();
        assert_eq!(
            used_in_newest(&conn, &log, "cold"),
            2,
            "the batch's row stays the newest"
        );
    }
}
