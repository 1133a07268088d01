//! Reading and writing core values as SQLite rows. Every SQL statement of the
//! backend lives here or in `schema.rs`.

use super::account_log::{
    self, log_columns, AccountLog, LAST_EVENT_SEQ_COLUMN, LAST_HOLD_COLUMN, ROW_COLUMNS,
    STATE_COLUMN,
};
use super::cache::{Cache, Cached, ChainHeads};
use super::compact;
use crate::codec::{
    account_id, amount, decode_allocations, decode_grants, encode_allocations, encode_grants,
};
use crate::error::StoreError;
use crate::executor::{
    due_ids, next_due, AccountWrite, EventWrite, IdMap, Plan, Prefetched, Writes,
};
use crate::request::StoredEvent;
use reckon_core::{
    Account, AccountId, AccountState, AccountStatus, Event, EventKind, Grant, Hold, HoldStatus,
    OveragePolicy, Timestamp, Totals, Unit,
};
use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Row};
use std::collections::BTreeSet;

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

fn bad(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

const ACCOUNT_COLUMNS: &str =
    "id, unit, status, expires_at, timezone, metadata, overage, created_at, updated_at, granted, used, expired, next_grant_seq, grants, last_event_seq, last_hold";

/// An account row: the account, totals, next grant seq, live grants and the
/// heads of its chains.
type AccountRow = (Account, Totals, u64, Vec<Grant>, ChainHeads);

/// An account row of `accounts` (its [`ACCOUNT_COLUMNS`]) or of the
/// account log (`account_log::ROW_COLUMNS`: the same, then `state`).
fn account_row(r: &Row) -> Result<Result<AccountRow, StoreError>, rusqlite::Error> {
    let id: String = r.get(0)?;
    if r.as_ref().column_count() > STATE_COLUMN {
        if let rusqlite::types::ValueRef::Blob(state) = r.get_ref(STATE_COLUMN)? {
            return Ok(stored_row(&id, state, chain_heads(r)?));
        }
    }
    let unit: String = r.get(1)?;
    let status: String = r.get(2)?;
    let overage: String = r.get(6)?;
    let (granted, used, expired): (i64, i64, i64) = (r.get(9)?, r.get(10)?, r.get(11)?);
    let grants: String = r.get(13)?;
    let heads = chain_heads(r)?;
    let build = || -> Result<AccountRow, StoreError> {
        let account = Account {
            id: account_id(&id)?,
            unit: Unit::parse(&unit).map_err(|_| bad("unit", &unit))?,
            status: AccountStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
            expires_at: ts(r.get(3)?),
            timezone: r.get(4)?,
            metadata: r.get(5)?,
            overage: OveragePolicy::parse(&overage).ok_or_else(|| bad("overage", &overage))?,
            created_at: Timestamp::from_millis(r.get(7)?),
            updated_at: Timestamp::from_millis(r.get(8)?),
        };
        let totals = Totals {
            granted: amount(granted)?,
            used: amount(used)?,
            expired: amount(expired)?,
        };
        let mut grants = decode_grants(&grants)?;
        grants.sort_by_key(Grant::draw_key);
        Ok((account, totals, r.get::<_, i64>(12)? as u64, grants, heads))
    };
    Ok(build())
}

fn chain_heads(r: &Row) -> Result<ChainHeads, rusqlite::Error> {
    Ok(ChainHeads {
        event: r.get(LAST_EVENT_SEQ_COLUMN)?,
        hold: r.get(LAST_HOLD_COLUMN)?,
    })
}

/// A log row whose state is stored compact (schema version 7 on).
fn stored_row(id: &str, state: &[u8], heads: ChainHeads) -> Result<AccountRow, StoreError> {
    let id = account_id(id)?;
    let s =
        compact::decode_stored(state, &id).ok_or_else(|| bad("stored state of", id.as_str()))?;
    let mut grants = s.grants;
    grants.sort_by_key(Grant::draw_key);
    Ok((s.account, s.totals, s.next_grant_seq, grants, heads))
}

const HOLD_COLUMNS: &str =
    "id, account_id, amount, status, expires_at, allocations, settled_amount, created_at, resolved_at";
/// How many columns [`HOLD_COLUMNS`] names: a column selected after them
/// (`prev_hold`, in [`load_holds`]) is at this index.
const HOLD_COLUMN_COUNT: usize = 9;

fn hold_row(r: &Row) -> Result<Result<Hold, StoreError>, rusqlite::Error> {
    let (id, acct, a, status, expires_at, allocs, settled, created_at, resolved_at): (
        String,
        String,
        i64,
        String,
        i64,
        String,
        i64,
        i64,
        Option<i64>,
    ) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    );
    Ok((|| {
        Ok(Hold {
            id,
            account_id: account_id(&acct)?,
            amount: amount(a)?,
            status: HoldStatus::parse(&status).ok_or_else(|| bad("hold status", &status))?,
            expires_at: Timestamp::from_millis(expires_at),
            allocations: decode_allocations(&allocs)?,
            settled_amount: amount(settled)?,
            created_at: Timestamp::from_millis(created_at),
            resolved_at: ts(resolved_at),
        })
    })())
}

