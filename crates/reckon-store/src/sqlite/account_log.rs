//! Account state as a log of rows written in a ring.
//!
//! `accounts` is a B-tree keyed by account id, so updating a row in place
//! dirties the page that account happens to live on. Over a few thousand
//! accounts those pages stay few and hot; over a million, nearly every
//! change dirties a different page, and each one is a random write when the
//! checkpoint copies it into the database file. Those writes, and the disk
//! latency they add to every WAL fsync, held a million accounts to ~70 % of
//! the `usage` throughput of a thousand (docs/performance-log.md).
//!
//! So a change to an existing account writes the account's whole state as
//! a new row of `account_log` instead (a rowid table; the state in one
//! compact blob, see [`PUT`]). The log's rows are slots, filled in slot
//! order like a ring: each new row goes into the next slot whose row is no
//! longer its account's newest, overwriting it, so the writes stay
//! sequential and nothing is ever deleted. (The log was append-only with
//! its head deleted before, 2026-12-05: SQLite writes every page a `DELETE`
//! frees to the WAL, ~150 of the ~620 bytes a `usage` wrote.)
//! - Every row has `written`, one more than the largest before it (NULL in
//!   rows written before schema version 8, which were appended in order:
//!   theirs is their slot, `seq`). An account's newest state is its row
//!   with the largest `written` if it has one in the log, else its row in
//!   `accounts` (written when it was created, or by a version without this
//!   log). `accounts` stays the list of accounts, and keeps `next_due`
//!   current for the sweeper's index; its other columns go stale once an
//!   account is in the log.
//! - This module keeps, in memory, each logged account's newest row (its
//!   slot and `written`), the largest `written` and the slot after its row:
//!   the cursor, where the next row goes. The ring grows at its end, by
//!   appending, while it holds fewer than [`LOG_ROWS_PER_ACCOUNT`] rows per
//!   logged account plus [`LOG_SLACK_ROWS`]; once it holds that many, the
//!   cursor wraps to the first slot.
//! - Rows are written in slot order, so rows past the cursor with a larger
//!   `written` than the map's are exactly the rows written since, in order,
//!   up to the first slot that is neither new nor still its account's
//!   newest. [`AccountLog::catch_up`] walks them, so any connection brings
//!   the map up to date with whatever it can see, including rows another
//!   process (the CLI) wrote. The writer does so inside its write
//!   transaction before reading or writing any account, so it never works
//!   from a stale map; readers do so at the start of each read.
//! - A reader may find the slot the map names overwritten by then (its
//!   account had a newer row, and the writer has moved on); it catches up
//!   and looks again (`rows::newest_row`).
//! - A start scans the whole log once (`open`), reading rows on the caller's
//!   thread while another builds the map from them: the two halves of the
//!   work cost about the same, so the scan takes about half as long on two
//!   cores.

use crate::error::StoreError;
use crate::executor::IdMap;
use reckon_core::AccountId;
use rusqlite::{params, Connection};
use std::sync::{mpsc, RwLock};

/// Rows the log may hold beyond [`LOG_ROWS_PER_ACCOUNT`] per logged account
/// before its cursor wraps. Keeps a small log (a few hot accounts) from
/// wrapping within a batch, and bounds how far a map can fall behind and
/// still be caught up by a walk (see [`AccountLog::catch_up`]).
pub const LOG_SLACK_ROWS: i64 = 4_096;
/// The ring wraps once it holds this many rows per logged account, plus the
/// slack. With changes spread evenly over accounts, a slot the cursor
/// reaches is still its account's newest with probability p where
/// p = e^(-2(1-p)), about 20 %; it is skipped. A longer ring skips fewer
/// but takes longer to scan at start; three rows per account measured no
/// different from two (docs/performance-log.md).
const LOG_ROWS_PER_ACCOUNT: i64 = 2;

