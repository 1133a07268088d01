//! Random command scripts checked against a reference model written
//! separately and plainly: eager expiry instead of lazy, linear scans instead
//! of kept order, integers instead of `Amount`. After every step the core and
//! the model must agree on accept/reject and on every balance figure, and the
//! core's state must satisfy the ledger equation.

mod support;

use proptest::prelude::*;
use reckon_core::*;
use support::*;

#[derive(Clone, Debug)]
enum Op {
    Wait(i64),
    Grant(i64, Option<i64>),
    Usage(i64),
    Lock(i64, i64),
    Settle(usize, i64, u8),
    Release(usize),
    Sweep,
    Suspend(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0i64..40).prop_map(Op::Wait),
        (0i64..20, proptest::option::of(1i64..60)).prop_map(|(a, e)| Op::Grant(a, e)),
        (0i64..15).prop_map(Op::Usage),
        (0i64..15, 1i64..60).prop_map(|(a, ttl)| Op::Lock(a, ttl)),
        (0usize..8, 0i64..20, 0u8..4).prop_map(|(h, a, p)| Op::Settle(h, a, p)),
        (0usize..8).prop_map(Op::Release),
        Just(Op::Sweep),
        any::<bool>().prop_map(Op::Suspend),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum St {
    Held,
    Settled,
    Released,
    Expired,
}

struct MGrant {
    id: String,
    seq: u64,
    remaining: i64,
    expires: Option<i64>,
    gone: bool,
}

struct MHold {
    id: String,
    amount: i64,
    expires: i64,
    st: St,
    allocs: Vec<(String, i64)>,
}

#[derive(Default)]
struct Model {
    grants: Vec<MGrant>,
    holds: Vec<MHold>,
    granted: i64,
    used: i64,
    expired: i64,
    suspended: bool,
}

impl Model {
    fn give_back(&mut self, allocs: Vec<(String, i64)>) {
        for (gid, amt) in allocs {
            let g = self.grants.iter_mut().find(|g| g.id == gid).unwrap();
            if g.gone {
                self.expired += amt;
            } else {
                g.remaining += amt;
            }
        }
    }

    /// Eagerly expire everything due at `now`, one instant at a time.
    fn tick(&mut self, now: i64) {
        loop {
            let h = self
                .holds
                .iter()
                .filter(|h| h.st == St::Held && h.expires <= now)
                .map(|h| h.expires)
                .min();
            let g = self
                .grants
                .iter()
                .filter(|g| !g.gone && g.expires.is_some_and(|e| e <= now))
                .map(|g| g.expires.unwrap())
                .min();
            let instant = match (h, g) {
                (None, None) => return,
                (a, b) => a.into_iter().chain(b).min().unwrap(),
            };
            // Holds at this instant first, then grants.
            let due: Vec<usize> = (0..self.holds.len())
                .filter(|&i| self.holds[i].st == St::Held && self.holds[i].expires == instant)
                .collect();
            for i in due {
                self.holds[i].st = St::Expired;
                let allocs = std::mem::take(&mut self.holds[i].allocs);
                self.give_back(allocs);
            }
            for g in self
                .grants
                .iter_mut()
                .filter(|g| !g.gone && g.expires == Some(instant))
            {
                g.gone = true;
                self.expired += g.remaining;
                g.remaining = 0;
            }
        }
    }

    fn available(&self) -> i64 {
        self.grants
            .iter()
            .filter(|g| !g.gone)
            .map(|g| g.remaining)
            .sum()
    }

    fn held(&self) -> i64 {
        self.holds
            .iter()
            .filter(|h| h.st == St::Held)
            .map(|h| h.amount)
            .sum()
    }

    fn draw(&mut self, mut amount: i64) -> Vec<(String, i64)> {
        let mut order: Vec<usize> = (0..self.grants.len())
            .filter(|&i| !self.grants[i].gone)
            .collect();
        order.sort_by_key(|&i| {
            (
                self.grants[i].expires.unwrap_or(i64::MAX),
                self.grants[i].seq,
            )
        });
        let mut taken = Vec::new();
        for i in order {
            let take = self.grants[i].remaining.min(amount);
            if take > 0 {
                self.grants[i].remaining -= take;
                amount -= take;
                taken.push((self.grants[i].id.clone(), take));
            }
        }
        assert_eq!(amount, 0);
        taken
    }

    fn may_spend(&self, amount: i64) -> Result<(), Rejection> {
        if amount == 0 {
            Err(Rejection::InvalidAmount)
        } else if self.suspended {
            Err(Rejection::AccountSuspended)
        } else if self.available() < amount {
            Err(Rejection::InsufficientBalance)
        } else {
            Ok(())
        }
    }