/// Collects rows whose decoding can fail twice over (SQL, then our checks).
fn collect<T>(
    rows: impl Iterator<Item = Result<Result<T, StoreError>, rusqlite::Error>>,
) -> Result<Vec<T>, StoreError> {
    rows.map(|r| r?).collect()
}

/// Loads one account with its live grants (in draw order), open holds and
/// the given target holds.
pub fn load_account(
    conn: &Connection,
    log: &AccountLog,
    id: &AccountId,
    targets: &BTreeSet<String>,
) -> Result<Option<AccountState>, StoreError> {
    log.catch_up(conn)?;
    let mut reads = AccountReads::prepare(conn)?;
    Ok(load_account_and_head(conn, &mut reads, log, id, targets)?.map(|(state, _)| state))
}

/// The statements that load an account, prepared once for many loads:
/// `prepare_cached` hashes the SQL text on every call, and at a million
/// accounts, where most of a batch's accounts miss the writer's cache,
/// doing that and formatting the text per miss cost ~2 % of the writer's
/// samples (`perf`, 2026-12-04).
pub(super) struct AccountReads<'c> {
    account: CachedStatement<'c>,
    logged: CachedStatement<'c>,
    open_holds: CachedStatement<'c>,
}

impl<'c> AccountReads<'c> {
    pub(super) fn prepare(conn: &'c Connection) -> Result<Self, StoreError> {
        Ok(AccountReads {
            account: conn.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"
            ))?,
            logged: conn.prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM account_log WHERE seq = ?1"
            ))?,
            open_holds: conn.prepare_cached(&format!(
                "SELECT {HOLD_COLUMNS} FROM holds WHERE account_id = ?1 AND status = 'held'"
            ))?,
        })
    }
}

/// How often [`newest_row`] looks again for a row overwritten under it.
const NEWEST_ROW_TRIES: usize = 4;

/// An account's newest row (see `account_log`): in the log if it has one
/// there, else in `accounts`. The slot the map names may have been
/// overwritten since (the account had a newer row, and the writer moved
/// on); catching up finds the newer row.
fn newest_row(
    conn: &Connection,
    reads: &mut AccountReads<'_>,
    log: &AccountLog,
    id: &AccountId,
) -> Result<Option<AccountRow>, StoreError> {
    for _ in 0..NEWEST_ROW_TRIES {
        let Some(slot) = log.newest(id) else {
            return reads
                .account
                .query_row([id.as_str()], account_row)
                .optional()?
                .transpose();
        };
        let row = reads
            .logged
            .query_row([slot], |r| {
                // The slot holds the account's row the map learned of, or a
                // row written after it: another account's, or this one's
                // after a lap, which is newer. It never holds an older one:
                // the map learns only committed rows, and every read is a
                // statement of its own begun after the lookup, so it sees at
                // least what the map saw.
                let ours = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)? == id.as_str();
                ours.then(|| account_row(r)).transpose()
            })
            .optional()?
            .flatten();
        if let Some(row) = row {
            return row.map(Some);
        }
        log.catch_up(conn)?;
    }
    Err(bad(
        "account log keeps losing the newest row of",
        id.as_str(),
    ))
}

