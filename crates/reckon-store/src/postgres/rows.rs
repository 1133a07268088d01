//! Reading and writing core values as PostgreSQL rows. Every SQL statement
//! of the backend lives here or in `schema.rs`.

use crate::codec::{
    account_id, amount, decode_allocations, decode_grants, decode_outcome, encode_allocations,
    encode_grants, encode_json_outcome,
};
use crate::credential::{Credential, CredentialKey};
use crate::error::StoreError;
use crate::executor::{due_ids, next_due, EventWrite, IdMap, IdempotencyRecord, Writes};
use crate::request::StoredEvent;
use deadpool_postgres::GenericClient;
use futures_util::future::{try_join, try_join4, try_join_all};
use reckon_core::{
    Account, AccountId, AccountState, AccountStatus, Event, EventKind, Hold, HoldStatus,
    OveragePolicy, Timestamp, Totals, Unit,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

fn bad(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

pub const ACCOUNT_COLUMNS: &str =
    "id, unit, status, expires_at, timezone, metadata, overage, created_at, updated_at, granted, used, expired, next_grant_seq, grants";

/// An account row without its holds (the caller adds them).
pub fn account(r: &Row) -> Result<AccountState, StoreError> {
    let id: &str = r.try_get(0)?;
    let unit: &str = r.try_get(1)?;
    let status: &str = r.try_get(2)?;
    let overage: &str = r.try_get(6)?;
    let account = Account {
        id: account_id(id)?,
        unit: Unit::parse(unit).map_err(|_| bad("unit", unit))?,
        status: AccountStatus::parse(status).ok_or_else(|| bad("status", status))?,
        expires_at: ts(r.try_get(3)?),
        timezone: r.try_get::<_, Option<&str>>(4)?.map(Arc::from),
        metadata: Arc::from(r.try_get::<_, &str>(5)?),
        overage: OveragePolicy::parse(overage).ok_or_else(|| bad("overage", overage))?,
        created_at: Timestamp::from_millis(r.try_get(7)?),
        updated_at: Timestamp::from_millis(r.try_get(8)?),
    };
    let totals = Totals {
        granted: amount(r.try_get(9)?)?,
        used: amount(r.try_get(10)?)?,
        expired: amount(r.try_get(11)?)?,
    };
    let mut grants = decode_grants(r.try_get(13)?)?;
    grants.sort_by_key(reckon_core::Grant::draw_key);
    Ok(AccountState {
        account,
        totals,
        grants,
        holds: Vec::new(),
        next_grant_seq: r.try_get::<_, i64>(12)? as u64,
    })
}

pub const HOLD_COLUMNS: &str =
    "id, account_id, amount, status, expires_at, allocations, settled_amount, created_at, resolved_at";

pub fn hold(r: &Row) -> Result<Hold, StoreError> {
    let status: &str = r.try_get(3)?;
    Ok(Hold {
        id: r.try_get(0)?,
        account_id: account_id(r.try_get(1)?)?,
        amount: amount(r.try_get(2)?)?,
        status: HoldStatus::parse(status).ok_or_else(|| bad("hold status", status))?,
        expires_at: Timestamp::from_millis(r.try_get(4)?),
        allocations: decode_allocations(r.try_get(5)?)?,
        settled_amount: amount(r.try_get(6)?)?,
        created_at: Timestamp::from_millis(r.try_get(7)?),
        resolved_at: ts(r.try_get(8)?),
    })
}

/// Loads one account with its open holds (no locks taken).
pub async fn load_account(
    c: &impl GenericClient,
    id: &AccountId,
) -> Result<Option<AccountState>, StoreError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
    let Some(row) = c
        .query_opt(&c.prepare_cached(&sql).await?, &[&id.as_str()])
        .await?
    else {
        return Ok(None);
    };
    let mut state = account(&row)?;
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE account_id = $1 AND status = 'held'");
    for r in c
        .query(&c.prepare_cached(&sql).await?, &[&id.as_str()])
        .await?
    {
        state.holds.push(hold(&r)?);
    }
    Ok(Some(state))
}

type Param<'a> = &'a (dyn ToSql + Sync);

/// Everything a batch reads, under its locks.
pub type Loaded = (
    IdMap<AccountId, AccountState>,
    IdMap<(AccountId, String), IdempotencyRecord>,
);

/// Starts the batch's transaction (when `begin`), locks the named accounts
/// (those that exist) in id order, and loads them with their open and
/// target holds and the idempotency records the batch carries: all in one
/// round trip. PostgreSQL runs a connection's statements one after another,
/// so the hold and record reads start after the locks are granted and, under
/// READ COMMITTED, see everything the previous lock holder committed.
///
/// `wait` are locked waiting for other transactions; `skip` with
/// `SKIP LOCKED`: an account another transaction holds is left out of the
/// result (as a missing one is; `existing_accounts` tells them apart). The
/// waiting lock goes first, so by the time this transaction holds a row it
/// took without waiting, it waits for nothing more (no deadlock between
/// the two kinds; waiting locks are all taken in one global order).
pub async fn begin_lock_and_load(
    c: &impl GenericClient,
    begin: bool,
    wait: &[&str],
    skip: &[&str],
    target_holds: &[&str],
    keys: &[(&str, &str)],
) -> Result<Loaded, StoreError> {
    // ORDER BY sits below the row locks in the plan, so rows are locked in
    // id order: every node takes locks in one global order, so no deadlock.
    let wait_sql =
        format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    let skip_sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED"
    );
    let holds_sql = format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE (account_id = ANY($1) AND status = 'held') OR id = ANY($2)"
    );
    let records_sql = "SELECT i.account_id, i.key, i.fingerprint, i.outcome FROM idempotency i
         JOIN unnest($1::text[], $2::text[]) AS k(a, k) ON i.account_id = k.a AND i.key = k.k";
    // Prepared first (cached after the first batch), so that the statements
    // below go out in exactly this order.
    let (wait_lock, skip_lock, holds, records) = try_join4(
        c.prepare_cached(&wait_sql),
        c.prepare_cached(&skip_sql),
        c.prepare_cached(&holds_sql),
        c.prepare_cached(records_sql),
    )
    .await?;
    let ids: Vec<&str> = wait.iter().chain(skip).copied().collect();
    let (key_accounts, key_names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    let wait_params: [Param; 1] = [&wait];
    let skip_params: [Param; 1] = [&skip];
    let holds_params: [Param; 2] = [&ids, &target_holds];
    let records_params: [Param; 2] = [&key_accounts, &key_names];
    let begin = async {
        if begin {
            c.batch_execute("BEGIN").await
        } else {
            Ok(())
        }
    };
    // An empty list is not asked for at all: a statement costs a round of
    // parsing, planning and a reply even when it finds nothing.
    let lock = |statement, params, list: &[&str]| {
        let empty = list.is_empty();
        async move {
            if empty {
                Ok(Vec::new())
            } else {
                c.query(statement, params).await
            }
        }
    };
    let ((), (waited, skipped), holds, records) = try_join4(
        begin,
        try_join(
            lock(&wait_lock, &wait_params[..], wait),
            lock(&skip_lock, &skip_params[..], skip),
        ),
        c.query(&holds, &holds_params),
        async {
            // Most traffic carries no keys: then there is nothing to ask.
            if keys.is_empty() {
                Ok(Vec::new())
            } else {
                c.query(&records, &records_params).await
            }
        },
    )
    .await?;
    let rows: Vec<Row> = waited.into_iter().chain(skipped).collect();
    let mut accounts = IdMap::with_capacity_and_hasher(rows.len(), Default::default());
    for r in &rows {
        let state = account(r)?;
        accounts.insert(state.account.id.clone(), state);
    }
    for r in &holds {
        let h = hold(r)?;
        // Only accounts we locked; a target hold of another account is "not
        // found" for the one named, as in SQLite.
        if let Some(state) = accounts.get_mut(&h.account_id) {
            if !state.holds.iter().any(|o| o.id == h.id) {
                state.holds.push(h);
            }
        }
    }
    let mut idempotency = IdMap::with_capacity_and_hasher(records.len(), Default::default());
    for r in &records {
        let id = account_id(r.try_get(0)?)?;
        let Some(state) = accounts.get(&id) else {
            continue; // not locked: cannot be trusted (and cannot exist)
        };
        let key: String = r.try_get(1)?;
        let record = IdempotencyRecord {
            fingerprint: r.try_get(2)?,
            outcome: decode_outcome(r.try_get(3)?, &state.account)?,
        };
        idempotency.insert((id, key), record);
    }
    Ok((accounts, idempotency))
}

