//! Expected refusals, as values with stable codes. A rejected command
//! changes nothing.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    AccountNotFound,
    AccountExists,
    AccountExpired,
    AccountSuspended,
    /// Zero where a positive amount is required.
    InvalidAmount,
    InsufficientBalance,
    /// A total would pass the amount maximum.
    AmountOverflow,
    TooManyGrants,
    TooManyHolds,
    HoldNotFound,
    HoldAlreadySettled,
    HoldAlreadyReleased,
    HoldExpired,
    ExceedsHold,
    /// The expiry given is not after `now`.
    ExpiryInPast,
    /// A hold TTL of zero or above `HOLD_TTL_SECS_MAX`.
    InvalidTtl,
}

impl Rejection {
    /// The stable code clients match on.
    pub fn code(self) -> &'static str {
        match self {
            Rejection::AccountNotFound => "account_not_found",
            Rejection::AccountExists => "account_exists",
            Rejection::AccountExpired => "account_expired",
            Rejection::AccountSuspended => "account_suspended",
            Rejection::InvalidAmount => "invalid_amount",
            Rejection::InsufficientBalance => "insufficient_balance",
            Rejection::AmountOverflow => "amount_overflow",
            Rejection::TooManyGrants => "too_many_grants",
            Rejection::TooManyHolds => "too_many_holds",
            Rejection::HoldNotFound => "hold_not_found",
            Rejection::HoldAlreadySettled => "hold_already_settled",
            Rejection::HoldAlreadyReleased => "hold_already_released",
            Rejection::HoldExpired => "hold_expired",
            Rejection::ExceedsHold => "exceeds_hold",
            Rejection::ExpiryInPast => "expiry_in_past",
            Rejection::InvalidTtl => "invalid_ttl",
        }
    }

    pub fn parse(code: &str) -> Option<Rejection> {
        Rejection::ALL.iter().copied().find(|r| r.code() == code)
    }

    pub const ALL: [Rejection; 16] = [
        Rejection::AccountNotFound,
        Rejection::AccountExists,
        Rejection::AccountExpired,
        Rejection::AccountSuspended,
        Rejection::InvalidAmount,
        Rejection::InsufficientBalance,
        Rejection::AmountOverflow,
        Rejection::TooManyGrants,
        Rejection::TooManyHolds,
        Rejection::HoldNotFound,
        Rejection::HoldAlreadySettled,
        Rejection::HoldAlreadyReleased,
        Rejection::HoldExpired,
        Rejection::ExceedsHold,
        Rejection::ExpiryInPast,
        Rejection::InvalidTtl,
    ];

    /// A sentence for people; clients should match on [`Rejection::code`].
    pub fn message(self) -> &'static str {
        match self {
            Rejection::AccountNotFound => "no account with this id",
            Rejection::AccountExists => "an account with this id already exists",
            Rejection::AccountExpired => "the account has expired",
            Rejection::AccountSuspended => "the account is suspended",
            Rejection::InvalidAmount => "amount must be greater than zero",
            Rejection::InsufficientBalance => "the available balance does not cover this amount",
            Rejection::AmountOverflow => "the account total would pass the maximum amount",
            Rejection::TooManyGrants => "the account has the maximum number of active grants",
            Rejection::TooManyHolds => "the account has the maximum number of open holds",
            Rejection::HoldNotFound => "no hold with this id",
            Rejection::HoldAlreadySettled => "the hold has already been settled",
            Rejection::HoldAlreadyReleased => "the hold has already been released",
            Rejection::HoldExpired => "the hold has expired",
            Rejection::ExceedsHold => "the amount exceeds the held amount",
            Rejection::ExpiryInPast => "the expiry must be in the future",
            Rejection::InvalidTtl => "the hold TTL must be between 1 second and the maximum",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