/// [`load_account`], plus the heads of the account's chains.
pub(super) fn load_account_and_head(
    conn: &Connection,
    reads: &mut AccountReads<'_>,
    log: &AccountLog,
    id: &AccountId,
    targets: &BTreeSet<String>,
) -> Result<Option<(AccountState, ChainHeads)>, StoreError> {
    let Some(row) = newest_row(conn, reads, log, id)? else {
        return Ok(None);
    };
    let (account, totals, next_grant_seq, grants, heads) = row;
    let mut holds = collect(reads.open_holds.query_map([id.as_str()], hold_row)?)?;
    for target in targets {
        if !holds.iter().any(|h| &h.id == target) {
            if let Some(h) = load_hold(conn, target)? {
                // A hold id names one account; one from elsewhere is "not found" here.
                if &h.account_id == id {
                    holds.push(h);
                }
            }
        }
    }
    Ok(Some((
        AccountState {
            account,
            totals,
            grants,
            holds,
            next_grant_seq,
        },
        heads,
    )))
}

/// Rows [`fill`] looks at in one step: about half are their account's
/// newest, ~4.6 µs each to read and keep, so under 100 µs of work, which a
/// request that arrives meanwhile waits for.
pub const FILL_STEP_ROWS: usize = 32;

/// Where [`fill`] goes on from: first the account log in slot order, which
/// reads its pages one after another (over a million accounts, reading
/// them by id cost a random page read each, a quarter of the time), then
/// the accounts that have no row in the log.
#[derive(Debug)]
pub enum FillCursor {
    /// The last slot the previous step looked at.
    Log(i64),
    /// The id of the last account the previous step looked at.
    Accounts(String),
}

impl Default for FillCursor {
    fn default() -> FillCursor {
        FillCursor::Log(0)
    }
}