/// Which of `ids` exist (committed), without locking them: after a
/// `SKIP LOCKED` read, the ones it left out that exist are held elsewhere.
pub async fn existing_accounts(
    c: &impl GenericClient,
    ids: &[&str],
) -> Result<Vec<String>, StoreError> {
    let statement = c
        .prepare_cached("SELECT id FROM accounts WHERE id = ANY($1)")
        .await?;
    let rows = c.query(&statement, &[&ids]).await?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(StoreError::from))
        .collect()
}

/// Column vectors of changed accounts, for one `unnest` statement.
#[derive(Default)]
struct AccountColumns<'a> {
    id: Vec<&'a str>,
    unit: Vec<&'a str>,
    status: Vec<&'a str>,
    expires_at: Vec<Option<i64>>,
    timezone: Vec<Option<&'a str>>,
    metadata: Vec<&'a str>,
    overage: Vec<&'a str>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
    granted: Vec<i64>,
    used: Vec<i64>,
    expired: Vec<i64>,
    next_grant_seq: Vec<i64>,
    next_due: Vec<Option<i64>>,
    grants: Vec<String>,
}

impl<'a> AccountColumns<'a> {
    fn push(&mut self, s: &'a AccountState) {
        let a = &s.account;
        self.id.push(a.id.as_str());
        self.unit.push(a.unit.as_str());
        self.status.push(a.status.as_str());
        self.expires_at.push(a.expires_at.map(Timestamp::millis));
        self.timezone.push(a.timezone.as_deref());
        self.metadata.push(&a.metadata);
        self.overage.push(a.overage.as_str());
        self.created_at.push(a.created_at.millis());
        self.updated_at.push(a.updated_at.millis());
        self.granted.push(s.totals.granted.micros());
        self.used.push(s.totals.used.micros());
        self.expired.push(s.totals.expired.micros());
        self.next_grant_seq.push(s.next_grant_seq as i64);
        self.next_due.push(next_due(s).map(Timestamp::millis));
        self.grants.push(encode_grants(&s.grants));
    }
}

