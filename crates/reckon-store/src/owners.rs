//! Which account each open hold belongs to, remembered by the node that
//! committed it, so that settling or releasing a hold by its id does not
//! first need a database read to find its account.
//!
//! Safe to keep anywhere, even beside other nodes: a hold's account is
//! fixed when the hold is made and never changes, so an entry is never
//! stale. A miss (another node's hold, an evicted entry) falls back to the
//! database. Nothing about balances is kept here.

use crate::executor::Writes;
use reckon_core::{AccountId, HoldStatus};
use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept at most; holds beyond this are looked up in the database.
pub const HOLD_OWNERS_MAX: usize = 100_000;

#[derive(Default)]
pub struct HoldOwners {
    map: Mutex<HashMap<String, AccountId>>,
}

impl HoldOwners {
    /// Records the holds a committed batch opened and forgets those it
    /// resolved (they are rarely asked for again; a replay reads the database).
    pub fn learn(&self, writes: &Writes) {
        let mut map = self.map.lock().expect("hold owners lock");
        for w in &writes.accounts {
            for h in &w.after.holds {
                if h.status == HoldStatus::Held {
                    if map.len() < HOLD_OWNERS_MAX {
                        map.entry(h.id.clone())
                            .or_insert_with(|| h.account_id.clone());
                    }
                } else {
                    map.remove(&h.id);
                }
            }
        }
    }

    /// The owners known here, and the ids that must be read from the database.
    pub fn lookup(&self, hold_ids: Vec<String>) -> (HashMap<String, AccountId>, Vec<String>) {
        let map = self.map.lock().expect("hold owners lock");
        let mut known = HashMap::new();
        let mut missing = Vec::new();
        for id in hold_ids {
            match map.get(&id) {
                Some(account) => {
                    known.insert(id, account.clone());
                }
                None => missing.push(id),
            }
        }
        (known, missing)
    }
}