/// One step of reading accounts ahead of need into the writer's cache
/// (`Cache::fill`): the accounts among the next [`FILL_STEP_ROWS`] rows
/// that it does not hold yet, read as a batch's miss reads them (the row
/// just scanned is then in SQLite's page cache). Must run inside the
/// writer's transaction, after `Cache::validate` and the log's catch-up,
/// as a batch does, so what it keeps is the committed state. `None` once
/// every account was read or the cache has no more room.
pub fn fill(
    conn: &Connection,
    cache: &mut Cache,
    log: &AccountLog,
    cursor: FillCursor,
) -> Result<Option<FillCursor>, StoreError> {
    let step = FILL_STEP_ROWS as i64;
    // Each account once: by the slot of its newest log row, or, with no row
    // in the log, by its row in `accounts`.
    let (candidates, next) = match cursor {
        FillCursor::Log(after) => {
            let rows = conn
                .prepare_cached(
                    "SELECT seq, id FROM account_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?
                .query_map(params![after, step], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let next = match rows.last() {
                Some(&(slot, _)) => FillCursor::Log(slot),
                None => FillCursor::Accounts(String::new()),
            };
            let mut ids = Vec::with_capacity(rows.len());
            for (slot, id) in rows {
                let id = account_id(&id)?;
                if log.newest(&id) == Some(slot) {
                    ids.push(id);
                }
            }
            (ids, Some(next))
        }
        FillCursor::Accounts(after) => {
            let rows = conn
                .prepare_cached("SELECT id FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2")?
                .query_map(params![after, step], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let next = rows.last().cloned().map(FillCursor::Accounts);
            let mut ids = Vec::with_capacity(rows.len());
            for id in rows {
                let id = account_id(&id)?;
                if log.newest(&id).is_none() {
                    ids.push(id);
                }
            }
            (ids, next)
        }
    };
    let mut reads = AccountReads::prepare(conn)?;
    let none = BTreeSet::new();
    for id in candidates {
        if cache.may_hold(&id) {
            continue;
        }
        if let Some((state, head)) = load_account_and_head(conn, &mut reads, log, &id, &none)? {
            if !cache.fill(&state, head) {
                return Ok(None);
            }
        }
    }
    Ok(next)
}

pub fn hold_accounts(
    conn: &Connection,
    hold_ids: &[String],
) -> Result<std::collections::HashMap<String, AccountId>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT account_id FROM holds WHERE id = ?1")?;
    let mut out = std::collections::HashMap::new();
    for id in hold_ids {
        if out.contains_key(id) {
            continue;
        }
        if let Some(account) = stmt
            .query_row([id.as_str()], |r| r.get::<_, String>(0))
            .optional()?
        {
            out.insert(id.clone(), account_id(&account)?);
        }
    }
    Ok(out)
}

pub fn load_hold(conn: &Connection, hold_id: &str) -> Result<Option<Hold>, StoreError> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = ?1");
    conn.prepare_cached(&sql)?
        .query_row([hold_id], hold_row)
        .optional()?
        .transpose()
}

/// An account's holds, newest first, walking its hold chain from the head
/// in its newest row (see [`write_account`]), with `status` as of `now`.
/// Open ones are listed through their index instead: an account that
/// locks all day has few open holds behind a chain of settled ones, and
/// the walk would read the whole chain to find them.
pub fn load_holds(
    conn: &Connection,
    log: &AccountLog,
    id: &AccountId,
    status: Option<HoldStatus>,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Hold>, StoreError> {
    if status == Some(HoldStatus::Held) {
        return collect(
            conn.prepare_cached(&open_holds_of())?
                .query_map(params![id.as_str(), now.millis(), limit as i64], hold_row)?,
        );
    }
    log.catch_up(conn)?;
    let mut next = newest_heads(conn, log, id)?.hold;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {HOLD_COLUMNS}, prev_hold FROM holds WHERE rowid = ?1"
    ))?;
    let mut out = Vec::with_capacity(limit.min(PAGE_SIZE_HINT));
    while let Some(rowid) = next.filter(|_| out.len() < limit) {
        let (hold, prev) = stmt
            .query_row([rowid], |r| {
                Ok((hold_row(r)?, r.get::<_, Option<i64>>(HOLD_COLUMN_COUNT)?))
            })
            .optional()?
            .ok_or_else(|| bad("hold chain names a missing hold", &rowid.to_string()))?;
        let mut hold = hold?;
        if &hold.account_id != id || prev.is_some_and(|p| p >= rowid) {
            return Err(bad("hold chain is broken at", &rowid.to_string()));
        }
        hold.status = hold.status_at(now);
        if status.is_none_or(|s| hold.status == s) {
            out.push(hold);
        }
        next = prev;
    }
    Ok(out)
}

/// An account's holds open as of `?2`, newest first (the chain's order:
/// holds are inserted in order, so a newer one has a larger rowid), through
/// `holds_open`; at most `?3`.
fn open_holds_of() -> String {
    let filter = crate::codec::hold_status_filter(Some(HoldStatus::Held), "?2");
    format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE account_id = ?1 AND {filter} ORDER BY rowid DESC LIMIT ?3"
    )
}

pub fn open_holds(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Hold>, StoreError> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE status = 'held' AND expires_at > ?1 ORDER BY created_at, id LIMIT ?2");
    collect(
        conn.prepare_cached(&sql)?
            .query_map(params![now.millis(), limit as i64], hold_row)?,
    )
}

/// The heads of each prefetched account's chains, which the batch's first
/// event and first hold for the account point back to.
pub type Heads = IdMap<AccountId, ChainHeads>;

