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
//! Two tiers: decoded states, ready for the core ([`DECODED_ACCOUNTS_MAX`];
//! when full it evicts arbitrary entries, cheap and fair for any access
//! pattern that does not fit anyway), and behind them compact copies of
//! the states it evicted, as many as fit (`compact.rs`), decoded again on a
//! miss in the first. A miss in both costs two indexed reads (the account's
//! row, then its open holds).
//!
//! Each entry also keeps the account's newest event `seq` (the head of its
//! event chain, see `rows::append_events`), which the next batch's first
//! event points back to. Writes on the writer's connection that bypass the
//! cache (credential changes append events) must [`Cache::clear`] it.

use super::compact::Compact;
use crate::executor::IdMap;
use reckon_core::{AccountId, AccountState, HoldStatus};

/// Decoded accounts kept. About 1.2 KB each with a grant (measured at a
/// million accounts: the entry, the table's slack and each string's own
/// allocation), so ~20 MB when full; the compact tier holds the many.
pub const DECODED_ACCOUNTS_MAX: usize = 16_384;

/// A committed account state and the `seq` of its newest event, if any.
pub struct Cached {
    pub state: AccountState,
    pub last_event_seq: Option<i64>,
}

pub struct Cache {
    decoded: IdMap<AccountId, Cached>,
    decoded_max: usize,
    compact: Compact,
    data_version: Option<i64>,
}

impl Cache {
    /// A cache of at most `decoded_max` decoded states and `compact_bytes`
    /// of compact ones.
    pub fn new(decoded_max: usize, compact_bytes: usize) -> Cache {
        Cache {
            decoded: IdMap::default(),
            decoded_max,
            compact: Compact::new(compact_bytes),
            data_version: None,
        }
    }

    /// Forgets everything if another connection committed since last time.
    pub fn validate(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            if self.data_version.is_some() {
                tracing::info!("another process wrote the database; dropping the writer's cache");
            }
            self.decoded.clear();
            self.compact.clear();
            self.data_version = Some(data_version);
        }
    }

    /// Drops everything, e.g. after a failed batch.
    pub fn clear(&mut self) {
        self.decoded.clear();
        self.compact.clear();
        self.data_version = None;
    }

    /// Takes an account out for the batch; [`Cache::put`] returns it.
    pub fn take(&mut self, id: &AccountId) -> Option<Cached> {
        self.decoded.remove(id).or_else(|| self.compact.get(id))
    }

    /// Keeps committed state. Resolved holds are dropped: the state only
    /// needs open ones, and a command that targets a resolved hold loads it.
    pub fn put(&mut self, mut state: AccountState, last_event_seq: Option<i64>) {
        state.holds.retain(|h| h.status == HoldStatus::Held);
        if self.decoded_max == 0 {
            self.compact.put(&state, last_event_seq);
            return;
        }
        if self.decoded.len() >= self.decoded_max {
            // Evicted states go to the compact tier. Only here: the decoded
            // tier is looked at first, so what the compact one holds for an
            // account also decoded may be stale until it is evicted, and
            // accounts that stay decoded (a few busy ones) are never encoded.
            let keep = self.decoded_max * 3 / 4;
            let mut n = 0;
            let compact = &mut self.compact;
            self.decoded.retain(|_, cached| {
                n += 1;
                if n > keep {
                    compact.put(&cached.state, cached.last_event_seq);
                }
                n <= keep
            });
        }
        self.decoded.insert(
            state.account.id.clone(),
            Cached {
                state,
                last_event_seq,
            },
        );
    }
}
