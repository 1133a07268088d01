//! Accounts and what they hold: grants (value in) and holds (value reserved).

use crate::amount::Amount;
use crate::time::Timestamp;
use std::fmt;
use std::sync::Arc;

/// Longest account id, grant id or hold id, in bytes.
pub const ID_BYTES_MAX: usize = 128;
/// Longest unit name ("MB", "USD", "credits", "calls").
pub const UNIT_BYTES_MAX: usize = 32;
/// Active grants one account may carry at once. Every write loads them all,
/// so the bound keeps a write's cost bounded too.
pub const GRANTS_PER_ACCOUNT_MAX: usize = 1_000;
/// Open holds one account may carry at once, for the same reason.
pub const HOLDS_PER_ACCOUNT_MAX: usize = 1_000;
/// Longest a hold may live: a week. A hold is a reservation for work in
/// flight; anything longer is a grant in disguise, and it keeps value out of
/// reach of every other request until it ends.
pub const HOLD_TTL_SECS_MAX: u64 = 7 * 86_400;

/// Why an identifier was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong,
    BadCharacter,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => f.write_str("must not be empty"),
            IdError::TooLong => write!(f, "must be at most {ID_BYTES_MAX} bytes"),
            IdError::BadCharacter => {
                f.write_str("may only contain letters, digits and . _ - : @ +")
            }
        }
    }
}

impl std::error::Error for IdError {}

/// An account id: 1 to [`ID_BYTES_MAX`] bytes of `[A-Za-z0-9._:@+-]`.
///
/// The character set keeps ids safe in URL paths and logs while admitting
/// what the seed systems use: numeric user ids, e-mail addresses, `user123`.
///
/// Shared, not owned: an id is cloned into every plan, event, answer and
/// map entry a command touches, and with an `Arc` that is a count, not an
/// allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(Arc<str>);

impl AccountId {
    pub fn parse(text: &str) -> Result<AccountId, IdError> {
        validate_id(text)?;
        Ok(AccountId(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn validate_id(text: &str) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty);
    }
    if text.len() > ID_BYTES_MAX {
        return Err(IdError::TooLong);
    }
    let ok =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@' | b'+');
    if !text.bytes().all(ok) {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

/// A unit name: 1 to [`UNIT_BYTES_MAX`] bytes, same characters as ids.
/// Shared for the same reason as [`AccountId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit(Arc<str>);

impl Unit {
    pub fn parse(text: &str) -> Result<Unit, IdError> {
        validate_unit(text)?;
        Ok(Unit(Arc::from(text)))
    }

    /// As [`Unit::parse`], sharing `text` instead of copying it (a store
    /// that keeps units once decodes many accounts without allocating).
    pub fn from_arc(text: Arc<str>) -> Result<Unit, IdError> {
        validate_unit(&text)?;
        Ok(Unit(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

fn validate_unit(text: &str) -> Result<(), IdError> {
    if text.len() > UNIT_BYTES_MAX {
        return Err(IdError::TooLong);
    }
    validate_id(text)
}

impl Default for Unit {
    fn default() -> Unit {
        Unit(Arc::from("credits"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    /// Spending is refused until an operator sets the account active again.
    Suspended,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
        }
    }

    pub fn parse(text: &str) -> Option<AccountStatus> {
        match text {
            "active" => Some(AccountStatus::Active),
            "suspended" => Some(AccountStatus::Suspended),
            _ => None,
        }
    }
}

/// What a settle above the held amount does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OveragePolicy {
    /// Refuse with `exceeds_hold`; nothing changes.
    #[default]
    Reject,
    /// Charge the held amount and no more.
    Cap,
    /// Charge the full amount when the balance covers the excess, else cap.
    Allow,
}

impl OveragePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OveragePolicy::Reject => "reject",
            OveragePolicy::Cap => "cap",
            OveragePolicy::Allow => "allow",
        }
    }

    pub fn parse(text: &str) -> Option<OveragePolicy> {
        match text {
            "reject" => Some(OveragePolicy::Reject),
            "cap" => Some(OveragePolicy::Cap),
            "allow" => Some(OveragePolicy::Allow),
            _ => None,
        }
    }
}

/// The account's own settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub unit: Unit,
    pub status: AccountStatus,
    /// After this instant spending is refused with `account_expired`.
    pub expires_at: Option<Timestamp>,
    /// IANA zone name for calendar resets; stored, not yet interpreted.
    pub timezone: Option<Arc<str>>,
    /// A JSON object, opaque to the core (the edge validated it).
    pub metadata: Arc<str>,
    pub overage: OveragePolicy,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Value put into an account: a budget, a bundle, a top-up.
///
/// Its strings are shared (`Arc<str>`), like the account's: the core works
/// on a copy of the account state for every command, and a shared string
/// makes that copy a count instead of an allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: Arc<str>,
    /// Order of creation within the account; breaks expiry ties ("oldest first").
    pub seq: u64,
    pub amount: Amount,
    /// What is left to spend or reserve; `remaining <= amount`.
    pub remaining: Amount,
    /// The grant stops counting at this instant.
    pub expires_at: Option<Timestamp>,
    /// Free text naming where the grant came from ("manual", "bundle", "renewal").
    pub source: Arc<str>,
    pub created_at: Timestamp,
}

impl Grant {
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The draw order: earliest expiry first (never-expiring last), then oldest.
    pub fn draw_key(&self) -> (i64, u64) {
        (
            self.expires_at.map_or(i64::MAX, Timestamp::millis),
            self.seq,
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldStatus {
    Held,
    Settled,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Settled => "settled",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<HoldStatus> {
        match text {
            "held" => Some(HoldStatus::Held),
            "settled" => Some(HoldStatus::Settled),
            "released" => Some(HoldStatus::Released),
            "expired" => Some(HoldStatus::Expired),
            _ => None,
        }
    }
}

/// Part of a hold taken from one grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub grant_id: Arc<str>,
    pub amount: Amount,
}

/// Value reserved before work starts, resolved exactly once.
///
/// A hold takes its amount out of specific grants when it is made (the same
/// draw order as usage), so a grant that expires while the hold is open cannot
/// leave the hold unbacked: what the hold reserved stays spendable by it until
/// the hold's own expiry. Whatever returns to a grant that has expired in the
/// meantime counts as expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub id: String,
    pub account_id: AccountId,
    pub amount: Amount,
    pub status: HoldStatus,
    pub expires_at: Timestamp,
    pub allocations: Vec<Allocation>,
    /// What the settle charged; zero until settled.
    pub settled_amount: Amount,
    pub created_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
}

impl Hold {
    /// The status a reader should see at `now`: a hold past its expiry is
    /// expired even before any command has written that down.
    pub fn status_at(&self, now: Timestamp) -> HoldStatus {
        if self.status == HoldStatus::Held && self.expires_at <= now {
            HoldStatus::Expired
        } else {
            self.status
        }
    }
}

/// Lifetime totals of an account. With the live grants and holds they satisfy
/// `granted = used + held + available + expired` (checked by [`AccountState::check_invariants`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub granted: Amount,
    pub used: Amount,
    pub expired: Amount,
}

/// Everything the core needs to apply a command to one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    pub account: Account,
    pub totals: Totals,
    /// Live grants (remaining > 0 or backing a hold, and not yet materialised
    /// as expired). Kept in draw order.
    pub grants: Vec<Grant>,
    /// Holds with status `Held`, plus any resolved hold a command targets
    /// (loaded so the core can say "already settled").
    pub holds: Vec<Hold>,
    /// Next grant sequence number.
    pub next_grant_seq: u64,
}

/// An account's balance as seen at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub granted: Amount,
    pub used: Amount,
    pub held: Amount,
    pub available: Amount,
    pub expired: Amount,
}

impl AccountState {
    pub fn new(account: Account) -> AccountState {
        AccountState {
            account,
            totals: Totals::default(),
            grants: Vec::new(),
            holds: Vec::new(),
            next_grant_seq: 1,
        }
    }

