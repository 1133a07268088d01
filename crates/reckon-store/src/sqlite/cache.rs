//! The writer's cache of account state.
//!
//! The writer owns the database file's only writing connection, so between
//! its own commits the state it last wrote is the state on disk: it can keep
//! accounts in memory and skip reading them back on every batch. Two rules
//! keep that true:
//! - Only committed state enters the cache (after `COMMIT` returns).
//! - Another process may write the same file (the admin CLI). SQLite's
//!   `PRAGMA data_version` changes exactly when another connection has
//!   committed; the writer reads it at the start of every batch, inside its
//!   write transaction, and drops the whole cache when it moved.
//!
//! The cache is bounded ([`CACHE_ACCOUNTS_MAX`]); when full it evicts
//! arbitrary entries (cheap, and fair for any access pattern that does not
//! fit anyway). A miss costs two indexed reads (the account's row, then its
//! open holds).
//!
//! Each entry also keeps the account's newest event `seq` (the head of its
//! event chain, see `rows::append_events`), which the next batch's first
//! event points back to. Writes on the writer's connection that bypass the
//! cache (credential changes append events) must [`Cache::clear`] it.

use crate::executor::IdMap;
use reckon_core::{AccountId, AccountState, HoldStatus};

/// Accounts kept in memory. About 1.2 KB each with a grant (measured at a
/// million accounts: the entry, the table's slack and each string's own
/// allocation), so ~120 MB when full, however many accounts the file holds.
/// At a million accounts a 10,000 cap was slower, and every account cached
/// was faster but took ~1.2 GB (docs/performance-log.md).
pub const CACHE_ACCOUNTS_MAX: usize = 100_000;

/// A committed account state and the `seq` of its newest event, if any.
pub struct Cached {
    pub state: AccountState,
    pub last_event_seq: Option<i64>,
}

#[derive(Default)]
pub struct Cache {
    accounts: IdMap<AccountId, Cached>,
    data_version: Option<i64>,
}

impl Cache {
    /// Forgets everything if another connection committed since last time.
    pub fn validate(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            if self.data_version.is_some() && !self.accounts.is_empty() {
                tracing::info!("another process wrote the database; dropping the writer's cache");
            }
            self.accounts.clear();
            self.data_version = Some(data_version);
        }
    }

    /// Drops everything, e.g. after a failed batch.
    pub fn clear(&mut self) {
        self.accounts.clear();
        self.data_version = None;
    }

    /// Takes an account out for the batch; [`Cache::put`] returns it.
    pub fn take(&mut self, id: &AccountId) -> Option<Cached> {
        self.accounts.remove(id)
    }

    /// Keeps committed state. Resolved holds are dropped: the state only
    /// needs open ones, and a command that targets a resolved hold loads it.
    pub fn put(&mut self, mut state: AccountState, last_event_seq: Option<i64>) {
        state.holds.retain(|h| h.status == HoldStatus::Held);
        if self.accounts.len() >= CACHE_ACCOUNTS_MAX {
            let keep = CACHE_ACCOUNTS_MAX * 3 / 4;
            let mut n = 0;
            self.accounts.retain(|_, _| {
                n += 1;
                n <= keep
            });
        }
        self.accounts.insert(
            state.account.id.clone(),
            Cached {
                state,
                last_event_seq,
            },
        );
    }
}
