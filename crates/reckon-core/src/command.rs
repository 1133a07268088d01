//! Commands: the only way state changes. Every surface (native API, seed
//! adapters, scheduler, CLI) builds one of these; the core applies it.

use crate::account::{AccountId, AccountStatus, OveragePolicy, Unit};
use crate::amount::Amount;
use crate::time::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    CreateAccount(CreateAccount),
    UpdateAccount(UpdateAccount),
    Grant(GrantCmd),
    Usage(UsageCmd),
    Lock(LockCmd),
    Settle(SettleCmd),
    Release(ReleaseCmd),
    /// Materialises every expiry due at `now` (grants, holds). Sent by the
    /// scheduler; a no-op when nothing is due.
    Sweep {
        account: AccountId,
    },
    /// "May the account spend `amount` now?" Changes nothing; it is a command
    /// so that inside a batch it sees the operations before it.
    Check {
        account: AccountId,
        amount: Amount,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateAccount {
    pub id: AccountId,
    pub unit: Unit,
    pub expires_at: Option<Timestamp>,
    pub timezone: Option<String>,
    pub metadata: String,
    pub overage: OveragePolicy,
}

/// Each `Some` field replaces the stored value; `expires_at: Some(None)` clears it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateAccount {
    pub id: AccountId,
    pub expires_at: Option<Option<Timestamp>>,
    pub status: Option<AccountStatus>,
    pub metadata: Option<String>,
    pub overage: Option<OveragePolicy>,
}

/// When a grant stops counting. A relative validity is resolved against the
/// `now` the command is applied at, not the time a client sent it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantExpiry {
    Never,
    At(Timestamp),
    AfterSecs(u64),
}