/// Loads what `plan` names: accounts from the writer's cache when there,
/// else from the database; holds the batch targets; idempotency records
/// (`idempotency.rs`).
// Out of line (called once per batch) so profiles and
// `scripts/writer-instructions` can name it.
#[inline(never)]
pub fn prefetch(
    conn: &Connection,
    plan: &Plan,
    cache: &mut Cache,
    log: &AccountLog,
    legacy: &super::idempotency::Legacy,
) -> Result<(Prefetched, Heads), StoreError> {
    let mut out = Prefetched::default();
    let mut heads = Heads::default();
    let none = BTreeSet::new();
    // Prepared at the first miss: a batch whose accounts are all cached
    // needs neither statement.
    let mut reads: Option<AccountReads> = None;
    for id in &plan.accounts {
        let targets = plan.target_holds.get(id).unwrap_or(&none);
        let loaded = match cache.take(id) {
            Some(Cached { mut state, heads }) => {
                for target in targets {
                    if !state.holds.iter().any(|h| &h.id == target) {
                        if let Some(h) = load_hold(conn, target)?.filter(|h| &h.account_id == id) {
                            state.holds.push(h);
                        }
                    }
                }
                Some((state, heads))
            }
            None => {
                let reads = match &mut reads {
                    Some(reads) => reads,
                    None => reads.insert(AccountReads::prepare(conn)?),
                };
                load_account_and_head(conn, reads, log, id, targets)?
            }
        };
        if let Some((state, head)) = loaded {
            out.accounts.insert(id.clone(), state);
            heads.insert(id.clone(), head);
        }
    }
    super::idempotency::load(conn, plan, &mut out, legacy)?;
    Ok((out, heads))
}

/// Persists a batch's [`Writes`] inside the writer's transaction. Events
/// go first: each links to its account's previous one (see
/// [`append_events`]), and the account rows then record the new chain heads,
/// which `heads` holds afterwards. Changed accounts are written to the
/// account log's ring (see `account_log`). Every statement is prepared once
/// per batch: `prepare_cached` hashes the SQL text on each call, and per row
/// that was about 8 % of the writer's samples in a 1,000-operation batch.
#[inline(never)] // as `prefetch`
pub fn write_batch<'w>(
    conn: &Connection,
    log: &AccountLog,
    writes: &'w Writes,
    heads: &mut Heads,
) -> Result<account_log::Placed<'w>, StoreError> {
    append_events(conn, &writes.events, heads)?;
    let mut statements = AccountStatements {
        set_due: conn.prepare_cached(SET_DUE)?,
        insert: conn.prepare_cached(INSERT_ACCOUNT)?,
        update_hold: conn.prepare_cached(UPDATE_HOLD)?,
        insert_hold: conn.prepare_cached(INSERT_HOLD)?,
    };
    let mut logged = LogRows::default();
    for w in &writes.accounts {
        let head = heads.entry(w.after.account.id.clone()).or_default();
        write_account(&mut statements, &mut logged, w, head)?;
    }
    for (id, due) in &writes.swept_due {
        statements
            .set_due
            .execute(params![id.as_str(), due.map(Timestamp::millis)])?;
    }
    super::idempotency::insert(conn, &writes.idempotency)?;
    logged.write(conn, log)
}

/// The account log rows of a batch, their states encoded back to back.
#[derive(Default)]
struct LogRows<'a> {
    states: Vec<u8>,
    rows: Vec<(&'a str, ChainHeads, std::ops::Range<usize>)>,
}

impl<'a> LogRows<'a> {
    fn push(&mut self, s: &'a AccountState, heads: ChainHeads) {
        let start = self.states.len();
        compact::encode_stored(s, &mut self.states);
        let end = self.states.len();
        self.rows.push((s.account.id.as_str(), heads, start..end));
    }

    fn write(
        &self,
        conn: &Connection,
        log: &AccountLog,
    ) -> Result<account_log::Placed<'a>, StoreError> {
        let rows: Vec<account_log::NewRow> = self
            .rows
            .iter()
            .map(|(id, heads, state)| account_log::NewRow {
                id,
                heads: *heads,
                state: &self.states[state.clone()],
            })
            .collect();
        account_log::write(conn, log, &rows)
    }
}

/// `accounts.next_due` stays current for the sweeper's index. Only written
/// when it changed (a grant given or expired) and after a sweep.
const SET_DUE: &str = "UPDATE accounts SET next_due = ?2 WHERE id = ?1";
/// A new account: the log's columns, then `next_due`.
const INSERT_ACCOUNT: &str = concat!(
    "INSERT INTO accounts (",
    log_columns!(),
    ", next_due) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
);
const UPDATE_HOLD: &str =
    "UPDATE holds SET status = ?2, allocations = ?3, settled_amount = ?4, resolved_at = ?5 WHERE id = ?1";
