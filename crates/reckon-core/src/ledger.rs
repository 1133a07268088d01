//! The state machine: `apply(state, command, now) -> new state + events | rejection`.
//!
//! Two rules shape everything here:
//! - **Time is lazy.** Before any command, [`advance`] materialises every
//!   expiry due at `now` (holds return what they reserved, grants stop
//!   counting), in the order they happened. So a balance is right at every
//!   instant whether or not a background sweep ran.
//! - **Rejections change nothing.** `apply` works on a copy and hands it back
//!   only on success, so no early return can leave half a change behind.

use crate::account::{
    sum, AccountState, Allocation, Balance, Grant, Hold, HoldStatus, OveragePolicy,
    GRANTS_PER_ACCOUNT_MAX, HOLDS_PER_ACCOUNT_MAX, HOLD_TTL_SECS_MAX,
};
use crate::account::{Account, AccountStatus};
use crate::amount::Amount;
use crate::command::{
    Command, CreateAccount, GrantCmd, LockCmd, ReleaseCmd, SettleCmd, UpdateAccount, UsageCmd,
};
use crate::event::{Event, EventKind};
use crate::rejection::Rejection;
use crate::time::Timestamp;
use std::sync::Arc;

/// What a successful command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub state: AccountState,
    pub events: Vec<Event>,
    pub outcome: Outcome,
}

/// The answer to a successful command, kept for idempotent replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub account: Account,
    pub balance: Balance,
    /// The grant a `Grant` command created.
    pub grant: Option<Grant>,
    /// The hold a `Lock`, `Settle` or `Release` command made or resolved.
    pub hold: Option<Hold>,
    /// The answer to a `Check` command.
    pub check: Option<Check>,
}

/// Applies `command` to `state` (`None` when the account does not exist yet).
pub fn apply(
    state: Option<&AccountState>,
    command: &Command,
    now: Timestamp,
) -> Result<Applied, Rejection> {
    let (mut next, mut events) = match (state, command) {
        (Some(_), Command::CreateAccount(_)) => return Err(Rejection::AccountExists),
        (None, Command::CreateAccount(c)) => (create_account(c, now), Vec::new()),
        (None, _) => return Err(Rejection::AccountNotFound),
        (Some(state), _) => {
            let mut next = state.clone();
            let events = advance(&mut next, now);
            (next, events)
        }
    };
    let mut answer = None;
    let (grant, hold) = match command {
        Command::CreateAccount(_) => {
            events.push(event(&next, EventKind::AccountCreated, Amount::ZERO, now));
            (None, None)
        }
        Command::UpdateAccount(c) => {
            update_account(&mut next, c, now);
            events.push(event(&next, EventKind::AccountUpdated, Amount::ZERO, now));
            (None, None)
        }
        Command::Grant(c) => (Some(grant(&mut next, c, now, &mut events)?), None),
        Command::Usage(c) => {
            usage(&mut next, c, now, &mut events)?;
            (None, None)
        }
        Command::Lock(c) => (None, Some(lock(&mut next, c, now, &mut events)?)),
        Command::Settle(c) => (None, Some(settle(&mut next, c, now, &mut events)?)),
        Command::Release(c) => (None, Some(release(&mut next, c, now, &mut events)?)),
        Command::Sweep { .. } => (None, None),
        Command::Check { amount, .. } => {
            answer = Some(check_materialised(&next, *amount, now));
            (None, None)
        }
    };
    prune(&mut next);
    debug_assert_eq!(
        next.check_invariants(),
        Ok(()),
        "command {command:?} broke the ledger equation"
    );
    let outcome = Outcome {
        account: next.account.clone(),
        balance: next.balance_materialised(),
        grant,
        hold,
        check: answer,
    };
    Ok(Applied {
        state: next,
        events,
        outcome,
    })
}

/// The read-only question "may this account spend `amount` now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    pub allowed: bool,
    pub available: Amount,
    /// Why not, when not allowed.
    pub reason: Option<Rejection>,
}