/// Slots read at a time when looking for free ones or catching up.
const WALK_CHUNK_ROWS: i64 = 256;
/// Reads [`WALK_CHUNK_ROWS`] slots from `?1` on, below `?2`. The limit is
/// written in, not bound: SQLite plans a bound LIMIT for its value and
/// prepares the statement again each time it is bound (10 % of the writer's
/// time, 2026-12-05).
const SLOTS: &str = "SELECT seq, id, coalesce(written, seq) FROM account_log
    WHERE seq >= ?1 AND seq < ?2 ORDER BY seq LIMIT 256";

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

/// A logged account's newest row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Newest {
    pub slot: i64,
    pub written: i64,
}

#[derive(Default)]
struct State {
    newest: IdMap<Box<str>, Newest>,
    /// Every row with a smaller or equal `written` has been applied to
    /// `newest`.
    written: i64,
    /// The slot after the row with the largest `written`: where the next
    /// row goes (past the end: it is appended, or the ring wraps).
    cursor: i64,
}

impl State {
    /// Applies a row written after every row applied so far.
    fn apply(&mut self, slot: i64, id: &str, written: i64) {
        let newest = Newest { slot, written };
        match self.newest.get_mut(id) {
            Some(n) => *n = newest,
            None => {
                self.newest.insert(id.into(), newest);
            }
        }
        self.written = written;
        self.cursor = slot + 1;
    }

    /// Applies a row of the whole log read in slot order, where an
    /// account's rows need not come in `written` order.
    fn apply_scanned(&mut self, slot: i64, id: &str, written: i64) {
        let newest = Newest { slot, written };
        match self.newest.get_mut(id) {
            Some(n) if n.written > written => {}
            Some(n) => *n = newest,
            None => {
                self.newest.insert(id.into(), newest);
            }
        }
        if written > self.written {
            self.written = written;
            self.cursor = slot + 1;
        }
    }

    /// Whether the row at `slot`, of account `id`, is its newest.
    fn is_newest(&self, slot: i64, id: &str) -> bool {
        self.newest.get(id).is_some_and(|n| n.slot == slot)
    }
}

/// Rows of the start-up scan in slot order: their ids back to back, and
/// for each row its slot, `written` and where its id ends.
#[derive(Default)]
struct ScanChunk {
    ids: String,
    rows: Vec<(i64, i64, usize)>,
}

/// What a walk from the cursor found.
enum Walk {
    /// Caught up: the first slot neither new nor still its account's newest.
    Done,
    /// The map fell so far behind that the walk cannot tell the rows written
    /// since from older ones (the ring may have come round); scan it whole.
    Rescan,
}

impl AccountLog {
    /// Builds the map by scanning the whole log: this thread reads the rows
    /// and hands them over in chunks, in order, to a thread that builds the
    /// map (see the module docs).
    pub fn open(conn: &Connection) -> Result<AccountLog, StoreError> {
        Ok(AccountLog {
            state: RwLock::new(scan(conn)?),
        })
    }

    /// The newest row of `id`, if the account has one in the log.
    pub fn newest(&self, id: &AccountId) -> Option<Newest> {
        self.read().newest.get(id.as_str()).copied()
    }

