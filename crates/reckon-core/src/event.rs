//! Events: the audit trail. Every state change produces at least one, and the
//! store writes them in the same transaction as the change.

use crate::amount::Amount;
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    AccountCreated,
    AccountUpdated,
    Granted,
    Used,
    GrantExpired,
    Locked,
    Settled,
    Released,
    HoldExpired,
    /// Written by the store beside the ledger: credentials are not balance state.
    CredentialAdded,
    CredentialDeactivated,
    CredentialActivated,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AccountCreated => "account_created",
            EventKind::AccountUpdated => "account_updated",
            EventKind::Granted => "granted",
            EventKind::Used => "used",
            EventKind::GrantExpired => "grant_expired",
            EventKind::Locked => "locked",
            EventKind::Settled => "settled",
            EventKind::Released => "released",
            EventKind::HoldExpired => "hold_expired",
            EventKind::CredentialAdded => "credential_added",
            EventKind::CredentialDeactivated => "credential_deactivated",
            EventKind::CredentialActivated => "credential_activated",
        }
    }

    pub fn parse(text: &str) -> Option<EventKind> {
        Some(match text {
            "account_created" => EventKind::AccountCreated,
            "account_updated" => EventKind::AccountUpdated,
            "granted" => EventKind::Granted,
            "used" => EventKind::Used,
            "grant_expired" => EventKind::GrantExpired,
            "locked" => EventKind::Locked,
            "settled" => EventKind::Settled,
            "released" => EventKind::Released,
            "hold_expired" => EventKind::HoldExpired,
            "credential_added" => EventKind::CredentialAdded,
            "credential_deactivated" => EventKind::CredentialDeactivated,
            "credential_activated" => EventKind::CredentialActivated,
            _ => return None,
        })
    }
}

/// One change, as the core saw it. The executor adds the request's
/// idempotency key and attributes when it stores the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// What moved: granted, used, reserved, charged, returned or expired.
    pub amount: Amount,
    /// `available` right after this event.
    pub available_after: Amount,
    /// The instant the change took effect: `now` for commands, the expiry
    /// instant for lazily materialised expiries.
    pub at: Timestamp,
    pub grant_id: Option<String>,
    pub hold_id: Option<String>,
}
