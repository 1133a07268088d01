//! The batch step every backend shares: prefetch, apply, collect writes.
//!
//! A backend's writer takes a batch of requests and
//! 1. asks [`plan`] what to load (accounts in sorted order, the holds the
//!    commands target, the idempotency keys they carry),
//! 2. loads exactly that inside its transaction (PostgreSQL locks the
//!    accounts in the plan's order, so concurrent nodes cannot deadlock),
//! 3. calls [`apply_batch`], which does no I/O: it runs each request through
//!    idempotency and the core, in order, on the prefetched state, and
//! 4. persists the returned [`Writes`] and commits, then answers everyone.
//!
//! Requests in one batch see each other's effects, exactly as if they had
//! run one by one: the batch is only a way to share one commit.

use crate::error::ExecError;
use crate::request::{Executed, Request};
use reckon_core::{apply, AccountId, AccountState, Command, Event, Outcome, Timestamp};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A hash map on the writer's path, keyed by account id. foldhash instead
/// of std's SipHash, which was ~6 % of a batch's instructions; it is seeded
/// per process, so clients cannot pick ids that collide.
pub type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub type IdSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// Most requests one writer pass takes before it commits.
pub const BATCH_REQUESTS_MAX: usize = 4_096;

/// What a batch needs loaded.
#[derive(Debug, Default)]
pub struct Plan {
    /// Each account once, sorted: the lock order on shared backends.
    pub accounts: Vec<AccountId>,
    /// Holds that commands resolve, by account: loaded even when no longer
    /// open, so the core can say "already settled".
    pub target_holds: BTreeMap<AccountId, BTreeSet<String>>,
    /// (account, key) pairs to look up.
    pub idempotency_keys: Vec<(AccountId, String)>,
}

pub fn plan(requests: &[Request]) -> Plan {
    // Deduplicated by hash, then the unique ids sorted once: inserting every
    // request's id into a `BTreeSet` compared strings log(n) times per
    // request (~4 % of the writer in 1,000-operation batches).
    let mut seen: IdSet<AccountId> = IdSet::default();
    let mut accounts = Vec::new();
    let mut target_holds: BTreeMap<AccountId, BTreeSet<String>> = BTreeMap::new();
    let mut keys = BTreeSet::new();
    for r in requests {
        let id = r.account_id();
        if seen.insert(id.clone()) {
            accounts.push(id.clone());
        }
        if let Some(hold) = r.command.target_hold() {
            target_holds
                .entry(id.clone())
                .or_default()
                .insert(hold.to_owned());
        }
        if let Some(k) = &r.idempotency_key {
            keys.insert((id.clone(), k.as_str().to_owned()));
        }
    }
    accounts.sort_unstable();
    Plan {
        accounts,
        target_holds,
        idempotency_keys: keys.into_iter().collect(),
    }
}

/// A stored idempotency record: the request's fingerprint and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub outcome: Outcome,
}

/// Everything the batch loaded.
#[derive(Debug, Default)]
pub struct Prefetched {
    pub accounts: IdMap<AccountId, AccountState>,
    pub idempotency: IdMap<(AccountId, String), IdempotencyRecord>,
}

/// An account whose state changed, with the state as loaded (for diffing).
#[derive(Debug)]
pub struct AccountWrite {
    pub before: Option<AccountState>,
    pub after: AccountState,
}

#[derive(Debug)]
pub struct EventWrite {
    pub account_id: AccountId,
    pub event: Event,
    pub idempotency_key: Option<String>,
    pub attributes: Option<String>,
}

#[derive(Debug)]
pub struct IdempotencyWrite {
    pub account_id: AccountId,
    pub key: String,
    pub record: IdempotencyRecord,
    pub created_at: Timestamp,
}

/// What the backend must persist, in one transaction, before answering.
#[derive(Debug, Default)]
pub struct Writes {
    pub accounts: Vec<AccountWrite>,
    pub events: Vec<EventWrite>,
    pub idempotency: Vec<IdempotencyWrite>,
    /// Accounts a sweep visited, with their [`next_due`] after the batch, in
    /// id order. The backend stores it whether or not the sweep changed
    /// anything: a stored value may be older than the formula (before the
    /// `holds_expiring` index it counted open holds), and one left in the
    /// past would bring the sweeper back to the account on every pass.
    pub swept_due: Vec<(AccountId, Option<Timestamp>)>,
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.events.is_empty()
            && self.idempotency.is_empty()
            && self.swept_due.is_empty()
    }
}

/// What a batch produced.
pub struct BatchOutput {
    /// One answer per request, in order.
    pub results: Vec<Result<Executed, ExecError>>,
    /// What to persist before answering.
    pub writes: Writes,
    /// Prefetched accounts the batch did not change, handed back so a
    /// backend that caches state can keep them without a copy.
    pub unchanged: IdMap<AccountId, AccountState>,
}