    /// Applies the rows written since the map was last caught up that `conn`
    /// can see (see the module docs): one read of the cursor's slot when
    /// there are none.
    pub fn catch_up(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut state = self.state.write().expect("account log lock");
        if let Walk::Rescan = walk(conn, &mut state)? {
            let scanned = scan(conn)?;
            // Never back: a snapshot older than the map's cannot have led here.
            if scanned.written >= state.written {
                *state = scanned;
            }
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("account log lock")
    }
}

/// Reads up to [`WALK_CHUNK_ROWS`] slots from `from` on (below `below`), in
/// order, passing each slot, id and `written` to `row` until it says stop;
/// returns how many it read.
fn slots(
    conn: &Connection,
    from: i64,
    below: i64,
    mut row: impl FnMut(i64, &str, i64) -> bool,
) -> Result<i64, StoreError> {
    let mut stmt = conn.prepare_cached(SLOTS)?;
    let mut rows = stmt.query(params![from, below])?;
    let mut read = 0;
    while let Some(r) = rows.next()? {
        read += 1;
        let id = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
        if !row(r.get(0)?, id, r.get(2)?) {
            break;
        }
    }
    Ok(read)
}

/// Walks the slots from the cursor, applying the rows written since (see
/// the module docs). Rows are written in slot order with `written` rising,
/// so the new ones come first, in order; a row whose `written` is new to
/// the map but lower than one just applied means the writers came round the
/// ring past the cursor, and so does reaching the cursor again. Neither can
/// happen before [`LOG_SLACK_ROWS`] rows were written (a lap writes every
/// slot free when it began, at least the slack), which is far more than
/// the map of a running server ever falls behind.
fn walk(conn: &Connection, state: &mut State) -> Result<Walk, StoreError> {
    let (start, known) = (state.cursor, state.written);
    let mut from = start;
    let mut below = i64::MAX;
    loop {
        let mut end = None;
        let read = slots(conn, from, below, |slot, id, written| {
            from = slot + 1;
            if written > state.written {
                state.apply(slot, id, written);
                true
            } else if written > known {
                end = Some(Walk::Rescan);
                false
            } else if state.is_newest(slot, id) {
                true
            } else {
                end = Some(Walk::Done);
                false
            }
        })?;
        if let Some(end) = end {
            return Ok(end);
        }
        if read < WALK_CHUNK_ROWS {
            // The end of the ring; the rest of it is before the start.
            if below != i64::MAX {
                // Round to the cursor: nothing was new, or the writers came
                // round the whole ring.
                return Ok(if state.written == known {
                    Walk::Done
                } else {
                    Walk::Rescan
                });
            }
            (from, below) = (i64::MIN, start);
        }
    }
}

/// The map of the whole log: this thread reads the rows and hands them over
/// in chunks, in order, to a thread that builds the map.
fn scan(conn: &Connection) -> Result<State, StoreError> {
    let (chunks, received) = mpsc::sync_channel::<ScanChunk>(SCAN_CHUNKS_AHEAD);
    std::thread::scope(|scope| -> Result<State, StoreError> {
        let builder = std::thread::Builder::new()
            .name("reckon-log-scan".into())
            .spawn_scoped(scope, move || {
                let mut state = State::default();
                for chunk in received {
                    let mut start = 0;
                    for &(slot, written, end) in &chunk.rows {
                        state.apply_scanned(slot, &chunk.ids[start..end], written);
                        start = end;
                    }
                }
                state
            })?;
        let read = read_all(conn, |chunk| {
            // The builder only stops when this sender is dropped.
            let _ = chunks.send(chunk);
        });
        drop(chunks);
        let state = builder
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        read.map(|()| state)
    })
}

/// Reads the whole log in slot order and passes it to `send` in chunks of
/// [`SCAN_CHUNK_ROWS`] rows.
fn read_all(conn: &Connection, mut send: impl FnMut(ScanChunk)) -> Result<(), StoreError> {
    let mut chunk = ScanChunk::default();
    let mut stmt = conn
        .prepare_cached("SELECT seq, id, coalesce(written, seq) FROM account_log ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        chunk
            .ids
            .push_str(r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?);
        chunk.rows.push((r.get(0)?, r.get(2)?, chunk.ids.len()));
        if chunk.rows.len() == SCAN_CHUNK_ROWS {
            send(std::mem::take(&mut chunk));
        }
    }
    if !chunk.rows.is_empty() {
        send(chunk);
    }
    Ok(())
}

/// The account columns, in `rows::ACCOUNT_COLUMNS` order, that a log row
/// holds besides its slot (`seq`), `state` and `written` (a macro so statements can be built
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
/// A log row's columns as read: `log_columns!`, then `state` and `written`
/// (a row's slot for rows written before schema version 8).
pub const ROW_COLUMNS: &str = concat!(log_columns!(), ", state, coalesce(written, seq)");
/// Where `state` is among [`ROW_COLUMNS`].
pub const STATE_COLUMN: usize = LOG_COLUMN_COUNT;
/// Where the row's `written` is among [`ROW_COLUMNS`].
pub const WRITTEN_COLUMN: usize = LOG_COLUMN_COUNT + 1;
/// Where `last_event_seq` is among [`ROW_COLUMNS`].
pub const LAST_EVENT_SEQ_COLUMN: usize = LOG_COLUMN_COUNT - 1;
/// Writes an account's state into a slot (a new one past the end, or over a
/// row no longer its account's newest): the slot, its id, the seq of its
/// newest event, its state as `compact::encode_stored` writes it, and
/// `written`. The other columns (NOT NULL since schema version 5) get empty
/// texts and zeros: a byte of the row's header each. One statement for
/// both: SQLite replaces a rowid's row in place.
pub const PUT: &str = "INSERT OR REPLACE INTO account_log
    (seq, id, unit, status, metadata, overage, created_at, updated_at, granted, used, expired, next_grant_seq, grants, last_event_seq, state, written)
    VALUES (?1, ?2, '', '', '', '', 0, 0, 0, 0, 0, 0, '', ?3, ?4, ?5)";

/// An account's new row: its id, the seq of its newest event and its state
/// as `compact::encode_stored` wrote it.
pub struct NewRow<'a> {
    pub id: &'a str,
    pub last_event_seq: Option<i64>,
    pub state: &'a [u8],
}

