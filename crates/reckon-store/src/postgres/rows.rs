//! Reading and writing core values as PostgreSQL rows. Every SQL statement
//! of the backend lives here or in `schema.rs`.

use crate::codec::{
    account_id, amount, decode_allocations, decode_grants, decode_outcome, encode_allocations,
    encode_grants, encode_outcome,
};
use crate::credential::{Credential, CredentialKey};
use crate::error::StoreError;
use crate::executor::{next_due, AccountWrite, EventWrite, IdempotencyRecord, IdempotencyWrite};
use crate::request::StoredEvent;
use deadpool_postgres::GenericClient;
use reckon_core::{
    Account, AccountId, AccountState, AccountStatus, Event, EventKind, Hold, HoldStatus,
    OveragePolicy, Timestamp, Totals, Unit,
};
use std::collections::HashMap;
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
        timezone: r.try_get(4)?,
        metadata: r.try_get(5)?,
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
    grants.sort_by_key(|g| (g.expires_at.map_or(i64::MAX, Timestamp::millis), g.seq));
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

/// Locks the named accounts (those that exist) in id order and loads them
/// with their open holds and the target holds, then the idempotency records
/// the batch carries. The holds and records are read after the locks are
/// granted, so they include everything committed by the previous holder.
pub async fn lock_and_load(
    c: &impl GenericClient,
    ids: &[&str],
    target_holds: &[&str],
    keys: &[(&str, &str)],
) -> Result<
    (
        HashMap<AccountId, AccountState>,
        HashMap<(AccountId, String), IdempotencyRecord>,
    ),
    StoreError,
> {
    // ORDER BY sits below the row locks in the plan, so rows are locked in
    // id order: every node takes locks in one global order, so no deadlock.
    let sql =
        format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    let rows = c.query(&c.prepare_cached(&sql).await?, &[&ids]).await?;
    let mut accounts = HashMap::with_capacity(rows.len());
    for r in &rows {
        let state = account(r)?;
        accounts.insert(state.account.id.clone(), state);
    }
    if accounts.is_empty() {
        return Ok((accounts, HashMap::new()));
    }
    let holds_sql = format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE (account_id = ANY($1) AND status = 'held') OR id = ANY($2)"
    );
    let (key_accounts, key_names): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    let holds_stmt = c.prepare_cached(&holds_sql).await?;
    let records_stmt = c
        .prepare_cached(
            "SELECT i.account_id, i.key, i.fingerprint, i.outcome FROM idempotency i
             JOIN unnest($1::text[], $2::text[]) AS k(a, k) ON i.account_id = k.a AND i.key = k.k",
        )
        .await?;
    let holds_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&ids, &target_holds];
    let records_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
        [&key_accounts, &key_names];
    // Sent together: one round trip for both.
    let holds = c.query(&holds_stmt, &holds_params);
    let records = c.query(&records_stmt, &records_params);
    let (holds, records) = futures_util::future::try_join(holds, records).await?;
    for r in &holds {
        let h = hold(r)?;
        // A hold id names one account: a target from another account is
        // "not found" for this one, as in SQLite.
        if let Some(state) = accounts.get_mut(&h.account_id) {
            if !state.holds.iter().any(|o| o.id == h.id) {
                state.holds.push(h);
            }
        }
    }
    let mut idempotency = HashMap::with_capacity(records.len());
    for r in &records {
        let id = account_id(r.try_get(0)?)?;
        let key: String = r.try_get(1)?;
        let record = IdempotencyRecord {
            fingerprint: r.try_get(2)?,
            outcome: decode_outcome(r.try_get(3)?)?,
        };
        idempotency.insert((id, key), record);
    }
    Ok((accounts, idempotency))
}

/// Why a batch's writes could not go in as planned; the batch is retried.
#[derive(Debug)]
pub struct Raced(pub String);

