//! Builders shared by the core's tests: terse commands over one account.
#![allow(dead_code)]

use reckon_core::*;

pub const ACCOUNT: &str = "acct";

pub fn id() -> AccountId {
    AccountId::parse(ACCOUNT).unwrap()
}

pub fn units(n: i64) -> Amount {
    Amount::from_units(n).unwrap()
}

pub fn t(secs: i64) -> Timestamp {
    Timestamp::from_millis(secs * 1000)
}

pub fn create() -> Command {
    Command::CreateAccount(CreateAccount {
        id: id(),
        unit: Unit::default(),
        expires_at: None,
        timezone: None,
        metadata: "{}".into(),
        overage: OveragePolicy::Reject,
    })
}

pub fn grant(gid: &str, n: i64, expires: Option<i64>) -> Command {
    Command::Grant(GrantCmd {
        account: id(),
        grant_id: gid.into(),
        amount: units(n),
        expiry: expires.map_or(GrantExpiry::Never, |e| GrantExpiry::At(t(e))),
        source: "test".into(),
    })
}

pub fn usage(n: i64) -> Command {
    Command::Usage(UsageCmd {
        account: id(),
        amount: units(n),
    })
}

/// A lock applied at second `at` that expires at second `expires`.
pub fn lock_until(hid: &str, n: i64, at: i64, expires: i64) -> (i64, Command) {
    let ttl_secs = (expires - at).max(0) as u64;
    (
        at,
        Command::Lock(LockCmd {
            account: id(),
            hold_id: hid.into(),
            amount: units(n),
            ttl_secs,
        }),
    )
}

pub fn settle(hid: &str, n: i64, overage: Option<OveragePolicy>) -> Command {
    settle_by(hid, n, overage.into())
}

pub fn settle_by(hid: &str, n: i64, overage: SettleOverage) -> Command {
    Command::Settle(SettleCmd {
        account: id(),
        hold_id: hid.into(),
        amount: units(n),
        overage,
    })
}

pub fn release(hid: &str) -> Command {
    Command::Release(ReleaseCmd {
        account: id(),
        hold_id: hid.into(),
    })
}

pub fn update(f: impl FnOnce(&mut UpdateAccount)) -> Command {
    let mut u = UpdateAccount {
        id: id(),
        expires_at: None,
        status: None,
        metadata: None,
        overage: None,
    };
    f(&mut u);
    Command::UpdateAccount(u)
}

/// Runs a script of (second, command) and returns the final state, panicking
/// on the first rejection.
pub fn run(script: &[(i64, Command)]) -> AccountState {
    let mut state: Option<AccountState> = None;
    for (at, cmd) in script {
        let applied = apply(state.as_ref(), cmd, t(*at))
            .unwrap_or_else(|r| panic!("{cmd:?} at {at}s rejected: {r}"));
        applied.state.check_invariants().unwrap();
        state = Some(applied.state);
    }
    state.unwrap()
}