    /// The balance at `now`, counting expiries that no command has
    /// materialised yet. Reads use this; it never changes the state.
    pub fn balance_at(&self, now: Timestamp) -> Balance {
        let mut view = self.clone();
        crate::ledger::advance(&mut view, now);
        view.balance_materialised()
    }

    /// The balance of already-advanced state.
    pub(crate) fn balance_materialised(&self) -> Balance {
        let available = sum(self.grants.iter().map(|g| g.remaining));
        let held = sum(self
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Held)
            .map(|h| h.amount));
        Balance {
            granted: self.totals.granted,
            used: self.totals.used,
            held,
            available,
            expired: self.totals.expired,
        }
    }

    /// Grants that still count at `now`, in draw order.
    pub fn live_grants_at(&self, now: Timestamp) -> impl Iterator<Item = &Grant> {
        self.grants
            .iter()
            .filter(move |g| !g.is_expired_at(now) && !g.remaining.is_zero())
    }

    /// Checks the ledger equation. Used by tests and debug assertions.
    pub fn check_invariants(&self) -> Result<(), String> {
        let b = self.balance_materialised();
        let parts = [b.used, b.held, b.available, b.expired];
        let total = parts
            .iter()
            .try_fold(Amount::ZERO, |acc, a| acc.checked_add(*a));
        if total != Some(b.granted) {
            return Err(format!(
                "granted {} != used {} + held {} + available {} + expired {}",
                b.granted, b.used, b.held, b.available, b.expired
            ));
        }
        for g in &self.grants {
            if g.remaining > g.amount {
                return Err(format!(
                    "grant {} has remaining {} above amount {}",
                    g.id, g.remaining, g.amount
                ));
            }
        }
        for h in self.holds.iter().filter(|h| h.status == HoldStatus::Held) {
            if sum(h.allocations.iter().map(|a| a.amount)) != h.amount {
                return Err(format!(
                    "hold {} allocations do not sum to its amount",
                    h.id
                ));
            }
        }
        Ok(())
    }
}

/// Sum of amounts that the ledger equation bounds by an account total, so it
/// cannot pass [`Amount::MAX`]; saturates rather than panics if state is corrupt.
pub(crate) fn sum(amounts: impl Iterator<Item = Amount>) -> Amount {
    amounts.fold(Amount::ZERO, |acc, a| {
        acc.checked_add(a).unwrap_or(Amount::MAX)
    })
}