pub fn check(state: &AccountState, amount: Amount, now: Timestamp) -> Check {
    let mut view = state.clone();
    advance(&mut view, now);
    check_materialised(&view, amount, now)
}

fn check_materialised(state: &AccountState, amount: Amount, now: Timestamp) -> Check {
    let available = state.balance_materialised().available;
    let reason = spend_refusal(state, amount, available, now).err();
    Check {
        allowed: reason.is_none(),
        available,
        reason,
    }
}

/// Materialises every expiry due at `now`, oldest first, and returns the
/// events. Each event carries the instant the expiry happened, not `now`.
pub fn advance(state: &mut AccountState, now: Timestamp) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        // The earliest due item; on a tie the hold goes first so what it
        // returns expires with its grant in the same instant.
        let hold = state
            .holds
            .iter()
            .enumerate()
            .filter(|(_, h)| h.status == HoldStatus::Held && h.expires_at <= now)
            .min_by_key(|(_, h)| h.expires_at)
            .map(|(i, h)| (h.expires_at, i));
        let grant = state
            .grants
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.expires_at.filter(|at| *at <= now).map(|at| (at, i)))
            .min();
        match (hold, grant) {
            (Some((hold_at, i)), grant)
                if grant.is_none_or(|(grant_at, _)| hold_at <= grant_at) =>
            {
                let hold = &mut state.holds[i];
                hold.status = HoldStatus::Expired;
                hold.resolved_at = Some(hold_at);
                let (amount, hold_id, allocations) = (
                    hold.amount,
                    hold.id.clone(),
                    std::mem::take(&mut hold.allocations),
                );
                return_allocations(state, allocations);
                let mut e = event(state, EventKind::HoldExpired, amount, hold_at);
                e.hold_id = Some(hold_id);
                events.push(e);
            }
            (_, Some((grant_at, i))) => {
                let expired = state.grants.remove(i);
                state.totals.expired = add(state.totals.expired, expired.remaining);
                if !expired.remaining.is_zero() {
                    let mut e = event(state, EventKind::GrantExpired, expired.remaining, grant_at);
                    e.grant_id = Some(expired.id.to_string());
                    events.push(e);
                }
            }
            (_, None) => break,
        }
    }
    events
}

fn create_account(c: &CreateAccount, now: Timestamp) -> AccountState {
    AccountState::new(Account {
        id: c.id.clone(),
        unit: c.unit.clone(),
        status: AccountStatus::Active,
        expires_at: c.expires_at,
        timezone: c.timezone.as_deref().map(Arc::from),
        metadata: Arc::from(c.metadata.as_str()),
        overage: c.overage,
        created_at: now,
        updated_at: now,
    })
}

fn update_account(state: &mut AccountState, c: &UpdateAccount, now: Timestamp) {
    let account = &mut state.account;
    if let Some(expires_at) = c.expires_at {
        account.expires_at = expires_at;
    }
    if let Some(status) = c.status {
        account.status = status;
    }
    if let Some(metadata) = &c.metadata {
        account.metadata = Arc::from(metadata.as_str());
    }
    if let Some(overage) = c.overage {
        account.overage = overage;
    }
    account.updated_at = now;
}

