//! # reckon-core: the pure ledger
//!
//! Everything Reckon knows about money lives here, and nothing else does:
//! no async, no database, no clock, no randomness. The one entry point is
//! [`ledger::apply`]: given an account's state, a [`Command`] and `now`, it
//! returns the new state, the [`Event`]s and an [`Outcome`], or a
//! [`Rejection`] with a stable code, in which case nothing changed.
//!
//! Layout:
//! - [`amount`]: fixed-point [`Amount`] (micro-units, 6 decimals) and exact parsing.
//! - [`time`]: [`Timestamp`], always handed in.
//! - [`account`]: accounts, grants, holds, the [`Balance`] view, limits.
//! - [`command`]: the commands every surface translates into.
//! - [`event`]: the audit trail's entries.
//! - [`rejection`]: expected refusals and their codes.
//! - [`ledger`]: `apply`, `check` and the lazy expiry rule (`advance`).

pub mod account;
pub mod amount;
pub mod command;
pub mod event;
pub mod ledger;
pub mod rejection;
pub mod time;

pub use account::{
    Account, AccountId, AccountState, AccountStatus, Allocation, Balance, Grant, Hold, HoldStatus,
    IdError, OveragePolicy, Totals, Unit, HOLD_TTL_SECS_MAX,
};
pub use amount::{Amount, AmountError, DecimalText, Rounding};
pub use command::{
    Command, CreateAccount, GrantCmd, GrantExpiry, LockCmd, ReleaseCmd, SettleCmd, SettleOverage,
    UpdateAccount, UsageCmd,
};
pub use event::{Event, EventKind};
pub use ledger::{apply, check, Applied, Check, Outcome};
pub use rejection::Rejection;
pub use time::Timestamp;
