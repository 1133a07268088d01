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
//! Two tiers: decoded states, ready for the core ([`DECODED_ACCOUNTS_MAX`]),
//! and behind them compact copies of the states that did not fit there, as
//! many as fit (`compact.rs`), decoded again on a miss in the first. A miss
//! in both costs two indexed reads (the account's row, then its open holds).
//! Once the decoded tier is full, states go to the compact one instead of
//! evicting others, except states with open holds, which the compact tier
//! does not keep (see [`Cache::put`]).
//!
//! Each entry also keeps the heads of the account's chains ([`ChainHeads`]):
//! its newest event and its newest hold, which the next batch's first event
//! and first hold point back to. Writes on the writer's connection that bypass the
//! cache (credential changes append events) must [`Cache::clear`] it.

use super::compact::Compact;
use crate::executor::IdMap;
use reckon_core::{AccountId, AccountState, HoldStatus};

/// Decoded accounts kept. About 1.2 KB each with a grant (measured at a
/// million accounts: the entry, the table's slack and each string's own
/// allocation), so ~20 MB when full; the compact tier holds the many.
pub const DECODED_ACCOUNTS_MAX: usize = 16_384;

/// Decoded states moved to the compact tier at once to make room for a
/// state with open holds: few, so no batch stalls encoding them (see
/// [`Cache::put`]), and more than one, so not every such state pays a walk
/// of the table for its victim.
const EVICTED_AT_ONCE: usize = 32;

/// The rowids of an account's newest event (`rows::append_events`) and
/// newest hold (`rows::write_account`): each chain's head, which the
/// account's next event or hold points back to. Kept in the account's row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainHeads {
    pub event: Option<i64>,
    pub hold: Option<i64>,
}

/// A committed account state and the heads of its chains.
pub struct Cached {
    pub state: AccountState,
    pub heads: ChainHeads,
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
    pub fn put(&mut self, mut state: AccountState, heads: ChainHeads) {
        state.holds.retain(|h| h.status == HoldStatus::Held);
        if self.decoded_max == 0 {
            self.compact.put(&state, heads);
            return;
        }
        if self.decoded.len() >= self.decoded_max && !state.holds.is_empty() {
            // The compact tier does not keep states with open holds, and
            // the settle or release that follows a lock should not read the
            // account back from SQLite: make room for it.
            self.evict(EVICTED_AT_ONCE);
        }
        if self.decoded.len() >= self.decoded_max {
            // Full, and the state has no open holds: it goes to the
            // compact tier, and nothing is evicted. `take` removed each
            // decoded account a batch uses, so a batch's first puts take
            // that room back, whichever accounts they are, and the rest
            // land here: the decoded tier turns over at random, as evicting
            // arbitrary entries did. What the compact tier holds for an
            // account that is also decoded may be stale; `take` looks at
            // the decoded tier first.
            //
            // Evicting a quarter of the tier at once instead encoded ~4,000
            // states in one batch: at a million accounts that stalled a
            // batch every fraction of a second (`usage` p99 ~6 ms against
            // ~2.5 now, and 1-17 % less throughput; docs/performance-log.md).
            self.compact.put(&state, heads);
            return;
        }
        self.decoded
            .insert(state.account.id.clone(), Cached { state, heads });
    }

    /// Whether the cache may hold `id` already (see [`Compact::may_hold`]).
    pub fn may_hold(&self, id: &AccountId) -> bool {
        self.decoded.contains_key(id) || self.compact.may_hold(id)
    }

    /// Keeps committed state read ahead of need (`rows::fill`) in the
    /// compact tier (which leaves out states with open holds) while it has
    /// room; `false` once it has none, so filling stops before it would
    /// make the tier start over.
    pub fn fill(&mut self, state: &AccountState, heads: ChainHeads) -> bool {
        if !self.compact.has_room() {
            return false;
        }
        self.compact.put(state, heads);
        true
    }