#[derive(Default)]
struct HoldColumns<'a> {
    id: Vec<&'a str>,
    account_id: Vec<&'a str>,
    amount: Vec<i64>,
    status: Vec<&'a str>,
    expires_at: Vec<i64>,
    allocations: Vec<String>,
    settled_amount: Vec<i64>,
    created_at: Vec<i64>,
    resolved_at: Vec<Option<i64>>,
}

impl<'a> HoldColumns<'a> {
    fn push(&mut self, h: &'a Hold) {
        self.id.push(&h.id);
        self.account_id.push(h.account_id.as_str());
        self.amount.push(h.amount.micros());
        self.status.push(h.status.as_str());
        self.expires_at.push(h.expires_at.millis());
        self.allocations.push(encode_allocations(&h.allocations));
        self.settled_amount.push(h.settled_amount.micros());
        self.created_at.push(h.created_at.millis());
        self.resolved_at.push(h.resolved_at.map(Timestamp::millis));
    }
}

const INSERT_ACCOUNTS: &str = "INSERT INTO accounts (id, unit, status, expires_at, timezone, metadata, overage, created_at, updated_at,
        granted, used, expired, next_grant_seq, next_due, grants)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],
        $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::text[])";

const UPDATE_ACCOUNTS: &str = "UPDATE accounts a SET status = v.status, expires_at = v.expires_at, metadata = v.metadata,
        overage = v.overage, updated_at = v.updated_at, granted = v.granted, used = v.used, expired = v.expired,
        next_grant_seq = v.next_grant_seq, next_due = v.next_due, grants = v.grants
    FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bigint[],
        $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[])
        AS v(id, status, expires_at, metadata, overage, updated_at, granted, used, expired, next_grant_seq, next_due, grants)
    WHERE a.id = v.id";

