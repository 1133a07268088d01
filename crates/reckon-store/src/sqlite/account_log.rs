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
//!   slot), a bitmap of the slots holding some account's
//!   newest row (live; the others are free), the largest `written` and the
//!   slot after its row: the cursor, where the next row goes. A row goes
//!   into the next free slot from the cursor; at the ring's end it is
//!   appended while the ring holds fewer than [`LOG_ROWS_PER_ACCOUNT`]
//!   rows per logged account plus [`LOG_SLACK_ROWS`], and once it holds
//!   that many, into the free slots from the ring's start on. The rule is
//!   the same for every batch and every process.
//! - So the rows written since the map was last caught up are found by
//!   following that rule with the map, applying each row as it is found:
//!   the slot the rule names holds the next row (its `written` one more
//!   than the map's), or no new row at all.
//!   [`AccountLog::catch_up`] walks them, so any connection brings the map
//!   up to date with whatever it can see, including rows another process
//!   (the CLI) wrote. The writer does so inside its write transaction
//!   before reading or writing any account, so it never works from a stale
//!   map, and after its commit tells the map where its own rows went
//!   ([`AccountLog::learn`]); readers catch up at the start of each read.
//! - A reader may find the slot the map names overwritten by then (its
//!   account had a newer row, and the writer has moved on); it catches up
//!   and looks again (`rows::newest_row`).
//! - A start scans the whole log once (`open`), reading rows on the caller's
//!   thread while another builds the map from them: the two halves of the
//!   work cost about the same, so the scan takes about half as long on two
//!   cores.

use super::cache::ChainHeads;
use crate::error::StoreError;
use crate::executor::IdMap;
use reckon_core::AccountId;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeSet;
use std::sync::{mpsc, RwLock};

/// Rows the log may hold beyond [`LOG_ROWS_PER_ACCOUNT`] per logged account
/// before its cursor wraps. Keeps a small log (a few hot accounts) from
/// wrapping within a batch; and a lap of the ring writes at least this
/// many rows, so a map that fell fewer behind is always caught up by a
/// walk, without scanning the log (see [`AccountLog::catch_up`]).
pub const LOG_SLACK_ROWS: i64 = 4_096;
/// The ring wraps once it holds this many rows per logged account, plus the
/// slack. With changes spread evenly over accounts, a slot the cursor
/// reaches is still its account's newest with probability p where
/// p = e^(-2(1-p)), about 20 %; it is skipped. A longer ring skips fewer
/// but takes longer to scan at start; three rows per account measured no
/// different from two when the log still deleted its head
/// (docs/performance-log.md).
const LOG_ROWS_PER_ACCOUNT: i64 = 2;

/// Reads one slot's id and `written`.
const SLOT: &str = "SELECT id, coalesce(written, seq) FROM account_log WHERE seq = ?1";

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
    /// Each logged account's newest row, by slot. Its `written` is not kept:
    /// at a million accounts 8 bytes more an entry cost ~17 MB (the table has
    /// 2^21 buckets), and only the start-up scan needs it.
    newest: IdMap<Box<str>, i64>,
    /// Every row with a smaller or equal `written` has been applied to
    /// `newest`.
    written: i64,
    /// The slot after the row with the largest `written`: where the next
    /// row goes (past the end: it is appended, or the ring wraps).
    cursor: i64,
    ring: Ring,
}

impl State {
    /// Applies a row written after every row applied so far.
    fn apply(&mut self, slot: i64, id: &str, written: i64) {
        match self.newest.get_mut(id) {
            Some(newest) => {
                self.ring.set(*newest, false);
                *newest = slot;
            }
            None => {
                self.newest.insert(id.into(), slot);
            }
        }
        self.ring.set(slot, true);
        self.written = written;
        self.cursor = slot + 1;
    }
}