const INSERT_HOLD: &str =
    "INSERT INTO holds (id, account_id, amount, status, expires_at, allocations, settled_amount, created_at, resolved_at, prev_hold)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const INSERT_EVENT: &str =
    "INSERT INTO events (account_id, kind, amount, available_after, at, prev_seq, grant_id, hold_id, idempotency_key, attributes)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
/// The common event (a usage without key or attributes) names no grant,
/// hold, key or attributes: binding four NULLs cost ~10 % of an insert.
const INSERT_PLAIN_EVENT: &str =
    "INSERT INTO events (account_id, kind, amount, available_after, at, prev_seq)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// The statements [`write_account`] uses, prepared once per batch.
struct AccountStatements<'c> {
    set_due: CachedStatement<'c>,
    insert: CachedStatement<'c>,
    update_hold: CachedStatement<'c>,
    insert_hold: CachedStatement<'c>,
}

/// Writes an account's new state; `heads` are its chains' heads after this
/// batch's events. Holds first: each new one points back to the account's
/// previous hold (`prev_hold`) and becomes the head, so an account's holds
/// are a chain from its row, as its events are, and need no index on
/// (account, time), where every lock inserted at a random page (half the
/// pages a `lock-settle` commit wrote; docs/performance-log.md). Then the
/// row, with the heads: a new account is a row in `accounts`; an existing
/// one's state goes to the account log, with the batch's other rows
/// (`logged`).
fn write_account<'a>(
    statements: &mut AccountStatements,
    logged: &mut LogRows<'a>,
    w: &'a AccountWrite,
    heads: &mut ChainHeads,
) -> Result<(), StoreError> {
    let s = &w.after;
    let a = &s.account;
    let before_holds = w.before.as_ref().map_or(&[][..], |b| &b.holds[..]);
    for h in &s.holds {
        match before_holds.iter().find(|old| old.id == h.id) {
            Some(old) if old == h => {}
            // Resolved (or re-allocated) in this batch: only these change.
            Some(_) => {
                statements.update_hold.execute(params![
                    h.id,
                    h.status.as_str(),
                    encode_allocations(&h.allocations),
                    h.settled_amount.micros(),
                    h.resolved_at.map(Timestamp::millis),
                ])?;
            }
            None => {
                heads.hold = Some(statements.insert_hold.insert(params![
                    h.id,
                    a.id.as_str(),
                    h.amount.micros(),
                    h.status.as_str(),
                    h.expires_at.millis(),
                    encode_allocations(&h.allocations),
                    h.settled_amount.micros(),
                    h.created_at.millis(),
                    h.resolved_at.map(Timestamp::millis),
                    heads.hold,
                ])?);
            }
        }
    }
    let due = next_due(s);
    if let Some(before) = &w.before {
        logged.push(s, *heads);
        if next_due(before) != due
            && statements
                .set_due
                .execute(params![a.id.as_str(), due.map(Timestamp::millis)])?
                != 1
        {
            return Err(StoreError::Corrupt(format!(
                "account {} vanished during a batch",
                a.id.as_str()
            )));
        }
    } else {
        let grants = encode_grants(&s.grants);
        let row = params![
            a.id.as_str(),
            a.unit.as_str(),
            a.status.as_str(),
            a.expires_at.map(Timestamp::millis),
            a.timezone,
            a.metadata,
            a.overage.as_str(),
            a.created_at.millis(),
            a.updated_at.millis(),
            s.totals.granted.micros(),
            s.totals.used.micros(),
            s.totals.expired.micros(),
            s.next_grant_seq as i64,
            grants,
            heads.event,
            heads.hold,
        ];
        let insert = &mut statements.insert;
        for (i, value) in row.iter().enumerate() {
            insert.raw_bind_parameter(i + 1, value)?;
        }
        insert.raw_bind_parameter(row.len() + 1, due.map(Timestamp::millis))?;
        insert.raw_execute()?;
    }
    Ok(())
}