/// `next_due` of swept accounts, changed or not (see `Writes::swept_due`).
const SET_SWEPT_DUE: &str = "UPDATE accounts a SET next_due = v.next_due
    FROM unnest($1::text[], $2::bigint[]) AS v(id, next_due) WHERE a.id = v.id";

const INSERT_HOLDS: &str = "INSERT INTO holds (id, account_id, amount, status, expires_at, allocations, settled_amount, created_at, resolved_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::bigint[],
        $8::bigint[], $9::bigint[])";

const UPDATE_HOLDS: &str = "UPDATE holds h SET status = v.status, allocations = v.allocations,
        settled_amount = v.settled_amount, resolved_at = v.resolved_at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
        AS v(id, account_id, status, allocations, settled_amount, resolved_at)
    WHERE h.id = v.id AND h.account_id = v.account_id";

const INSERT_EVENTS: &str = "INSERT INTO events (account_id, kind, amount, available_after, at, grant_id, hold_id, idempotency_key, attributes)
    SELECT a, k, m, v, t, g, h, i, x FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
        $6::text[], $7::text[], $8::text[], $9::text[]) WITH ORDINALITY AS e(a, k, m, v, t, g, h, i, x, n)
    ORDER BY n";

const INSERT_IDEMPOTENCY: &str =
    "INSERT INTO idempotency (account_id, key, fingerprint, outcome, created_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])";

/// Writes everything a batch changed and commits, in one round trip: one
/// statement per table (each over `unnest`ed columns), then `COMMIT`.
///
/// Correct because every statement's result is checked before anyone is
/// answered: if one fails, PostgreSQL aborts the transaction and turns the
/// `COMMIT` into a rollback. A new account is a plain `INSERT`: if another
/// node created it since our read, the unique violation aborts the batch
/// and the caller runs it again. Updated accounts and holds are locked by
/// this transaction, so their rows are there.
pub async fn write_and_commit(c: &impl GenericClient, w: &Writes) -> Result<(), StoreError> {
    let mut new_accounts = AccountColumns::default();
    let mut accounts = AccountColumns::default();
    let mut new_holds = HoldColumns::default();
    let mut holds = HoldColumns::default();
    for aw in &w.accounts {
        let before_holds = match &aw.before {
            None => {
                new_accounts.push(&aw.after);
                &[][..]
            }
            Some(before) => {
                accounts.push(&aw.after);
                &before.holds[..]
            }
        };
        for h in &aw.after.holds {
            match before_holds.iter().find(|old| old.id == h.id) {
                None => new_holds.push(h),
                Some(old) if old != h => holds.push(h),
                Some(_) => {}
            }
        }
    }
    let mut ev = EventColumns::default();
    for e in &w.events {
        ev.push(e);
    }
    let records = &w.idempotency;
    let r_account: Vec<&str> = records.iter().map(|r| r.account_id.as_str()).collect();
    let r_key: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    let r_fingerprint: Vec<&str> = records
        .iter()
        .map(|r| r.record.fingerprint.as_str())
        .collect();
    let r_outcome: Vec<String> = records
        .iter()
        .map(|r| encode_json_outcome(&r.record.outcome))
        .collect();
    let r_created: Vec<i64> = records.iter().map(|r| r.created_at.millis()).collect();

    let swept_id: Vec<&str> = w.swept_due.iter().map(|(id, _)| id.as_str()).collect();
    let swept_due: Vec<Option<i64>> = w
        .swept_due
        .iter()
        .map(|(_, due)| due.map(Timestamp::millis))
        .collect();

    let n = &new_accounts;
    let u = &accounts;
    let nh = &new_holds;
    let uh = &holds;
    let statements: Vec<(&str, Vec<Param>)> = [
        (
            INSERT_ACCOUNTS,
            !n.id.is_empty(),
            vec![
                &n.id as Param,
                &n.unit,
                &n.status,
                &n.expires_at,
                &n.timezone,
                &n.metadata,
                &n.overage,
                &n.created_at,
                &n.updated_at,
                &n.granted,
                &n.used,
                &n.expired,
                &n.next_grant_seq,
                &n.next_due,
                &n.grants,
            ],
        ),
        (
            UPDATE_ACCOUNTS,
            !u.id.is_empty(),
            vec![
                &u.id as Param,
                &u.status,
                &u.expires_at,
                &u.metadata,
                &u.overage,
                &u.updated_at,
                &u.granted,
                &u.used,
                &u.expired,
                &u.next_grant_seq,
                &u.next_due,
                &u.grants,
            ],
        ),
        (
            SET_SWEPT_DUE,
            !swept_id.is_empty(),
            vec![&swept_id as Param, &swept_due],
        ),
        (
            INSERT_HOLDS,
            !nh.id.is_empty(),
            vec![
                &nh.id as Param,
                &nh.account_id,
                &nh.amount,
                &nh.status,
                &nh.expires_at,
                &nh.allocations,
                &nh.settled_amount,
                &nh.created_at,
                &nh.resolved_at,
            ],
        ),
        (
            UPDATE_HOLDS,
            !uh.id.is_empty(),
            vec![
                &uh.id as Param,
                &uh.account_id,
                &uh.status,
                &uh.allocations,
                &uh.settled_amount,
                &uh.resolved_at,
            ],
        ),
        (
            INSERT_EVENTS,
            !ev.account.is_empty(),
            vec![
                &ev.account as Param,
                &ev.kind,
                &ev.amount,
                &ev.after,
                &ev.at,
                &ev.grant,
                &ev.hold,
                &ev.key,
                &ev.attrs,
            ],
        ),
        (
            INSERT_IDEMPOTENCY,
            !records.is_empty(),
            vec![
                &r_account as Param,
                &r_key,
                &r_fingerprint,
                &r_outcome,
                &r_created,
            ],
        ),
    ]
    .into_iter()
    .filter(|(_, any, _)| *any)
    .map(|(sql, _, params)| (sql, params))
    .collect();
    // Prepared first (cached after the first batch), so that the writes go
    // out in order and COMMIT after them.
    let prepared = try_join_all(statements.iter().map(|(sql, _)| c.prepare_cached(sql))).await?;
    let writes = try_join_all(
        prepared
            .iter()
            .zip(&statements)
            .map(|(stmt, (_, params))| c.execute(stmt, params)),
    );
    try_join(writes, c.batch_execute("COMMIT")).await?;
    Ok(())
}