    fn hold_index(&self, id: &str) -> Result<usize, Rejection> {
        let i = self
            .holds
            .iter()
            .position(|h| h.id == id)
            .ok_or(Rejection::HoldNotFound)?;
        match self.holds[i].st {
            St::Held => Ok(i),
            St::Settled => Err(Rejection::HoldAlreadySettled),
            St::Released => Err(Rejection::HoldAlreadyReleased),
            St::Expired => Err(Rejection::HoldExpired),
        }
    }
}

const M: i64 = 1_000_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn core_agrees_with_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut now = 0i64;
        let mut state = apply(None, &create(), t(0)).unwrap().state;
        let mut model = Model::default();
        let mut hold_ids: Vec<String> = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            if let Op::Wait(s) = op { now += s; continue; }
            model.tick(now * 1000);
            let (cmd, want): (Command, Result<(), Rejection>) = match op {
                Op::Wait(_) => unreachable!(),
                Op::Grant(a, e) => {
                    let id = format!("g{n}");
                    let want = if a == 0 { Err(Rejection::InvalidAmount) }
                        else if e.is_some_and(|e| now + e <= now) { Err(Rejection::ExpiryInPast) } else { Ok(()) };
                    if want.is_ok() {
                        model.granted += a * M;
                        let seq = model.grants.len() as u64;
                        model.grants.push(MGrant { id: id.clone(), seq, remaining: a * M, expires: e.map(|e| (now + e) * 1000), gone: false });
                    }
                    (grant(&id, a, e.map(|e| now + e)), want)
                }
                Op::Usage(a) => {
                    let want = model.may_spend(a * M);
                    if want.is_ok() { model.draw(a * M); model.used += a * M; }
                    (usage(a), want)
                }
                Op::Lock(a, ttl) => {
                    let id = format!("h{n}");
                    let want = model.may_spend(a * M);
                    if want.is_ok() {
                        let allocs = model.draw(a * M);
                        model.holds.push(MHold { id: id.clone(), amount: a * M, expires: (now + ttl) * 1000, st: St::Held, allocs });
                        hold_ids.push(id.clone());
                    }
                    (lock_until(&id, a, now, now + ttl).1, want)
                }
                Op::Settle(h, a, p) => {
                    let id = hold_ids.get(h).cloned().unwrap_or_else(|| "missing".into());
                    let policy = [None, Some(OveragePolicy::Reject), Some(OveragePolicy::Cap), Some(OveragePolicy::Allow)][p as usize];
                    let want = model.hold_index(&id).and_then(|i| {
                        let held = model.holds[i].amount;
                        let charge = if a * M <= held { a * M } else {
                            match policy.unwrap_or(OveragePolicy::Reject) {
                                OveragePolicy::Reject => return Err(Rejection::ExceedsHold),
                                OveragePolicy::Cap => held,
                                OveragePolicy::Allow if model.available() >= a * M - held => { model.draw(a * M - held); a * M }
                                OveragePolicy::Allow => held,
                            }
                        };
                        let allocs = std::mem::take(&mut model.holds[i].allocs);
                        let mut pay = charge.min(held);
                        let mut back = Vec::new();
                        for (g, amt) in allocs {
                            let take = amt.min(pay);
                            pay -= take;
                            if amt > take { back.push((g, amt - take)); }
                        }
                        model.give_back(back);
                        model.used += charge;
                        model.holds[i].st = St::Settled;
                        Ok(())
                    });
                    (settle(&id, a, policy), want)
                }
                Op::Release(h) => {
                    let id = hold_ids.get(h).cloned().unwrap_or_else(|| "missing".into());
                    let want = model.hold_index(&id).map(|i| {
                        let allocs = std::mem::take(&mut model.holds[i].allocs);
                        model.give_back(allocs);
                        model.holds[i].st = St::Released;
                    });
                    (release(&id), want)
                }
                Op::Sweep => (Command::Sweep { account: id() }, Ok(())),
                Op::Suspend(s) => {
                    model.suspended = s;
                    let status = if s { AccountStatus::Suspended } else { AccountStatus::Active };
                    (update(|u| u.status = Some(status)), Ok(()))
                }
            };
            // The core holds resolved holds in state only for the command
            // that resolved them; load them back as the store would.
            match apply(Some(&state), &cmd, t(now)) {
                Ok(applied) => {
                    prop_assert_eq!(want, Ok(()), "step {}: core accepted {:?}", n, cmd);
                    applied.state.check_invariants().map_err(TestCaseError::fail)?;
                    let b = applied.outcome.balance;
                    prop_assert_eq!(
                        (b.available.micros(), b.held.micros(), b.used.micros(), b.expired.micros(), b.granted.micros()),
                        (model.available(), model.held(), model.used, model.expired, model.granted),
                        "step {}: {:?}", n, cmd
                    );
                    state = applied.state;
                }
                Err(r) => prop_assert_eq!(want, Err(r), "step {}: {:?}", n, cmd),
            }
            // Reads between commands agree with the model too.
            let view = state.balance_at(t(now));
            prop_assert_eq!(view.available.micros(), model.available());
        }
    }
}