/// Which of the ring's slots hold their account's newest row, one bit a
/// slot (~250 KiB for a million accounts): the writer and a catch-up find
/// the next free slot without reading rows.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ring {
    /// The lowest slot: 1 in a log made empty, higher in one whose head the
    /// writer deleted before schema version 8.
    first: i64,
    len: i64,
    live: Vec<u64>,
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            first: 1,
            len: 0,
            live: Vec::new(),
        }
    }
}

impl Ring {
    /// The slot past the last.
    fn end(&self) -> i64 {
        self.first + self.len
    }

    /// Marks `slot` live or free; a slot past the end grows the ring to it.
    fn set(&mut self, slot: i64, live: bool) {
        if self.len == 0 && self.live.is_empty() {
            self.first = slot;
        }
        if slot >= self.end() {
            self.len = slot - self.first + 1;
            self.live.resize((self.len as usize).div_ceil(64), 0);
        }
        let i = (slot - self.first) as usize;
        let bit = 1u64 << (i % 64);
        if live {
            self.live[i / 64] |= bit;
        } else {
            self.live[i / 64] &= !bit;
        }
    }

    /// The first free slot at or after `from`, before the ring's end.
    fn next_free(&self, from: i64) -> Option<i64> {
        let start = (from.max(self.first) - self.first) as usize;
        let end = self.len as usize;
        let mut i = start;
        while i < end {
            let free = !self.live[i / 64] >> (i % 64);
            if free != 0 {
                let slot = i + free.trailing_zeros() as usize;
                return (slot < end).then_some(self.first + slot as i64);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }
}

/// What the start-up scan builds, row by row in slot order, where an
/// account's rows need not come in `written` order: each slot's `written`
/// is kept while the scan lasts (8 bytes a row), to tell which of an
/// account's rows is its newest.
#[derive(Default)]
struct Scanned {
    state: State,
    /// The first slot, and the `written` of every slot from it on (0 for a
    /// slot with no row).
    first: i64,
    written: Vec<i64>,
}

impl Scanned {
    fn row(&mut self, slot: i64, id: &str, written: i64) {
        if self.written.is_empty() {
            self.first = slot;
        }
        let offset = (slot - self.first) as usize;
        self.written.resize(offset, 0);
        self.written.push(written);
        let state = &mut self.state;
        match state.newest.get_mut(id) {
            Some(newest) if self.written[(*newest - self.first) as usize] > written => {}
            Some(newest) => *newest = slot,
            None => {
                state.newest.insert(id.into(), slot);
            }
        }
        if written > state.written {
            state.written = written;
            state.cursor = slot + 1;
        }
    }

    fn finish(self) -> State {
        let mut state = self.state;
        if !self.written.is_empty() {
            let len = self.written.len();
            state.ring = Ring {
                first: self.first,
                len: len as i64,
                live: vec![0; len.div_ceil(64)],
            };
            for &slot in state.newest.values() {
                state.ring.set(slot, true);
            }
        }
        state
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
    /// Caught up: the slot the writer's rule names holds no new row.
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
    pub fn newest(&self, id: &AccountId) -> Option<i64> {
        self.read().newest.get(id.as_str()).copied()
    }

    /// Applies the rows written since the map was last caught up that `conn`
    /// can see (see the module docs): one read of the cursor's slot when
    /// there are none.
    pub fn catch_up(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut state = self.state.write().expect("account log lock");
        // A map that has seen no row has no cursor to walk from (a log
        // whose head was deleted before schema version 8 starts past 1).
        if state.written == 0 || matches!(walk(conn, &mut state)?, Walk::Rescan) {
            let scanned = scan(conn)?;
            // Never back: a snapshot older than the map's cannot have led here.
            if scanned.written >= state.written {
                *state = scanned;
            }
        }
        Ok(())
    }

    /// Applies the rows [`write`] placed, once they are committed: what a
    /// catch-up would read back (a reader's may have already).
    pub fn learn(&self, placed: Placed<'_>) {
        let mut state = self.state.write().expect("account log lock");
        for ((id, slot), written) in placed.rows.into_iter().zip(placed.written..) {
            if written == state.written + 1 {
                state.apply(slot, id, written);
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("account log lock")
    }
}

/// Walks the free slots from the cursor as the writers filled them,
/// applying the rows written since (see the module docs). It follows the
/// writer's rule with the map as it goes: the next free slot from the
/// cursor; at the ring's end, a row appended there, else the free slots
/// from the ring's start. Every row's `written` is one more than the row
/// before it, so the slot the rule names holds the next row, or an older
/// one (the writers stopped), or a newer one: a later row went into the
/// same slot, so the writers came round the ring since the map last
/// caught up (a lap writes at least [`LOG_SLACK_ROWS`] rows, far more than
/// the map of a running server falls behind), and only a whole scan can
/// tell the rows apart.
fn walk(conn: &Connection, state: &mut State) -> Result<Walk, StoreError> {
    let mut read = conn.prepare_cached(SLOT)?;
    let mut pos = state.cursor;
    loop {
        let end = state.ring.end();
        let (slot, at_end) = match state.ring.next_free(pos) {
            Some(slot) => (slot, false),
            None => (end, true),
        };
        let row = read
            .query_row([slot], |r| {
                Ok((
                    r.get_ref(0)?
                        .as_str()
                        .map_err(rusqlite::Error::from)?
                        .to_owned(),
                    r.get::<_, i64>(1)?,
                ))
            })
            .optional()?;
        let next = state.written + 1;
        match row {
            Some((id, written)) if written == next => {
                state.apply(slot, &id, written);
                pos = slot + 1;
            }
            // Past the end, a newer row may be one appended after the
            // writer came round to the ring's start.
            _ if at_end && pos != state.ring.first => pos = state.ring.first,
            Some((_, written)) if written > next => return Ok(Walk::Rescan),
            _ => return Ok(Walk::Done),
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
                let mut scanned = Scanned::default();
                for chunk in received {
                    let mut start = 0;
                    for &(slot, written, end) in &chunk.rows {
                        scanned.row(slot, &chunk.ids[start..end], written);
                        start = end;
                    }
                }
                scanned.finish()
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
/// schema version 7 leave them empty (or zero) but for `id`,
/// `last_event_seq` and `last_hold` (the heads of its chains), and keep the
/// rest in `state`.
macro_rules! log_columns {
    () => {
        "id, unit, status, expires_at, timezone, metadata, overage, created_at, updated_at, granted, used, expired, next_grant_seq, grants, last_event_seq, last_hold"
    };
}
pub(crate) use log_columns;
/// How many columns `log_columns!` names.
pub const LOG_COLUMN_COUNT: usize = 16;
/// A log row's columns as read: `log_columns!`, then `state`.
pub const ROW_COLUMNS: &str = concat!(log_columns!(), ", state");
/// Where `state` is among [`ROW_COLUMNS`].
pub const STATE_COLUMN: usize = LOG_COLUMN_COUNT;
/// Where `last_event_seq` is among [`ROW_COLUMNS`].
pub const LAST_EVENT_SEQ_COLUMN: usize = LOG_COLUMN_COUNT - 2;
/// Where `last_hold` is among [`ROW_COLUMNS`].
pub const LAST_HOLD_COLUMN: usize = LOG_COLUMN_COUNT - 1;
/// Writes an account's state into a slot (a new one past the end, or over a
/// row no longer its account's newest): the slot, its id, the heads of its
/// chains, its state as `compact::encode_stored` writes it, and
/// `written`. The other columns (NOT NULL since schema version 5) get empty
/// texts and zeros: a byte of the row's header each. One statement for
/// both: SQLite replaces a rowid's row in place.
pub const PUT: &str = "INSERT OR REPLACE INTO account_log
    (seq, id, unit, status, metadata, overage, created_at, updated_at, granted, used, expired, next_grant_seq, grants, last_event_seq, last_hold, state, written)
    VALUES (?1, ?2, '', '', '', '', 0, 0, 0, 0, 0, 0, '', ?3, ?4, ?5, ?6)";

/// The slots [`write`] gave its rows, for [`AccountLog::learn`] once they
/// are committed.
#[must_use = "the map learns of these rows by `AccountLog::learn`, or by reading them back"]
pub struct Placed<'a> {
    rows: Vec<(&'a str, i64)>,
    /// The `written` of the first row; the others follow one by one.
    written: i64,
}

/// An account's new row: its id, the heads of its chains and its state as
/// `compact::encode_stored` wrote it.
pub struct NewRow<'a, 's> {
    pub id: &'a str,
    pub heads: ChainHeads,
    pub state: &'s [u8],
}

/// Writes `rows` (at most one per account) into the ring inside the
/// writer's transaction, at most once a transaction: each into the next
/// free slot from the cursor; at the ring's end, appended while the ring
/// is short, else into the free slots from its start (see the module
/// docs). The map must be caught up (the writer's transaction starts with
/// it); it learns of these rows when it next catches up, once they are
/// committed, by following the same rule.
pub fn write<'a>(
    conn: &Connection,
    log: &AccountLog,
    rows: &[NewRow<'a, '_>],
) -> Result<Placed<'a>, StoreError> {
    debug_assert_eq!(
        rows.iter()
            .map(|r| r.id)
            .collect::<crate::executor::IdSet<_>>()
            .len(),
        rows.len(),
        "one row an account"
    );
    let state = log.read();
    let ring = &state.ring;
    // The map as a catch-up will have it when it reaches each row: the
    // slots this batch took are live, and its accounts' previous slots
    // are free.
    let mut taken: BTreeSet<i64> = BTreeSet::new();
    let mut freed: BTreeSet<i64> = BTreeSet::new();
    let mut slots: Vec<i64> = Vec::with_capacity(rows.len());
    let (mut pos, mut wrapped, mut appending) = (state.cursor, false, false);
    let mut end = ring.end();
    for row in rows {
        let slot = loop {
            if appending {
                end += 1;
                break end - 1;
            }
            let mut from = pos;
            let in_ring = loop {
                match ring.next_free(from) {
                    Some(slot) if taken.contains(&slot) => from = slot + 1,
                    other => break other,
                }
            };
            let next = match (in_ring, freed.range(pos..).next().copied()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(slot) = next {
                break slot;
            }
            // The end of the ring: grow it while it is short (or when no
            // slot is free, which the slack rules out), else wrap.
            let logged = state.newest.len()
                + rows
                    .iter()
                    .filter(|r| !state.newest.contains_key(r.id))
                    .count();
            if wrapped || ring.len < logged as i64 * LOG_ROWS_PER_ACCOUNT + LOG_SLACK_ROWS {
                appending = true;
            } else {
                (pos, wrapped) = (ring.first, true);
            }
        };
        pos = slot + 1;
        taken.insert(slot);
        freed.remove(&slot);
        if let Some(&previous) = state.newest.get(row.id) {
            freed.insert(previous);
        }
        slots.push(slot);
    }
    let mut put = conn.prepare_cached(PUT)?;
    for ((row, &slot), written) in rows.iter().zip(&slots).zip(state.written + 1..) {
        put.execute(params![
            slot,
            row.id,
            row.heads.event,
            row.heads.hold,
            row.state,
            written
        ])?;
    }
    Ok(Placed {
        rows: rows.iter().map(|r| r.id).zip(slots).collect(),
        written: state.written + 1,
    })
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
    /// up as the writer's transaction starts, and learns them as the
    /// writer does after its commit. Other maps walk to them.
    fn put(conn: &Connection, log: &AccountLog, ids: &[&str], n: u32) {
        log.catch_up(conn).unwrap();
        let state = n.to_le_bytes();
        let rows: Vec<NewRow> = ids
            .iter()
            .map(|&id| NewRow {
                id,
                heads: ChainHeads::default(),
                state: &state,
            })
            .collect();
        let placed = write(conn, log, &rows).unwrap();
        log.learn(placed);
    }

    /// The `n` of `id`'s newest row, as the map finds it after catching up:
    /// its account's row with the largest `written`.
    fn newest(conn: &Connection, log: &AccountLog, id: &str) -> u32 {
        log.catch_up(conn).unwrap();
        let slot = log.newest(&AccountId::parse(id).unwrap()).unwrap();
        let (row_id, state): (String, Vec<u8>) = conn
            .query_row(
                "SELECT id, state FROM account_log WHERE seq = ?1",
                [slot],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let newest_slot: i64 = conn
            .query_row(
                "SELECT seq FROM account_log WHERE id = ?1 ORDER BY coalesce(written, seq) DESC LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((row_id.as_str(), slot), (id, newest_slot));
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
            assert_eq!(log.read().ring, scanned.read().ring);
        }
    }

    /// Several maps (processes) write in turn, each catching up first, a
    /// random number of rows a batch over accounts of skewed popularity,
    /// so free slots stay behind the cursor and the ring comes round many
    /// times between two catch-ups of a bystander: every map, however far
    /// behind, catches up to what a scan of the log builds.
    #[test]
    fn maps_far_behind_catch_up_to_the_scan() {
        let conn = log_db();
        let maps: Vec<AccountLog> = (0..3).map(|_| AccountLog::default()).collect();
        let ids: Vec<String> = (0..300).map(|i| format!("acct-{i}")).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for n in 0..3_000u32 {
            let writer = &maps[next(2) as usize];
            let mut batch = BTreeSet::new();
            for _ in 0..1 + next(40) {
                // Squaring skews toward low ids: some accounts hot, most cold.
                let r = next(300);
                batch.insert(ids[(r * r / 300) as usize].as_str());
            }
            let batch: Vec<&str> = batch.into_iter().collect();
            put(&conn, writer, &batch, n);
            if next(200) == 0 {
                maps[2].catch_up(&conn).unwrap();
            }
        }
        let scanned = AccountLog::open(&conn).unwrap();
        for log in &maps {
            log.catch_up(&conn).unwrap();
            let (log, scanned) = (log.read(), scanned.read());
            assert_eq!(log.newest, scanned.newest);
            assert_eq!((log.written, log.cursor), (scanned.written, scanned.cursor));
            assert_eq!(log.ring, scanned.ring);
        }
        assert!(
            rows(&conn) < 2 * 300 + LOG_SLACK_ROWS + 40,
            "the ring stayed short"
        );
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
        assert_eq!(log.newest(&AccountId::parse("a").unwrap()), Some(3));
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
        assert_eq!(scanned.ring, caught_up.ring);
    }

    /// A log with no rows: nothing to hand over, and no thread left waiting.
    #[test]
    fn the_start_up_scan_of_an_empty_log_is_empty() {
        let log = AccountLog::open(&log_db()).unwrap();
        assert_eq!(log.read().written, 0);
        assert!(log.read().newest.is_empty());
    }

    /// Free slots across word boundaries, from a ring that does not start
    /// at 1, and none past its end.
    #[test]
    fn the_next_free_slot() {
        let mut ring = Ring::default();
        for slot in 10..300 {
            ring.set(slot, slot != 75 && slot != 200 && slot != 299);
        }
        assert_eq!((ring.first, ring.end()), (10, 300));
        assert_eq!(ring.next_free(0), Some(75));
        assert_eq!(ring.next_free(76), Some(200));
        assert_eq!(ring.next_free(201), Some(299));
        assert_eq!(ring.next_free(300), None);
        ring.set(130, false);
        assert_eq!(ring.next_free(76), Some(130));
    }

    #[test]
    fn column_count_matches_the_list() {
        let columns: Vec<&str> = ROW_COLUMNS.split(", ").collect();
        assert_eq!(columns.len(), LOG_COLUMN_COUNT + 1);
        assert_eq!(columns[LAST_EVENT_SEQ_COLUMN], "last_event_seq");
        assert_eq!(columns[LAST_HOLD_COLUMN], "last_hold");
        assert_eq!(columns[STATE_COLUMN], "state");
    }
}