#[derive(Default)]
struct EventColumns<'a> {
    account: Vec<&'a str>,
    kind: Vec<&'a str>,
    amount: Vec<i64>,
    after: Vec<i64>,
    at: Vec<i64>,
    grant: Vec<Option<&'a str>>,
    hold: Vec<Option<&'a str>>,
    key: Vec<Option<&'a str>>,
    attrs: Vec<Option<&'a str>>,
}

impl<'a> EventColumns<'a> {
    fn push(&mut self, w: &'a EventWrite) {
        let e = &w.event;
        self.account.push(w.account_id.as_str());
        self.kind.push(e.kind.as_str());
        self.amount.push(e.amount.micros());
        self.after.push(e.available_after.micros());
        self.at.push(e.at.millis());
        self.grant.push(e.grant_id.as_deref());
        self.hold.push(e.hold_id.as_deref());
        self.key.push(w.idempotency_key.as_deref());
        self.attrs.push(w.attributes.as_deref());
    }
}

/// Inserts events outside a batch (credential changes), in order.
pub async fn write_events(c: &impl GenericClient, events: &[EventWrite]) -> Result<(), StoreError> {
    let mut ev = EventColumns::default();
    for e in events {
        ev.push(e);
    }
    let params: [Param; 9] = [
        &ev.account,
        &ev.kind,
        &ev.amount,
        &ev.after,
        &ev.at,
        &ev.grant,
        &ev.hold,
        &ev.key,
        &ev.attrs,
    ];
    c.execute(&c.prepare_cached(INSERT_EVENTS).await?, &params)
        .await?;
    Ok(())
}