fn grant(
    state: &mut AccountState,
    c: &GrantCmd,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<Grant, Rejection> {
    if c.amount.is_zero() {
        return Err(Rejection::InvalidAmount);
    }
    let expires_at = c.expiry.resolve(now);
    if expires_at.is_some_and(|at| at <= now) {
        return Err(Rejection::ExpiryInPast);
    }
    if state.grants.len() >= GRANTS_PER_ACCOUNT_MAX {
        return Err(Rejection::TooManyGrants);
    }
    state.totals.granted = state
        .totals
        .granted
        .checked_add(c.amount)
        .ok_or(Rejection::AmountOverflow)?;
    let grant = Grant {
        id: Arc::from(c.grant_id.as_str()),
        seq: state.next_grant_seq,
        amount: c.amount,
        remaining: c.amount,
        expires_at,
        source: Arc::from(c.source.as_str()),
        created_at: now,
    };
    state.next_grant_seq += 1;
    // Keep `grants` in draw order so every draw is one forward pass.
    let at = state
        .grants
        .partition_point(|g| g.draw_key() <= grant.draw_key());
    state.grants.insert(at, grant.clone());
    let mut e = event(state, EventKind::Granted, c.amount, now);
    e.grant_id = Some(grant.id.to_string());
    events.push(e);
    Ok(grant)
}

fn usage(
    state: &mut AccountState,
    c: &UsageCmd,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    let available = state.balance_materialised().available;
    spend_refusal(state, c.amount, available, now)?;
    draw(state, c.amount);
    state.totals.used = add(state.totals.used, c.amount);
    events.push(event(state, EventKind::Used, c.amount, now));
    Ok(())
}

fn lock(
    state: &mut AccountState,
    c: &LockCmd,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<Hold, Rejection> {
    let available = state.balance_materialised().available;
    spend_refusal(state, c.amount, available, now)?;
    if c.ttl_secs == 0 || c.ttl_secs > HOLD_TTL_SECS_MAX {
        return Err(Rejection::InvalidTtl);
    }
    let open = state
        .holds
        .iter()
        .filter(|h| h.status == HoldStatus::Held)
        .count();
    if open >= HOLDS_PER_ACCOUNT_MAX {
        return Err(Rejection::TooManyHolds);
    }
    let allocations = draw(state, c.amount);
    let hold = Hold {
        id: c.hold_id.clone(),
        account_id: state.account.id.clone(),
        amount: c.amount,
        status: HoldStatus::Held,
        expires_at: now.plus_secs(c.ttl_secs),
        allocations,
        settled_amount: Amount::ZERO,
        created_at: now,
        resolved_at: None,
    };
    state.holds.push(hold.clone());
    let mut e = event(state, EventKind::Locked, c.amount, now);
    e.hold_id = Some(hold.id.clone());
    events.push(e);
    Ok(hold)
}

fn settle(
    state: &mut AccountState,
    c: &SettleCmd,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<Hold, Rejection> {
    let i = open_hold(state, &c.hold_id)?;
    let held = state.holds[i].amount;
    let charge = if c.amount <= held {
        c.amount
    } else {
        match c.overage.resolve(state.account.overage) {
            OveragePolicy::Reject => return Err(Rejection::ExceedsHold),
            OveragePolicy::Cap => held,
            OveragePolicy::Allow => {
                let excess = c.amount.saturating_sub(held);
                if state.balance_materialised().available >= excess {
                    draw(state, excess);
                    c.amount
                } else {
                    held
                }
            }
        }
    };
    // The hold pays up to its own amount; anything above was drawn just now.
    let mut from_hold = charge.min(held);
    let allocations = std::mem::take(&mut state.holds[i].allocations);
    let mut returned = Vec::new();
    for mut a in allocations {
        let take = a.amount.min(from_hold);
        from_hold = from_hold.saturating_sub(take);
        a.amount = a.amount.saturating_sub(take);
        if !a.amount.is_zero() {
            returned.push(a);
        }
    }
    return_allocations(state, returned);
    state.totals.used = add(state.totals.used, charge);
    let hold = &mut state.holds[i];
    hold.status = HoldStatus::Settled;
    hold.settled_amount = charge;
    hold.resolved_at = Some(now);
    let hold = hold.clone();
    let mut e = event(state, EventKind::Settled, charge, now);
    e.hold_id = Some(hold.id.clone());
    events.push(e);
    Ok(hold)
}

fn release(
    state: &mut AccountState,
    c: &ReleaseCmd,
    now: Timestamp,
    events: &mut Vec<Event>,
) -> Result<Hold, Rejection> {
    let i = open_hold(state, &c.hold_id)?;
    let allocations = std::mem::take(&mut state.holds[i].allocations);
    return_allocations(state, allocations);
    let hold = &mut state.holds[i];
    hold.status = HoldStatus::Released;
    hold.resolved_at = Some(now);
    let hold = hold.clone();
    let mut e = event(state, EventKind::Released, hold.amount, now);
    e.hold_id = Some(hold.id.clone());
    events.push(e);
    Ok(hold)
}

/// The hold's index if it can still be resolved. Runs after [`advance`], so a
/// hold past its expiry already reads `Expired`.
fn open_hold(state: &AccountState, hold_id: &str) -> Result<usize, Rejection> {
    let i = state
        .holds
        .iter()
        .position(|h| h.id == hold_id)
        .ok_or(Rejection::HoldNotFound)?;
    match state.holds[i].status {
        HoldStatus::Held => Ok(i),
        HoldStatus::Settled => Err(Rejection::HoldAlreadySettled),
        HoldStatus::Released => Err(Rejection::HoldAlreadyReleased),
        HoldStatus::Expired => Err(Rejection::HoldExpired),
    }
}

/// Why the account may not spend `amount` now, in a fixed order.
fn spend_refusal(
    state: &AccountState,
    amount: Amount,
    available: Amount,
    now: Timestamp,
) -> Result<(), Rejection> {
    if amount.is_zero() {
        return Err(Rejection::InvalidAmount);
    }
    if state.account.status == AccountStatus::Suspended {
        return Err(Rejection::AccountSuspended);
    }
    if state.account.expires_at.is_some_and(|at| at <= now) {
        return Err(Rejection::AccountExpired);
    }
    if available < amount {
        return Err(Rejection::InsufficientBalance);
    }
    Ok(())
}

/// Takes `amount` out of grants in draw order. The caller has checked that
/// the live grants cover it; `grants` holds no expired grant after `advance`.
fn draw(state: &mut AccountState, amount: Amount) -> Vec<Allocation> {
    let mut left = amount;
    let mut taken = Vec::new();
    for g in state.grants.iter_mut() {
        if left.is_zero() {
            break;
        }
        let take = g.remaining.min(left);
        if take.is_zero() {
            continue;
        }
        g.remaining = g.remaining.saturating_sub(take);
        left = left.saturating_sub(take);
        taken.push(Allocation {
            grant_id: g.id.clone(),
            amount: take,
        });
    }
    assert!(
        left.is_zero(),
        "draw of {amount} ran out of grants: callers check the available balance first"
    );
    taken
}

/// Gives reserved value back to the grants it came from; a grant that is gone
/// has expired (exhausted grants backing a hold are never pruned), so its
/// share counts as expired.
fn return_allocations(state: &mut AccountState, allocations: Vec<Allocation>) {
    for a in allocations {
        match state.grants.iter_mut().find(|g| g.id == a.grant_id) {
            Some(g) => g.remaining = add(g.remaining, a.amount),
            None => state.totals.expired = add(state.totals.expired, a.amount),
        }
    }
}

/// Drops grants that are used up and back no open hold. Resolved holds stay
/// in the returned state so the store can write their final status; the
/// store loads only open ones next time.
fn prune(state: &mut AccountState) {
    let holds = &state.holds;
    state.grants.retain(|g| {
        !g.remaining.is_zero()
            || holds.iter().any(|h| {
                h.status == HoldStatus::Held && h.allocations.iter().any(|a| a.grant_id == g.id)
            })
    });
}

fn event(state: &AccountState, kind: EventKind, amount: Amount, at: Timestamp) -> Event {
    Event {
        kind,
        amount,
        available_after: sum(state.grants.iter().map(|g| g.remaining)),
        at,
        grant_id: None,
        hold_id: None,
    }
}

/// Addition of two parts of one account's ledger equation: both are bounded
/// by the account's granted total, which is itself at most `Amount::MAX`.
fn add(a: Amount, b: Amount) -> Amount {
    a.checked_add(b)
        .expect("parts of the ledger equation never exceed the granted total")
}
