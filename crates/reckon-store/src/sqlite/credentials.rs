//! SQL for credentials. Writes run on the writer's connection (see
//! `SqliteStore::maintain`), each in its own transaction with its event.

use super::account_log::AccountLog;
use super::rows::{append_event_and_link, load_account};
use crate::codec::account_id;
use crate::credential::{Credential, CredentialKey, CredentialRefusal};
use crate::error::StoreError;
use crate::executor::EventWrite;
use reckon_core::{AccountId, Amount, Event, EventKind, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::BTreeSet;

const COLUMNS: &str = "id, account_id, public, display, active, created_at, updated_at";

fn row(r: &Row) -> Result<Result<Credential, StoreError>, rusqlite::Error> {
    let acct: String = r.get(1)?;
    let (id, public, display, active, created, updated): (String, bool, String, bool, i64, i64) = (
        r.get(0)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    );
    Ok(account_id(&acct).map(|account_id| Credential {
        id,
        account_id,
        public,
        display,
        active,
        created_at: Timestamp::from_millis(created),
        updated_at: Timestamp::from_millis(updated),
    }))
}

pub fn find(conn: &Connection, key: &CredentialKey) -> Result<Option<Credential>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM credentials WHERE lookup = ?1");
    conn.prepare_cached(&sql)?
        .query_row([&key.lookup], row)
        .optional()?
        .transpose()
}

pub fn list(conn: &Connection, account: &AccountId) -> Result<Vec<Credential>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM credentials WHERE account_id = ?1 ORDER BY created_at, id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([account.as_str()], row)?;
    rows.map(|r| r?).collect()
}

/// The audit event for a credential change; `available_after` is the
/// account's balance at `now`, unchanged by the credential.
fn event(
    conn: &Connection,
    log: &AccountLog,
    account: &AccountId,
    kind: EventKind,
    now: Timestamp,
) -> Result<EventWrite, StoreError> {
    let available = load_account(conn, log, account, &BTreeSet::new())?
        .map_or(Amount::ZERO, |s| s.balance_at(now).available);
    Ok(EventWrite {
        account_id: account.clone(),
        event: Event {
            kind,
            amount: Amount::ZERO,
            available_after: available,
            at: now,
            grant_id: None,
            hold_id: None,
        },
        idempotency_key: None,
        attributes: None,
    })
}

pub fn add(
    conn: &mut Connection,
    log: &AccountLog,
    account: &AccountId,
    key: &CredentialKey,
    id: String,
    now: Timestamp,
) -> Result<Result<Credential, CredentialRefusal>, StoreError> {
    let tx = conn.transaction()?;
    if load_account(&tx, log, account, &BTreeSet::new())?.is_none() {
        return Ok(Err(CredentialRefusal::AccountNotFound));
    }
    if let Some(existing) = find(&tx, key)? {
        return Ok(if &existing.account_id == account {
            Ok(existing)
        } else {
            Err(CredentialRefusal::KeyInUse)
        });
    }
    tx.execute(
        "INSERT INTO credentials (id, account_id, lookup, public, display, active, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)",
        params![id, account.as_str(), key.lookup, key.public, key.display, now.millis()],
    )?;
    let mut e = event(&tx, log, account, EventKind::CredentialAdded, now)?;
    e.attributes = Some(serde_json::json!({"credential_id": id, "public": key.public}).to_string());
    append_event_and_link(&tx, log, &e)?;
    let created = find(&tx, key)?
        .ok_or_else(|| StoreError::Corrupt("credential vanished after insert".into()))?;
    tx.commit()?;
    Ok(Ok(created))
}

pub fn set_active(
    conn: &mut Connection,
    log: &AccountLog,
    account: &AccountId,
    credential_id: &str,
    active: bool,
    now: Timestamp,
) -> Result<Option<Credential>, StoreError> {
    let tx = conn.transaction()?;
    let sql = format!("SELECT {COLUMNS} FROM credentials WHERE id = ?1 AND account_id = ?2");
    let Some(current) = tx
        .prepare_cached(&sql)?
        .query_row([credential_id, account.as_str()], row)
        .optional()?
        .transpose()?
    else {
        return Ok(None);
    };
    if current.active == active {
        return Ok(Some(current));
    }
    tx.execute(
        "UPDATE credentials SET active = ?1, updated_at = ?2 WHERE id = ?3",
        params![active, now.millis(), credential_id],
    )?;
    let kind = if active {
        EventKind::CredentialActivated
    } else {
        EventKind::CredentialDeactivated
    };
    let mut e = event(&tx, log, account, kind, now)?;
    e.attributes = Some(serde_json::json!({"credential_id": credential_id}).to_string());
    append_event_and_link(&tx, log, &e)?;
    tx.commit()?;
    Ok(Some(Credential {
        active,
        updated_at: now,
        ..current
    }))
}