pub async fn load_accounts(
    c: &impl GenericClient,
    after: Option<&AccountId>,
    limit: usize,
) -> Result<Vec<AccountState>, StoreError> {
    let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id > $1 ORDER BY id LIMIT $2");
    let rows = c
        .query(
            &c.prepare_cached(&sql).await?,
            &[&after.map_or("", AccountId::as_str), &(limit as i64)],
        )
        .await?;
    let mut out: Vec<AccountState> = rows.iter().map(account).collect::<Result<_, _>>()?;
    let ids: Vec<&str> = out.iter().map(|s| s.account.id.as_str()).collect();
    let sql =
        format!("SELECT {HOLD_COLUMNS} FROM holds WHERE account_id = ANY($1) AND status = 'held'");
    let holds = c.query(&c.prepare_cached(&sql).await?, &[&ids]).await?;
    let mut by_account: HashMap<String, Vec<Hold>> = HashMap::new();
    for r in &holds {
        let h = hold(r)?;
        by_account
            .entry(h.account_id.as_str().to_owned())
            .or_default()
            .push(h);
    }
    for s in &mut out {
        s.holds = by_account.remove(s.account.id.as_str()).unwrap_or_default();
    }
    Ok(out)
}

pub async fn load_events(
    c: &impl GenericClient,
    id: &AccountId,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = c.query(
            &c.prepare_cached("SELECT seq, kind, amount, available_after, at, grant_id, hold_id, idempotency_key, attributes
             FROM events WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3").await?,
            &[&id.as_str(), &before.unwrap_or(i64::MAX), &(limit as i64)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let kind: &str = r.try_get(1)?;
            Ok(StoredEvent {
                seq: r.try_get(0)?,
                account_id: id.clone(),
                event: Event {
                    kind: EventKind::parse(kind).ok_or_else(|| bad("event kind", kind))?,
                    amount: amount(r.try_get(2)?)?,
                    available_after: amount(r.try_get(3)?)?,
                    at: Timestamp::from_millis(r.try_get(4)?),
                    grant_id: r.try_get(5)?,
                    hold_id: r.try_get(6)?,
                },
                idempotency_key: r.try_get(7)?,
                attributes: r.try_get(8)?,
            })
        })
        .collect()
}

pub async fn load_hold(c: &impl GenericClient, hold_id: &str) -> Result<Option<Hold>, StoreError> {
    let sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1");
    c.query_opt(&c.prepare_cached(&sql).await?, &[&hold_id])
        .await?
        .map(|r| hold(&r))
        .transpose()
}

pub async fn hold_accounts(
    c: &impl GenericClient,
    hold_ids: &[String],
) -> Result<HashMap<String, AccountId>, StoreError> {
    let rows = c
        .query(
            &c.prepare_cached("SELECT id, account_id FROM holds WHERE id = ANY($1)")
                .await?,
            &[&hold_ids],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, account_id(r.try_get(1)?)?)))
        .collect()
}