/// Appends a batch's events, in order, each pointing back to its account's
/// previous one (`prev_seq`, `None` for its first), so an account's history
/// is a chain from `accounts.last_event_seq` and needs no index on
/// (account, seq): such an index takes an insert on a random page per event,
/// which was most of the writer's work (docs/performance-log.md). `heads` ends
/// at each account's newest seq. (Multi-row `INSERT`s of 32 events were
/// measured too: no less writer CPU per event, so one row per statement.)
fn append_events(
    conn: &Connection,
    events: &[EventWrite],
    heads: &mut Heads,
) -> Result<(), StoreError> {
    let mut insert = conn.prepare_cached(INSERT_EVENT)?;
    let mut insert_plain = conn.prepare_cached(INSERT_PLAIN_EVENT)?;
    for w in events {
        let head = heads.entry(w.account_id.clone()).or_default();
        let e = &w.event;
        let common = params![
            w.account_id.as_str(),
            e.kind.as_str(),
            e.amount.micros(),
            e.available_after.micros(),
            e.at.millis(),
            head.event,
        ];
        let seq = if (&e.grant_id, &e.hold_id, &w.idempotency_key, &w.attributes)
            == (&None, &None, &None, &None)
        {
            insert_plain.insert(common)?
        } else {
            let rest = params![e.grant_id, e.hold_id, w.idempotency_key, w.attributes];
            for (i, value) in common.iter().chain(rest.iter()).enumerate() {
                insert.raw_bind_parameter(i + 1, value)?;
            }
            insert.raw_execute()?;
            conn.last_insert_rowid()
        };
        head.event = Some(seq);
    }
    Ok(())
}

/// Appends one event outside a ledger batch (credential changes) and moves
/// the account's chain head to it: in its newest row, in place in
/// `accounts` or as a new row of the account log. The writer's cache does
/// not see this, so it is cleared after such a write.
pub fn append_event_and_link(
    conn: &Connection,
    log: &AccountLog,
    w: &EventWrite,
) -> Result<i64, StoreError> {
    log.catch_up(conn)?;
    let id = &w.account_id;
    let mut reads = AccountReads::prepare(conn)?;
    let newest = newest_row(conn, &mut reads, log, id)?;
    drop(reads);
    let prev = newest
        .as_ref()
        .map(|(.., heads)| *heads)
        .unwrap_or_default();
    let mut heads = Heads::from_iter([(id.clone(), prev)]);
    append_events(conn, std::slice::from_ref(w), &mut heads)?;
    let seq = heads[id].event.expect("the event just appended");
    match newest {
        Some((account, totals, next_grant_seq, grants, _)) if log.newest(id).is_some() => {
            let state = AccountState {
                account,
                totals,
                grants,
                holds: Vec::new(),
                next_grant_seq,
            };
            let mut logged = LogRows::default();
            logged.push(&state, heads[id]);
            // Not committed yet: the next catch-up reads it back.
            let _ = logged.write(conn, log)?;
        }
        _ => {
            conn.prepare_cached("UPDATE accounts SET last_event_seq = ?1 WHERE id = ?2")?
                .execute(params![seq, id.as_str()])?;
        }
    }
    Ok(seq)
}

/// The heads of an account's chains (none if it does not exist), from its
/// newest row.
fn newest_heads(
    conn: &Connection,
    log: &AccountLog,
    id: &AccountId,
) -> Result<ChainHeads, StoreError> {
    let mut reads = AccountReads::prepare(conn)?;
    Ok(
        newest_row(conn, &mut reads, log, id)?
            .map_or_else(ChainHeads::default, |(.., heads)| heads),
    )
}

pub fn load_accounts(
    conn: &Connection,
    log: &AccountLog,
    after: Option<&AccountId>,
    limit: usize,
) -> Result<Vec<AccountState>, StoreError> {
    log.catch_up(conn)?;
    let ids: Vec<String> = conn
        .prepare_cached("SELECT id FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2")?
        .query_map(
            params![after.map_or("", AccountId::as_str), limit as i64],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    let none = BTreeSet::new();
    let mut reads = AccountReads::prepare(conn)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some((s, _)) =
            load_account_and_head(conn, &mut reads, log, &account_id(&id)?, &none)?
        {
            out.push(s);
        }
    }
    Ok(out)
}