/// Writes a changed account and its changed holds. A new account is
/// inserted only if no other node created it meanwhile: then the batch was
/// decided on a state that no longer holds, and must run again.
pub async fn write_account(
    c: &impl GenericClient,
    w: &AccountWrite,
) -> Result<Result<(), Raced>, StoreError> {
    let s = &w.after;
    let a = &s.account;
    let expires_at = a.expires_at.map(Timestamp::millis);
    let next_due = next_due(s).map(Timestamp::millis);
    let grants = encode_grants(&s.grants);
    let next_grant_seq = s.next_grant_seq as i64;
    let (created_at, updated_at) = (a.created_at.millis(), a.updated_at.millis());
    let (granted, used, expired) = (
        s.totals.granted.micros(),
        s.totals.used.micros(),
        s.totals.expired.micros(),
    );
    let changed = if w.before.is_none() {
        c.execute(
            &c.prepare_cached("INSERT INTO accounts (id, unit, status, expires_at, timezone, metadata, overage, created_at, updated_at,
                                   granted, used, expired, next_grant_seq, next_due, grants)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (id) DO NOTHING").await?,
            &[
                &a.id.as_str(), &a.unit.as_str(), &a.status.as_str(), &expires_at, &a.timezone,
                &a.metadata, &a.overage.as_str(), &created_at, &updated_at, &granted, &used,
                &expired, &next_grant_seq, &next_due, &grants,
            ],
        )
        .await?
    } else {
        c.execute(
            &c.prepare_cached("UPDATE accounts SET status = $2, expires_at = $3, metadata = $4, overage = $5, updated_at = $6,
                 granted = $7, used = $8, expired = $9, next_grant_seq = $10, next_due = $11, grants = $12
             WHERE id = $1").await?,
            &[
                &a.id.as_str(), &a.status.as_str(), &expires_at, &a.metadata, &a.overage.as_str(),
                &updated_at, &granted, &used, &expired, &next_grant_seq, &next_due, &grants,
            ],
        )
        .await?
    };
    if changed != 1 {
        return Ok(Err(Raced(format!(
            "account {} was created concurrently",
            a.id
        ))));
    }
    let before_holds = w.before.as_ref().map_or(&[][..], |b| &b.holds[..]);
    for h in &s.holds {
        if before_holds.iter().any(|old| old == h) {
            continue;
        }
        let changed = c.execute(
            &c.prepare_cached("INSERT INTO holds (id, account_id, amount, status, expires_at, allocations, settled_amount, created_at, resolved_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, allocations = excluded.allocations,
                     settled_amount = excluded.settled_amount, resolved_at = excluded.resolved_at
                 WHERE holds.account_id = excluded.account_id").await?,
                &[
                    &h.id, &a.id.as_str(), &h.amount.micros(), &h.status.as_str(),
                    &h.expires_at.millis(), &encode_allocations(&h.allocations),
                    &h.settled_amount.micros(), &h.created_at.millis(),
                    &h.resolved_at.map(Timestamp::millis),
                ],
            )
            .await?;
        if changed != 1 {
            return Err(StoreError::Corrupt(format!(
                "hold id {} already belongs to another account",
                h.id
            )));
        }
    }
    Ok(Ok(()))
}

/// Inserts events in one statement, in order (so `seq` follows the batch).
pub async fn write_events(c: &impl GenericClient, events: &[EventWrite]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len();
    let mut account = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut amt = Vec::with_capacity(n);
    let mut after = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    let mut grant = Vec::with_capacity(n);
    let mut hold = Vec::with_capacity(n);
    let mut key = Vec::with_capacity(n);
    let mut attrs = Vec::with_capacity(n);
    for w in events {
        let e = &w.event;
        account.push(w.account_id.as_str());
        kind.push(e.kind.as_str());
        amt.push(e.amount.micros());
        after.push(e.available_after.micros());
        at.push(e.at.millis());
        grant.push(e.grant_id.as_deref());
        hold.push(e.hold_id.as_deref());
        key.push(w.idempotency_key.as_deref());
        attrs.push(w.attributes.as_deref());
    }
    c.execute(
            &c.prepare_cached("INSERT INTO events (account_id, kind, amount, available_after, at, grant_id, hold_id, idempotency_key, attributes)
         SELECT a, k, m, v, t, g, h, i, x FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                              $6::text[], $7::text[], $8::text[], $9::text[]) WITH ORDINALITY
                       AS e(a, k, m, v, t, g, h, i, x, n)
         ORDER BY n").await?,
        &[&account, &kind, &amt, &after, &at, &grant, &hold, &key, &attrs],
    )
    .await?;
    Ok(())
}

/// Inserts idempotency records in one statement. A key is only ever
/// written by a transaction holding its account's lock, after reading that
/// the key is absent, so a conflict here means a bug: it fails the batch.
pub async fn write_idempotency(
    c: &impl GenericClient,
    records: &[IdempotencyWrite],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let account: Vec<&str> = records.iter().map(|w| w.account_id.as_str()).collect();
    let key: Vec<&str> = records.iter().map(|w| w.key.as_str()).collect();
    let fingerprint: Vec<&str> = records
        .iter()
        .map(|w| w.record.fingerprint.as_str())
        .collect();
    let outcome: Vec<String> = records
        .iter()
        .map(|w| encode_outcome(&w.record.outcome))
        .collect();
    let created: Vec<i64> = records.iter().map(|w| w.created_at.millis()).collect();
    c.execute(
        &c.prepare_cached(
            "INSERT INTO idempotency (account_id, key, fingerprint, outcome, created_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])",
        )
        .await?,
        &[&account, &key, &fingerprint, &outcome, &created],
    )
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
    // Filter on the status as of `now`: a 'held' row past its expiry is expired.
    let filter = match status {
        None => "TRUE",
        Some(HoldStatus::Held) => "status = 'held' AND expires_at > $2",
        Some(HoldStatus::Expired) => {
            "(status = 'expired' OR (status = 'held' AND expires_at <= $2))"
        }
        Some(HoldStatus::Settled) => "status = 'settled'",
        Some(HoldStatus::Released) => "status = 'released'",
    };
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

pub async fn due_accounts(
    c: &impl GenericClient,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<AccountId>, StoreError> {
    let rows = c.query(
            &c.prepare_cached("SELECT id FROM accounts WHERE next_due IS NOT NULL AND next_due <= $1 ORDER BY next_due LIMIT $2").await?,
            &[&now.millis(), &(limit as i64)],
        )
        .await?;
    rows.iter().map(|r| account_id(r.try_get(0)?)).collect()
}

/// Claims due accounts for this transaction: rows another node's sweep (or
/// a batch) holds are skipped, so two nodes never sweep one account at once,
/// and an account swept here is no longer due when the lock is released.
pub async fn claim_due_accounts(
    c: &impl GenericClient,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<AccountId>, StoreError> {
    let rows = c
        .query(
            &c.prepare_cached(
                "SELECT id FROM accounts WHERE next_due IS NOT NULL AND next_due <= $1
             ORDER BY next_due LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .await?,
            &[&now.millis(), &(limit as i64)],
        )
        .await?;
    rows.iter().map(|r| account_id(r.try_get(0)?)).collect()
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