pub async fn load_holds(
    c: &impl GenericClient,
    id: &AccountId,
    status: Option<HoldStatus>,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Hold>, StoreError> {
    let filter = crate::codec::hold_status_filter(status, "$2");
    let sql = format!(
        // `$2 = $2` keeps the parameter typed when the filter does not use it.
        "SELECT {HOLD_COLUMNS} FROM holds WHERE account_id = $1 AND {filter} AND $2::bigint = $2::bigint
         ORDER BY created_at DESC, id LIMIT $3"
    );
    let rows = c
        .query(
            &c.prepare_cached(&sql).await?,
            &[&id.as_str(), &now.millis(), &(limit as i64)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let mut h = hold(r)?;
            h.status = h.status_at(now);
            Ok(h)
        })
        .collect()
}

pub async fn open_holds(
    c: &impl GenericClient,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Hold>, StoreError> {
    let sql = format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE status = 'held' AND expires_at > $1 ORDER BY created_at, id LIMIT $2"
    );
    let rows = c
        .query(
            &c.prepare_cached(&sql).await?,
            &[&now.millis(), &(limit as i64)],
        )
        .await?;
    rows.iter().map(hold).collect()
}

/// Accounts with a grant due (`next_due`) or an open hold expired, at most
/// `limit`, the longest overdue of each kind first.
pub async fn due_accounts(
    c: &impl GenericClient,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<AccountId>, StoreError> {
    due(c, DUE_BY_GRANTS, DUE_BY_HOLDS, now, limit).await
}

/// Claims due accounts for this transaction: rows another node's sweep (or
/// a batch) holds are skipped, so two nodes never sweep one account at once,
/// and an account swept here is no longer due when the lock is released.
pub async fn claim_due_accounts(
    c: &impl GenericClient,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<AccountId>, StoreError> {
    due(c, CLAIM_BY_GRANTS, CLAIM_BY_HOLDS, now, limit).await
}

const DUE_BY_GRANTS: &str =
    "SELECT id FROM accounts WHERE next_due IS NOT NULL AND next_due <= $1 ORDER BY next_due LIMIT $2";
/// Through `holds_expiring`; an account with several expired holds may come
/// back more than once, which [`due_ids`] folds.
const DUE_BY_HOLDS: &str =
    "SELECT account_id FROM holds WHERE status = 'held' AND expires_at <= $1 ORDER BY expires_at LIMIT $2";
const CLAIM_BY_GRANTS: &str =
    "SELECT id FROM accounts WHERE next_due IS NOT NULL AND next_due <= $1
     ORDER BY next_due LIMIT $2 FOR UPDATE SKIP LOCKED";
/// The accounts of expired holds, locked; `SKIP LOCKED` skips only rows
/// other transactions hold, so one claimed by the grants' query comes back.
const CLAIM_BY_HOLDS: &str = "SELECT id FROM accounts WHERE id IN (SELECT account_id FROM holds
     WHERE status = 'held' AND expires_at <= $1 ORDER BY expires_at LIMIT $2) FOR UPDATE SKIP LOCKED";

async fn due(
    c: &impl GenericClient,
    by_grants: &str,
    by_holds: &str,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<AccountId>, StoreError> {
    let ids = |sql, limit: usize| async move {
        let rows = c
            .query(
                &c.prepare_cached(sql).await?,
                &[&now.millis(), &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<_, String>(0)?))
            .collect::<Result<Vec<String>, StoreError>>()
    };
    // The second query asks only for what is left: a claim locks every row
    // it returns, and an account locked but not swept would wait for nothing.
    let first = ids(by_grants, limit).await?;
    let rest = limit - first.len();
    let due = due_ids(first, ids(by_holds, rest).await?, limit);
    due.iter().map(|id| account_id(id)).collect()
}

pub async fn setting(c: &impl GenericClient, key: &str) -> Result<Option<String>, StoreError> {
    Ok(c.query_opt(
        &c.prepare_cached("SELECT value FROM settings WHERE key = $1")
            .await?,
        &[&key],
    )
    .await?
    .map(|r| r.get(0)))
}

const CREDENTIAL_COLUMNS: &str = "id, account_id, public, display, active, created_at, updated_at";

fn credential(r: &Row) -> Result<Credential, StoreError> {
    Ok(Credential {
        id: r.try_get(0)?,
        account_id: account_id(r.try_get(1)?)?,
        public: r.try_get(2)?,
        display: r.try_get(3)?,
        active: r.try_get(4)?,
        created_at: Timestamp::from_millis(r.try_get(5)?),
        updated_at: Timestamp::from_millis(r.try_get(6)?),
    })
}

pub async fn find_credential(
    c: &impl GenericClient,
    key: &CredentialKey,
) -> Result<Option<Credential>, StoreError> {
    let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE lookup = $1");
    c.query_opt(&c.prepare_cached(&sql).await?, &[&key.lookup])
        .await?
        .map(|r| credential(&r))
        .transpose()
}

pub async fn credential_by_id(
    c: &impl GenericClient,
    account: &AccountId,
    id: &str,
) -> Result<Option<Credential>, StoreError> {
    let sql =
        format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = $1 AND account_id = $2");
    c.query_opt(&c.prepare_cached(&sql).await?, &[&id, &account.as_str()])
        .await?
        .map(|r| credential(&r))
        .transpose()
}

pub async fn credentials(
    c: &impl GenericClient,
    account: &AccountId,
) -> Result<Vec<Credential>, StoreError> {
    let sql = format!(
        "SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE account_id = $1 ORDER BY created_at, id"
    );
    let rows = c
        .query(&c.prepare_cached(&sql).await?, &[&account.as_str()])
        .await?;
    rows.iter().map(credential).collect()
}
