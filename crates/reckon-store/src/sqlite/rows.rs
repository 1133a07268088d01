//! Reading and writing core values as SQLite rows. Every SQL statement of the
//! backend lives here or in `schema.rs`.

use super::cache::Cache;
use crate::codec::{
    account_id, amount, decode_allocations, decode_grants, encode_allocations, encode_grants,
};
use crate::error::StoreError;
use crate::executor::{
    next_due, AccountWrite, EventWrite, IdempotencyRecord, IdempotencyWrite, Plan, Prefetched,
};
use crate::request::StoredEvent;
use reckon_core::{
    Account, AccountId, AccountState, AccountStatus, Event, EventKind, Grant, Hold, HoldStatus,
    OveragePolicy, Timestamp, Totals, Unit,
};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::BTreeSet;

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

fn bad(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

const ACCOUNT_COLUMNS: &str =
    "id, unit, status, expires_at, timezone, metadata, overage, created_at, updated_at, granted, used, expired, next_grant_seq, grants";

type AccountRow = (Account, Totals, u64, Vec<Grant>);

fn account_row(r: &Row) -> Result<Result<AccountRow, StoreError>, rusqlite::Error> {
    let id: String = r.get(0)?;
    let unit: String = r.get(1)?;
    let status: String = r.get(2)?;
    let overage: String = r.get(6)?;
    let (granted, used, expired): (i64, i64, i64) = (r.get(9)?, r.get(10)?, r.get(11)?);
    let grants: String = r.get(13)?;
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
        grants.sort_by_key(|g| (g.expires_at.map_or(i64::MAX, Timestamp::millis), g.seq));
        Ok((account, totals, r.get::<_, i64>(12)? as u64, grants))
    };
    Ok(build())
}

const HOLD_COLUMNS: &str =
    "id, account_id, amount, status, expires_at, allocations, settled_amount, created_at, resolved_at";

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
    id: &AccountId,
    targets: &BTreeSet<String>,
) -> Result<Option<AccountState>, StoreError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1");
    let row = conn
        .prepare_cached(&sql)?
        .query_row([id.as_str()], account_row)
        .optional()?;
    let Some(row) = row else { return Ok(None) };
    let (account, totals, next_grant_seq, grants) = row?;
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE account_id = ?1 AND status = 'held'");
    let mut holds = collect(
        conn.prepare_cached(&sql)?
            .query_map([id.as_str()], hold_row)?,
    )?;
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
    Ok(Some(AccountState {
        account,
        totals,
        grants,
        holds,
        next_grant_seq,
    }))
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