/// Applies `requests` in order at `now`. Pure: no I/O, no clock.
pub fn apply_batch(
    mut prefetched: Prefetched,
    requests: &[Request],
    now: Timestamp,
) -> BatchOutput {
    let mut before: IdMap<AccountId, Option<AccountState>> = IdMap::default();
    let mut swept: IdSet<AccountId> = IdSet::default();
    let mut writes = Writes::default();
    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        let id = request.account_id();
        let key = request
            .idempotency_key
            .as_ref()
            .map(|k| (id.clone(), k.as_str().to_owned()));
        let fingerprint = key.as_ref().map(|_| request.fingerprint());
        if let (Some(key), Some(fingerprint)) = (&key, &fingerprint) {
            if let Some(record) = prefetched.idempotency.get(key) {
                results.push(if &record.fingerprint == fingerprint {
                    Ok(Executed {
                        outcome: record.outcome.clone(),
                        replayed: true,
                    })
                } else {
                    Err(ExecError::IdempotencyConflict)
                });
                continue;
            }
        }
        let state = prefetched.accounts.get(id);
        let applied = apply(state, &request.command, now);
        if applied.is_ok() && matches!(request.command, Command::Sweep { .. }) {
            swept.insert(id.clone());
        }
        match applied {
            Err(rejection) => results.push(Err(ExecError::Rejected(rejection))),
            // Every state change produces an event, so a command with none
            // (a check, a sweep with nothing due) has nothing to write.
            Ok(applied) if applied.events.is_empty() => {
                results.push(Ok(Executed {
                    outcome: applied.outcome,
                    replayed: false,
                }));
            }
            Ok(applied) => {
                before.entry(id.clone()).or_insert_with(|| state.cloned());
                for event in applied.events {
                    writes.events.push(EventWrite {
                        account_id: id.clone(),
                        event,
                        idempotency_key: key.as_ref().map(|(_, k)| k.clone()),
                        attributes: request.attributes.clone(),
                    });
                }
                if let (Some(key), Some(fingerprint)) = (key, fingerprint) {
                    let record = IdempotencyRecord {
                        fingerprint,
                        outcome: applied.outcome.clone(),
                    };
                    prefetched.idempotency.insert(key.clone(), record.clone());
                    writes.idempotency.push(IdempotencyWrite {
                        account_id: key.0,
                        key: key.1,
                        record,
                        created_at: now,
                    });
                }
                prefetched.accounts.insert(id.clone(), applied.state);
                results.push(Ok(Executed {
                    outcome: applied.outcome,
                    replayed: false,
                }));
            }
        }
    }
    // Before changed accounts move out to `writes`: every account's state
    // after the batch, changed or not, is still in the prefetched map here.
    let mut swept: Vec<AccountId> = swept.into_iter().collect();
    swept.sort_unstable();
    for id in swept {
        let state = prefetched
            .accounts
            .get(&id)
            .expect("a swept account exists, so it was prefetched");
        writes.swept_due.push((id, next_due(state)));
    }
    for (id, before) in before {
        let after = prefetched
            .accounts
            .remove(&id)
            .expect("every changed account is in the prefetched map");
        writes.accounts.push(AccountWrite { before, after });
    }
    // A stable write order keeps row locks on shared backends in one order
    // too. Sorted by index, then moved once: an `AccountWrite` holds two
    // account states, and moving them through the sort cost ~3 % of the
    // writer bench's instructions.
    let mut order: Vec<usize> = (0..writes.accounts.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let id = |i: usize| &writes.accounts[i].after.account.id;
        id(a).cmp(id(b))
    });
    let mut slots: Vec<Option<AccountWrite>> = writes.accounts.drain(..).map(Some).collect();
    writes.accounts = order
        .into_iter()
        .map(|i| slots[i].take().expect("each index once"))
        .collect();
    BatchOutput {
        results,
        writes,
        unchanged: prefetched.accounts,
    }
}

/// The earliest instant at which an account next needs the sweeper for its
/// grants: their first expiry. Stored so the sweeper finds due accounts
/// with an index instead of a scan. Open holds are not counted: the sweeper
/// finds expired holds through an index of open holds by expiry, so a lock
/// or a settle does not move the account in the `next_due` index (on SQLite
/// that was an in-place write of the account's row beside its appended
/// state, on PostgreSQL a non-HOT update of the account).
pub fn next_due(state: &AccountState) -> Option<Timestamp> {
    state.grants.iter().filter_map(|g| g.expires_at).min()
}

/// The sweeper's due accounts from its two indexes: those with a grant due
/// first, then those with an expired open hold, each id once, at most
/// `limit`. Each list is in its index's order (the longest overdue first).
pub fn due_ids(by_grants: Vec<String>, by_holds: Vec<String>, limit: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    by_grants
        .into_iter()
        .chain(by_holds)
        .filter(|id| seen.insert(id.clone()))
        .take(limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_ids_keep_order_fold_repeats_and_stop_at_the_limit() {
        let v = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let grants = v(&["g1", "both"]);
        let holds = v(&["h1", "h1", "both", "h2"]);
        assert_eq!(
            due_ids(grants.clone(), holds.clone(), 10),
            v(&["g1", "both", "h1", "h2"])
        );
        assert_eq!(due_ids(grants, holds, 3), v(&["g1", "both", "h1"]));
    }
}