impl GrantExpiry {
    pub fn resolve(self, now: Timestamp) -> Option<Timestamp> {
        match self {
            GrantExpiry::Never => None,
            GrantExpiry::At(at) => Some(at),
            GrantExpiry::AfterSecs(secs) => Some(now.plus_secs(secs)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantCmd {
    pub account: AccountId,
    /// Chosen by the caller (a fresh UUID) so the core stays deterministic.
    pub grant_id: String,
    pub amount: Amount,
    pub expiry: GrantExpiry,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageCmd {
    pub account: AccountId,
    pub amount: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockCmd {
    pub account: AccountId,
    /// Chosen by the caller (a fresh UUID).
    pub hold_id: String,
    pub amount: Amount,
    /// The hold expires this long after the instant it is applied at.
    pub ttl_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleCmd {
    pub account: AccountId,
    pub hold_id: String,
    pub amount: Amount,
    /// What a cost above the hold does.
    pub overage: SettleOverage,
}

/// The overage rule of one settle: decided where the account's state is,
/// so an adapter never reads the account to choose it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SettleOverage {
    /// The account's policy.
    #[default]
    Account,
    /// This policy, whatever the account's.
    Override(OveragePolicy),
    /// The account's policy, but `cap` where it says `reject`: for a
    /// protocol whose clients settle after the work is done and have no
    /// error to act on (nilauth-credit's unlock).
    AccountOrCap,
}

/// A policy named by the caller overrides the account's; none leaves it.
impl From<Option<OveragePolicy>> for SettleOverage {
    fn from(named: Option<OveragePolicy>) -> SettleOverage {
        named.map_or(SettleOverage::Account, SettleOverage::Override)
    }
}

impl SettleOverage {
    /// The policy that applies to an account whose own is `account`.
    pub fn resolve(self, account: OveragePolicy) -> OveragePolicy {
        match (self, account) {
            (SettleOverage::Account, p) => p,
            (SettleOverage::Override(p), _) => p,
            (SettleOverage::AccountOrCap, OveragePolicy::Reject) => OveragePolicy::Cap,
            (SettleOverage::AccountOrCap, p) => p,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SettleOverage::Account => "-",
            SettleOverage::Override(p) => p.as_str(),
            SettleOverage::AccountOrCap => "account-or-cap",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseCmd {
    pub account: AccountId,
    pub hold_id: String,
}

impl Command {
    /// The one account a command touches.
    pub fn account_id(&self) -> &AccountId {
        match self {
            Command::CreateAccount(c) => &c.id,
            Command::UpdateAccount(c) => &c.id,
            Command::Grant(c) => &c.account,
            Command::Usage(c) => &c.account,
            Command::Lock(c) => &c.account,
            Command::Settle(c) => &c.account,
            Command::Release(c) => &c.account,
            Command::Sweep { account } => account,
            Command::Check { account, .. } => account,
        }
    }

    /// The hold a command resolves, if any: the store loads it even when it is
    /// no longer open, so the core can say why it cannot be resolved again.
    pub fn target_hold(&self) -> Option<&str> {
        match self {
            Command::Settle(c) => Some(&c.hold_id),
            Command::Release(c) => Some(&c.hold_id),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateAccount(_) => "create_account",
            Command::UpdateAccount(_) => "update_account",
            Command::Grant(_) => "grant",
            Command::Usage(_) => "usage",
            Command::Lock(_) => "lock",
            Command::Settle(_) => "settle",
            Command::Release(_) => "release",
            Command::Sweep { .. } => "sweep",
            Command::Check { .. } => "check",
        }
    }

    /// A canonical text of what the caller asked for, for idempotency
    /// fingerprints. Ids the server generated (grant and hold ids) are left
    /// out: a retry gets fresh ones and must still match the first request.
    pub fn canonical(&self) -> String {
        fn ts(t: Option<Timestamp>) -> String {
            t.map_or_else(|| "-".to_owned(), |t| t.millis().to_string())
        }
        match self {
            Command::CreateAccount(c) => format!(
                "create_account|{}|{}|{}|{}|{}|{}",
                c.id,
                c.unit.as_str(),
                ts(c.expires_at),
                c.timezone.as_deref().unwrap_or("-"),
                c.metadata,
                c.overage.as_str()
            ),
            Command::UpdateAccount(c) => format!(
                "update_account|{}|{}|{}|{}|{}",
                c.id,
                c.expires_at.map_or_else(|| "keep".to_owned(), ts),
                c.status.map_or("keep", AccountStatus::as_str),
                c.metadata.as_deref().unwrap_or("keep"),
                c.overage.map_or("keep", OveragePolicy::as_str)
            ),
            Command::Grant(c) => {
                let expiry = match c.expiry {
                    GrantExpiry::Never => "-".to_owned(),
                    GrantExpiry::At(at) => at.millis().to_string(),
                    GrantExpiry::AfterSecs(secs) => format!("+{secs}s"),
                };
                format!(
                    "grant|{}|{}|{}|{}",
                    c.account,
                    c.amount.micros(),
                    expiry,
                    c.source
                )
            }
            Command::Usage(c) => format!("usage|{}|{}", c.account, c.amount.micros()),
            Command::Lock(c) => format!("lock|{}|{}|{}", c.account, c.amount.micros(), c.ttl_secs),
            Command::Settle(c) => format!(
                "settle|{}|{}|{}|{}",
                c.account,
                c.hold_id,
                c.amount.micros(),
                c.overage.as_str()
            ),
            Command::Release(c) => format!("release|{}|{}", c.account, c.hold_id),
            Command::Sweep { account } => format!("sweep|{account}"),
            Command::Check { account, amount } => format!("check|{account}|{}", amount.micros()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> AccountId {
        AccountId::parse(text).unwrap()
    }

    fn amount(micros: i64) -> Amount {
        Amount::from_micros(micros).unwrap()
    }

    /// Each command's canonical text is hashed into the fingerprint stored
    /// with its idempotency record (`Request::fingerprint`). If a new build
    /// wrote any of these differently, a client retrying a request it sent
    /// before the upgrade would get 409 `idempotency_conflict` instead of
    /// its first answer (for nilauth-credit's unlock, a 400). So these
    /// texts are a stored format: change one only with a way to match the
    /// old form.
    #[test]
    fn canonical_texts_are_a_stored_format() {
        let at = Some(Timestamp::from_millis(1_700_000_000_000));
        let cases = [
            (
                Command::CreateAccount(CreateAccount {
                    id: id("acct-1"),
                    unit: Unit::parse("USD").unwrap(),
                    expires_at: at,
                    timezone: Some("Europe/Paris".into()),
                    metadata: r#"{"plan":"pro"}"#.into(),
                    overage: OveragePolicy::Cap,
                }),
                r#"create_account|acct-1|USD|1700000000000|Europe/Paris|{"plan":"pro"}|cap"#,
            ),
            (
                Command::CreateAccount(CreateAccount {
                    id: id("acct-1"),
                    unit: Unit::parse("USD").unwrap(),
                    expires_at: None,
                    timezone: None,
                    metadata: "{}".into(),
                    overage: OveragePolicy::Reject,
                }),
                "create_account|acct-1|USD|-|-|{}|reject",
            ),
            (
                Command::UpdateAccount(UpdateAccount {
                    id: id("acct-1"),
                    expires_at: None,
                    status: None,
                    metadata: None,
                    overage: None,
                }),
                "update_account|acct-1|keep|keep|keep|keep",
            ),
            (
                Command::UpdateAccount(UpdateAccount {
                    id: id("acct-1"),
                    expires_at: Some(None),
                    status: Some(AccountStatus::Suspended),
                    metadata: Some("{}".into()),
                    overage: Some(OveragePolicy::Allow),
                }),
                "update_account|acct-1|-|suspended|{}|allow",
            ),
            (
                Command::UpdateAccount(UpdateAccount {
                    id: id("acct-1"),
                    expires_at: Some(at),
                    status: Some(AccountStatus::Active),
                    metadata: None,
                    overage: None,
                }),
                "update_account|acct-1|1700000000000|active|keep|keep",
            ),
            (
                Command::Grant(GrantCmd {
                    account: id("acct-1"),
                    grant_id: "generated, so left out".into(),
                    amount: amount(50_000_000),
                    expiry: GrantExpiry::AfterSecs(2_592_000),
                    source: "monthly".into(),
                }),
                "grant|acct-1|50000000|+2592000s|monthly",
            ),
            (
                Command::Grant(GrantCmd {
                    account: id("acct-1"),
                    grant_id: "g".into(),
                    amount: amount(1),
                    expiry: GrantExpiry::At(Timestamp::from_millis(5)),
                    source: String::new(),
                }),
                "grant|acct-1|1|5|",
            ),
            (
                Command::Grant(GrantCmd {
                    account: id("acct-1"),
                    grant_id: "g".into(),
                    amount: amount(1),
                    expiry: GrantExpiry::Never,
                    source: "s".into(),
                }),
                "grant|acct-1|1|-|s",
            ),
            (
                Command::Usage(UsageCmd {
                    account: id("acct-1"),
                    amount: amount(12_340_000),
                }),
                "usage|acct-1|12340000",
            ),
            (
                Command::Lock(LockCmd {
                    account: id("acct-1"),
                    hold_id: "generated, so left out".into(),
                    amount: amount(2),
                    ttl_secs: 300,
                }),
                "lock|acct-1|2|300",
            ),
            (
                Command::Settle(SettleCmd {
                    account: id("acct-1"),
                    hold_id: "h-1".into(),
                    amount: amount(1),
                    overage: SettleOverage::Account,
                }),
                "settle|acct-1|h-1|1|-",
            ),
            (
                Command::Settle(SettleCmd {
                    account: id("acct-1"),
                    hold_id: "h-1".into(),
                    amount: amount(1),
                    overage: SettleOverage::Override(OveragePolicy::Allow),
                }),
                "settle|acct-1|h-1|1|allow",
            ),
            (
                Command::Settle(SettleCmd {
                    account: id("acct-1"),
                    hold_id: "h-1".into(),
                    amount: amount(0),
                    overage: SettleOverage::AccountOrCap,
                }),
                "settle|acct-1|h-1|0|account-or-cap",
            ),
            (
                Command::Release(ReleaseCmd {
                    account: id("acct-1"),
                    hold_id: "h-1".into(),
                }),
                "release|acct-1|h-1",
            ),
            (
                Command::Sweep {
                    account: id("acct-1"),
                },
                "sweep|acct-1",
            ),
            (
                Command::Check {
                    account: id("acct-1"),
                    amount: amount(50_000),
                },
                "check|acct-1|50000",
            ),
        ];
        for (command, text) in cases {
            assert_eq!(command.canonical(), text, "{}", command.name());
        }
    }
}