pub fn load_holds(
    conn: &Connection,
    id: &AccountId,
    status: Option<HoldStatus>,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Hold>, StoreError> {
    let filter = crate::codec::hold_status_filter(status, "?2");
    let sql = format!(
        // `?2 = ?2` keeps the parameter bound when the filter does not use it.
        "SELECT {HOLD_COLUMNS} FROM holds WHERE account_id = ?1 AND {filter} AND ?2 = ?2 ORDER BY created_at DESC, id LIMIT ?3"
    );
    let mut holds = collect(
        conn.prepare_cached(&sql)?
            .query_map(params![id.as_str(), now.millis(), limit as i64], hold_row)?,
    )?;
    for h in &mut holds {
        h.status = h.status_at(now);
    }
    Ok(holds)
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

/// Loads what `plan` names: accounts from the writer's cache when there,
/// else from the database; holds the batch targets; idempotency records.
pub fn prefetch(
    conn: &Connection,
    plan: &Plan,
    cache: &mut Cache,
) -> Result<Prefetched, StoreError> {
    let mut out = Prefetched::default();
    let none = BTreeSet::new();
    for id in &plan.accounts {
        let targets = plan.target_holds.get(id).unwrap_or(&none);
        let state = match cache.take(id) {
            Some(mut state) => {
                for target in targets {
                    if !state.holds.iter().any(|h| &h.id == target) {
                        if let Some(h) = load_hold(conn, target)?.filter(|h| &h.account_id == id) {
                            state.holds.push(h);
                        }
                    }
                }
                Some(state)
            }
            None => load_account(conn, id, targets)?,
        };
        if let Some(state) = state {
            out.accounts.insert(id.clone(), state);
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT fingerprint, outcome FROM idempotency WHERE account_id = ?1 AND key = ?2",
    )?;
    for (id, key) in &plan.idempotency_keys {
        let row = stmt
            .query_row([id.as_str(), key.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()?;
        if let Some((fingerprint, outcome)) = row {
            let outcome = crate::codec::decode_outcome(&outcome)?;
            out.idempotency.insert(
                (id.clone(), key.clone()),
                IdempotencyRecord {
                    fingerprint,
                    outcome,
                },
            );
        }
    }
    Ok(out)
}

pub fn write_account(conn: &Connection, w: &AccountWrite) -> Result<(), StoreError> {
    let s = &w.after;
    let a = &s.account;
    conn.prepare_cached(
        "INSERT INTO accounts (id, unit, status, expires_at, timezone, metadata, overage, created_at, updated_at,
                               granted, used, expired, next_grant_seq, next_due, grants)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, expires_at = excluded.expires_at,
             metadata = excluded.metadata, overage = excluded.overage, updated_at = excluded.updated_at,
             granted = excluded.granted, used = excluded.used, expired = excluded.expired,
             next_grant_seq = excluded.next_grant_seq, next_due = excluded.next_due, grants = excluded.grants",
    )?
    .execute(params![
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
        next_due(s).map(Timestamp::millis),
        encode_grants(&s.grants),
    ])?;
    let before_holds = w.before.as_ref().map_or(&[][..], |b| &b.holds[..]);
    for h in &s.holds {
        if before_holds.iter().any(|old| old == h) {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO holds (id, account_id, amount, status, expires_at, allocations, settled_amount, created_at, resolved_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, allocations = excluded.allocations,
                 settled_amount = excluded.settled_amount, resolved_at = excluded.resolved_at",
        )?
        .execute(params![
            h.id, a.id.as_str(), h.amount.micros(), h.status.as_str(), h.expires_at.millis(),
            encode_allocations(&h.allocations), h.settled_amount.micros(), h.created_at.millis(),
            h.resolved_at.map(Timestamp::millis),
        ])?;
    }
    Ok(())
}

pub fn write_event(conn: &Connection, w: &EventWrite) -> Result<(), StoreError> {
    let e = &w.event;
    conn.prepare_cached(
        "INSERT INTO events (account_id, kind, amount, available_after, at, grant_id, hold_id, idempotency_key, attributes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        w.account_id.as_str(), e.kind.as_str(), e.amount.micros(), e.available_after.micros(), e.at.millis(),
        e.grant_id, e.hold_id, w.idempotency_key, w.attributes,
    ])?;
    Ok(())
}

pub fn write_idempotency(conn: &Connection, w: &IdempotencyWrite) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO idempotency (account_id, key, fingerprint, outcome, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        w.account_id.as_str(), w.key, w.record.fingerprint,
        crate::codec::encode_outcome(&w.record.outcome), w.created_at.millis(),
    ])?;
    Ok(())
}

pub fn load_accounts(
    conn: &Connection,
    after: Option<&AccountId>,
    limit: usize,
) -> Result<Vec<AccountState>, StoreError> {
    let ids: Vec<String> = conn
        .prepare_cached("SELECT id FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2")?
        .query_map(
            params![after.map_or("", AccountId::as_str), limit as i64],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    let none = BTreeSet::new();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(s) = load_account(conn, &account_id(&id)?, &none)? {
            out.push(s);
        }
    }
    Ok(out)
}

pub fn load_events(
    conn: &Connection,
    id: &AccountId,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, amount, available_after, at, grant_id, hold_id, idempotency_key, attributes
         FROM events WHERE account_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![id.as_str(), before.unwrap_or(i64::MAX), limit as i64],
        |r| {
            let kind: String = r.get(1)?;
            let (a, after): (i64, i64) = (r.get(2)?, r.get(3)?);
            let (seq, at, grant_id, hold_id, key, attrs) = (
                r.get(0)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            );
            Ok((|| {
                Ok(StoredEvent {
                    seq,
                    account_id: id.clone(),
                    event: Event {
                        kind: EventKind::parse(&kind).ok_or_else(|| bad("event kind", &kind))?,
                        amount: amount(a)?,
                        available_after: amount(after)?,
                        at: Timestamp::from_millis(at),
                        grant_id,
                        hold_id,
                    },
                    idempotency_key: key,
                    attributes: attrs,
                })
            })())
        },
    )?;
    collect(rows)
}

pub fn due_accounts(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<AccountId>, StoreError> {
    let ids: Vec<String> = conn
        .prepare_cached("SELECT id FROM accounts WHERE next_due IS NOT NULL AND next_due <= ?1 ORDER BY next_due LIMIT ?2")?
        .query_map(params![now.millis(), limit as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter().map(|id| account_id(id)).collect()
}

pub fn setting(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}