/// An account's events with `seq < before`, newest first, by walking its
/// chain from the newest event or, when `before` is the seq of one of the
/// account's events (a previous page's `next_before` is), from that event's
/// predecessor. Any other `before` still works but first walks past every
/// newer event of the account.
pub fn load_events(
    conn: &Connection,
    log: &AccountLog,
    id: &AccountId,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    log.catch_up(conn)?;
    let mut next = newest_heads(conn, log, id)?.event;
    if let Some(before) = before {
        let cursor: Option<(String, Option<i64>)> = conn
            .prepare_cached("SELECT account_id, prev_seq FROM events WHERE seq = ?1")?
            .query_row([before], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((_, prev)) = cursor.filter(|(account, _)| account == id.as_str()) {
            next = prev;
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT account_id, prev_seq, kind, amount, available_after, at, grant_id, hold_id, idempotency_key, attributes
         FROM events WHERE seq = ?1",
    )?;
    let mut out = Vec::with_capacity(limit.min(PAGE_SIZE_HINT));
    while let Some(seq) = next.filter(|_| out.len() < limit) {
        let (event, prev) = stmt
            .query_row([seq], |r| chained_event(r, id, seq))
            .optional()?
            .ok_or_else(|| bad("event chain names a missing event", &seq.to_string()))??;
        if prev.is_some_and(|p| p >= seq) {
            return Err(bad("event chain does not descend at seq", &seq.to_string()));
        }
        if before.is_none_or(|b| seq < b) {
            out.push(event);
        }
        next = prev;
    }
    Ok(out)
}

/// Capacity reserved for a page of events before the walk knows its length.
const PAGE_SIZE_HINT: usize = 64;

/// One link of an account's event chain: the event and its predecessor.
fn chained_event(
    r: &Row,
    id: &AccountId,
    seq: i64,
) -> Result<Result<(StoredEvent, Option<i64>), StoreError>, rusqlite::Error> {
    let account: String = r.get(0)?;
    let prev: Option<i64> = r.get(1)?;
    let kind: String = r.get(2)?;
    let (a, after, at): (i64, i64, i64) = (r.get(3)?, r.get(4)?, r.get(5)?);
    let (grant_id, hold_id, key, attrs) = (r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?);
    Ok((|| {
        if account != id.as_str() {
            return Err(bad(
                "event chain leaves its account at seq",
                &seq.to_string(),
            ));
        }
        let event = Event {
            kind: EventKind::parse(&kind).ok_or_else(|| bad("event kind", &kind))?,
            amount: amount(a)?,
            available_after: amount(after)?,
            at: Timestamp::from_millis(at),
            grant_id,
            hold_id,
        };
        Ok((
            StoredEvent {
                seq,
                account_id: id.clone(),
                event,
                idempotency_key: key,
                attributes: attrs,
            },
            prev,
        ))
    })())
}

/// Accounts with a grant due (`next_due`) or an open hold expired, at most
/// `limit`, the longest overdue of each kind first.
pub fn due_accounts(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<AccountId>, StoreError> {
    let ids = |sql, limit: usize| -> Result<Vec<String>, StoreError> {
        Ok(conn
            .prepare_cached(sql)?
            .query_map(params![now.millis(), limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    };
    let first = ids(DUE_BY_GRANTS, limit)?;
    let rest = limit - first.len();
    let due = due_ids(first, ids(DUE_BY_HOLDS, rest)?, limit);
    due.iter().map(|id| account_id(id)).collect()
}

const DUE_BY_GRANTS: &str =
    "SELECT id FROM accounts WHERE next_due IS NOT NULL AND next_due <= ?1 ORDER BY next_due LIMIT ?2";
/// Through `holds_expiring`; an account with several expired holds may come
/// back more than once, which [`due_ids`] folds.
const DUE_BY_HOLDS: &str =
    "SELECT account_id FROM holds WHERE status = 'held' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2";

pub fn setting(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Listing open holds reads the open holds, not the account's history:
    /// the plan searches `holds_open` and needs no sort.
    #[test]
    fn open_holds_are_listed_through_their_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", open_holds_of()))
            .unwrap()
            .query_map(params!["a", 0, 10], |r| r.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(plan.len(), 1, "{plan:?}");
        assert!(plan[0].contains("USING INDEX holds_open"), "{plan:?}");
    }
}