    /// Moves up to `n` arbitrary decoded states to the compact tier.
    fn evict(&mut self, n: usize) {
        let victims: Vec<AccountId> = self.decoded.keys().take(n).cloned().collect();
        for id in victims {
            if let Some(cached) = self.decoded.remove(&id) {
                self.compact.put(&cached.state, cached.heads);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reckon_core::Timestamp;

    fn state(name: &str, updated_at: i64) -> AccountState {
        let mut s = super::super::compact::tests::state(name, vec![]);
        s.account.updated_at = Timestamp::from_millis(updated_at);
        s
    }

    fn updated_at(cache: &mut Cache, name: &str) -> Option<i64> {
        let id = AccountId::parse(name).unwrap();
        let taken = cache.take(&id)?;
        let at = taken.state.account.updated_at.millis();
        cache.put(taken.state, taken.heads);
        Some(at)
    }

    fn take_and_put(cache: &mut Cache, name: &str, updated: i64) {
        let taken = cache.take(&AccountId::parse(name).unwrap()).unwrap();
        let mut changed = taken.state;
        changed.account.updated_at = Timestamp::from_millis(updated);
        cache.put(changed, taken.heads);
    }

    fn decoded(cache: &Cache, name: &str) -> bool {
        cache.decoded.contains_key(&AccountId::parse(name).unwrap())
    }

    #[test]
    fn a_full_decoded_tier_sends_states_to_the_compact_one_and_evicts_nothing() {
        let mut cache = Cache::new(2, 1 << 20);
        cache.put(state("a", 1), ChainHeads::default());
        cache.put(state("b", 1), ChainHeads::default());
        // Full: "c" goes to the compact tier; "a" and "b" stay decoded.
        cache.put(state("c", 1), ChainHeads::default());
        assert!(decoded(&cache, "a") && decoded(&cache, "b") && !decoded(&cache, "c"));
        assert_eq!(updated_at(&mut cache, "c"), Some(1));

        // A decoded account taken and put back gets its room back.
        take_and_put(&mut cache, "a", 2);
        assert!(decoded(&cache, "a"));
        assert_eq!(updated_at(&mut cache, "a"), Some(2));

        // "c" takes the room "b" leaves; its compact copy is now stale.
        let b = cache.take(&AccountId::parse("b").unwrap()).unwrap();
        take_and_put(&mut cache, "c", 2);
        assert!(decoded(&cache, "c"));
        cache.put(b.state, b.heads);
        assert!(!decoded(&cache, "b"));
        assert_eq!(updated_at(&mut cache, "b"), Some(1));

        // "c" taken again, and "d" takes its room first: "c"'s newest state
        // replaces the stale copy in the compact tier.
        let c = cache.take(&AccountId::parse("c").unwrap()).unwrap();
        cache.put(state("d", 1), ChainHeads::default());
        let mut changed = c.state;
        changed.account.updated_at = Timestamp::from_millis(3);
        cache.put(changed, c.heads);
        assert!(!decoded(&cache, "c") && decoded(&cache, "d"));
        assert_eq!(updated_at(&mut cache, "c"), Some(3));
        assert_eq!(cache.decoded.len(), 2);
    }

    #[test]
    fn a_state_with_open_holds_makes_room_in_a_full_decoded_tier() {
        let mut cache = Cache::new(2, 1 << 20);
        cache.put(state("a", 1), ChainHeads::default());
        cache.put(state("b", 1), ChainHeads::default());
        let mut locked = state("c", 1);
        locked.holds.push(reckon_core::Hold {
            id: "h".into(),
            account_id: AccountId::parse("c").unwrap(),
            amount: reckon_core::Amount::ZERO,
            status: HoldStatus::Held,
            expires_at: Timestamp::EPOCH,
            allocations: vec![],
            settled_amount: reckon_core::Amount::ZERO,
            created_at: Timestamp::EPOCH,
            resolved_at: None,
        });
        // The compact tier would forget it: it stays decoded, and the
        // states evicted for it are in the compact tier.
        cache.put(locked, ChainHeads::default());
        assert!(decoded(&cache, "c"));
        assert!(cache.decoded.len() <= 2);
        let c = cache.take(&AccountId::parse("c").unwrap()).unwrap();
        assert_eq!(c.state.holds.len(), 1);
        assert_eq!(updated_at(&mut cache, "a"), Some(1));
        assert_eq!(updated_at(&mut cache, "b"), Some(1));
    }
}