/// Writes `rows` (at most one per account) into the ring inside the
/// writer's transaction, from the cursor on: each into the next slot whose
/// row is no longer its account's newest, or appended past the end while
/// the ring is short (see the module docs). The map must be caught up (the
/// writer's transaction starts with it); it learns of these rows when it
/// next catches up, once they are committed.
pub fn write(conn: &Connection, log: &AccountLog, rows: &[NewRow<'_>]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let state = log.read();
    // Slots for `rows`, in order; and each of this batch's accounts' slot,
    // so a slot holding its previous newest row counts as free.
    let mut free: Vec<i64> = Vec::with_capacity(rows.len());
    let mut taken: IdMap<&str, i64> = IdMap::default();
    let (mut from, mut below) = (state.cursor, i64::MAX);
    while free.len() < rows.len() {
        let read = slots(conn, from, below, |slot, id, _| {
            from = slot + 1;
            let newest = match taken.get(id) {
                Some(&mine) => mine == slot,
                None => state.is_newest(slot, id),
            };
            if !newest {
                let row = &rows[free.len()];
                taken.insert(row.id, slot);
                free.push(slot);
            }
            free.len() < rows.len()
        })?;
        if free.len() == rows.len() || read == WALK_CHUNK_ROWS {
            continue;
        }
        // The end of the ring: grow it while it is short (and if a whole lap
        // found too few free slots, which the slack rules out), else wrap.
        let (first, last): (Option<i64>, Option<i64>) = conn
            .prepare_cached("SELECT min(seq), max(seq) FROM account_log")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let (first, last) = (first.unwrap_or(1), last.unwrap_or(0));
        let logged = state.newest.len()
            + rows
                .iter()
                .filter(|r| !state.newest.contains_key(r.id))
                .count();
        let allowed = logged as i64 * LOG_ROWS_PER_ACCOUNT + LOG_SLACK_ROWS;
        if last - first + 1 < allowed || below != i64::MAX {
            free.extend((last + 1..).take(rows.len() - free.len()));
        } else {
            (from, below) = (first, state.cursor);
        }
    }
    let mut put = conn.prepare_cached(PUT)?;
    for ((row, slot), written) in rows.iter().zip(free).zip(state.written + 1..) {
        put.execute(params![
            slot,
            row.id,
            row.last_event_seq,
            row.state,
            written
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn
    }

    /// Writes one row per id, as the writer does in one transaction, its
    /// state the bytes of `n` (what tells rows apart here), after catching
    /// up as the writer's transaction starts.
    fn put(conn: &Connection, log: &AccountLog, ids: &[&str], n: u32) {
        log.catch_up(conn).unwrap();
        let state = n.to_le_bytes();
        let rows: Vec<NewRow> = ids
            .iter()
            .map(|&id| NewRow {
                id,
                last_event_seq: None,
                state: &state,
            })
            .collect();
        write(conn, log, &rows).unwrap();
    }

    /// The `n` of `id`'s newest row, as the map finds it after catching up.
    fn newest(conn: &Connection, log: &AccountLog, id: &str) -> u32 {
        log.catch_up(conn).unwrap();
        let n = log.newest(&AccountId::parse(id).unwrap()).unwrap();
        let (row_id, state, written): (String, Vec<u8>, i64) = conn
            .query_row(
                "SELECT id, state, coalesce(written, seq) FROM account_log WHERE seq = ?1",
                [n.slot],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((row_id.as_str(), written), (id, n.written));
        u32::from_le_bytes(state.try_into().unwrap())
    }

    fn rows(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM account_log", [], |r| r.get(0))
            .unwrap()
    }

    /// The ring grows to its limit, then wraps and overwrites only rows no
    /// longer their account's newest: a cold account written once keeps
    /// its row through many laps of a hot one's.
    #[test]
    fn the_ring_wraps_and_keeps_every_newest_row() {
        let conn = log_db();
        let log = AccountLog::default();
        put(&conn, &log, &["cold"], 7);
        let limit = 2 * 2 + LOG_SLACK_ROWS;
        for n in 0..3 * limit as u32 {
            put(&conn, &log, &["hot"], n);
        }
        assert_eq!(rows(&conn), limit, "the ring stopped growing at its limit");
        assert_eq!(newest(&conn, &log, "cold"), 7);
        assert_eq!(newest(&conn, &log, "hot"), 3 * limit as u32 - 1);
    }

    /// A second handle's map (another process) catches up by walking from
    /// its cursor, across the ring's end, and agrees with a fresh scan.
    #[test]
    fn a_walk_finds_what_another_handle_wrote_across_the_wrap() {
        let conn = log_db();
        let (writer, other) = (AccountLog::default(), AccountLog::default());
        let ids: Vec<String> = (0..100).map(|i| format!("acct-{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut n = 0;
        for round in 0..1_000 {
            // Ten accounts a batch, the first half of them more often.
            let batch: Vec<&str> = (0..10)
                .map(|k| ids[(round * 10 + k) * 7 % if round % 3 == 0 { 100 } else { 50 }])
                .collect::<std::collections::BTreeSet<&str>>()
                .into_iter()
                .collect();
            n += 1;
            put(&conn, &writer, &batch, n);
            if round % 17 == 0 {
                other.catch_up(&conn).unwrap();
            }
        }
        assert!(rows(&conn) < 5_000, "the ring wrapped");
        let scanned = AccountLog::open(&conn).unwrap();
        for log in [&writer, &other] {
            log.catch_up(&conn).unwrap();
            assert_eq!(log.read().newest, scanned.read().newest);
            assert_eq!(log.read().cursor, scanned.read().cursor);
        }
    }

    /// A map that fell more than a lap behind (a process idle while others
    /// wrote) cannot trust a walk; it scans the log again.
    #[test]
    fn a_map_a_lap_behind_scans_again() {
        let conn = log_db();
        let (writer, idle) = (AccountLog::default(), AccountLog::default());
        put(&conn, &writer, &["a", "b"], 0);
        idle.catch_up(&conn).unwrap();
        put(&conn, &writer, &["b"], 1);
        for n in 2..3 * LOG_SLACK_ROWS as u32 {
            put(&conn, &writer, &["c"], n);
        }
        assert_eq!(newest(&conn, &idle, "a"), 0);
        assert_eq!(newest(&conn, &idle, "b"), 1);
        assert_eq!(newest(&conn, &idle, "c"), 3 * LOG_SLACK_ROWS as u32 - 1);
        writer.catch_up(&conn).unwrap();
        assert_eq!(idle.read().newest, writer.read().newest);
    }

    /// Rows appended before schema version 8 have no `written`; their slot
    /// stands for it, and the ring carries on after them.
    #[test]
    fn rows_from_before_the_ring_read_in_slot_order() {
        let conn = log_db();
        for (id, n) in [("a", 1u32), ("b", 2), ("a", 3)] {
            conn.execute(
                "INSERT INTO account_log (id, unit, status, metadata, overage, created_at, updated_at,
                     granted, used, expired, next_grant_seq, grants, state)
                 VALUES (?1, '', '', '', '', 0, 0, 0, 0, 0, 0, '', ?2)",
                params![id, n.to_le_bytes()],
            )
            .unwrap();
        }
        let log = AccountLog::open(&conn).unwrap();
        assert_eq!(
            log.newest(&AccountId::parse("a").unwrap()).unwrap().written,
            3
        );
        put(&conn, &log, &["b"], 4);
        let count = |id: &str| -> i64 {
            conn.query_row(
                "SELECT count(*) FROM account_log WHERE id = ?1 AND written IS NOT NULL",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(count("b"), 1);
        let reopened = AccountLog::open(&conn).unwrap();
        for l in [&log, &reopened] {
            l.catch_up(&conn).unwrap();
        }
        assert_eq!(log.read().newest, reopened.read().newest);
        assert_eq!(newest(&conn, &reopened, "b"), 4);
        assert_eq!(newest(&conn, &reopened, "a"), 3);
    }

    /// The start-up scan hands rows over in chunks to another thread; what
    /// it builds must be what catching up row by row builds, across chunk
    /// boundaries.
    #[test]
    fn the_start_up_scan_builds_what_a_catch_up_builds() {
        let conn = log_db();
        let log = AccountLog::default();
        let accounts = 1_000;
        let ids: Vec<String> = (0..accounts).map(|i| format!("acct-{i}")).collect();
        for i in 0..2 * SCAN_CHUNK_ROWS + 7 {
            // Ids of different lengths, and an account's rows spread across
            // chunks.
            put(
                &conn,
                &log,
                &[ids[(i * 7919) % accounts].as_str()],
                i as u32,
            );
        }
        log.catch_up(&conn).unwrap();
        let scanned = AccountLog::open(&conn).unwrap();
        let (scanned, caught_up) = (scanned.read(), log.read());
        assert_eq!(scanned.written, (2 * SCAN_CHUNK_ROWS + 7) as i64);
        assert_eq!(scanned.written, caught_up.written);
        assert_eq!(scanned.cursor, caught_up.cursor);
        assert_eq!(scanned.newest.len(), accounts);
        assert_eq!(scanned.newest, caught_up.newest);
    }

    /// A log with no rows: nothing to hand over, and no thread left waiting.
    #[test]
    fn the_start_up_scan_of_an_empty_log_is_empty() {
        let log = AccountLog::open(&log_db()).unwrap();
        assert_eq!(log.read().written, 0);
        assert!(log.read().newest.is_empty());
    }

    #[test]
    fn the_slots_statement_reads_a_chunk() {
        assert!(SLOTS.ends_with(&format!("LIMIT {WALK_CHUNK_ROWS}")));
    }

    #[test]
    fn column_count_matches_the_list() {
        let written = ", coalesce(written, seq)";
        let columns: Vec<&str> = ROW_COLUMNS
            .strip_suffix(written)
            .unwrap()
            .split(", ")
            .collect();
        assert_eq!(columns.len(), LOG_COLUMN_COUNT + 1);
        assert_eq!(columns[LAST_EVENT_SEQ_COLUMN], "last_event_seq");
        assert_eq!(columns[STATE_COLUMN], "state");
        assert_eq!(WRITTEN_COLUMN, columns.len());
    }
}
