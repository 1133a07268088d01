//! Table tests: each row is a setup script, one command at one instant, and
//! the expected result (balance after, or the rejection code).

mod support;

use reckon_core::*;
use support::*;

struct Row {
    name: &'static str,
    setup: Vec<(i64, Command)>,
    at: i64,
    command: Command,
    /// Ok((available, held, used, expired)) in whole units, or the rejection.
    want: Result<(i64, i64, i64, i64), Rejection>,
}

fn rows() -> Vec<Row> {
    use OveragePolicy::*;
    use Rejection::*;
    let base = || vec![(0, create()), (0, grant("g1", 10, None))];
    let with_hold = || {
        vec![
            (0, create()),
            (0, grant("g1", 10, None)),
            lock_until("h1", 4, 1, 100),
        ]
    };
    vec![
        Row {
            name: "create twice",
            setup: vec![(0, create())],
            at: 1,
            command: create(),
            want: Err(AccountExists),
        },
        Row {
            name: "usage on unknown account",
            setup: vec![],
            at: 0,
            command: usage(1),
            want: Err(AccountNotFound),
        },
        Row {
            name: "grant adds to available",
            setup: vec![(0, create())],
            at: 1,
            command: grant("g1", 5, None),
            want: Ok((5, 0, 0, 0)),
        },
        Row {
            name: "grant of zero",
            setup: vec![(0, create())],
            at: 1,
            command: grant("g1", 0, None),
            want: Err(InvalidAmount),
        },
        Row {
            name: "grant expiring in the past",
            setup: vec![(0, create())],
            at: 10,
            command: grant("g1", 5, Some(10)),
            want: Err(ExpiryInPast),
        },
        Row {
            name: "usage within balance",
            setup: base(),
            at: 1,
            command: usage(4),
            want: Ok((6, 0, 4, 0)),
        },
        Row {
            name: "usage of exactly the balance",
            setup: base(),
            at: 1,
            command: usage(10),
            want: Ok((0, 0, 10, 0)),
        },
        Row {
            name: "usage above balance",
            setup: base(),
            at: 1,
            command: usage(11),
            want: Err(InsufficientBalance),
        },
        Row {
            name: "usage of zero",
            setup: base(),
            at: 1,
            command: usage(0),
            want: Err(InvalidAmount),
        },
        Row {
            name: "expired grant stops counting without a sweep",
            setup: vec![(0, create()), (0, grant("g1", 10, Some(50)))],
            at: 50,
            command: usage(1),
            want: Err(InsufficientBalance),
        },
        Row {
            name: "usage draws the earliest-expiring grant first",
            // 12 at t=50 takes all of "soon" and 2 of "late"; so at t=250
            // only late's 8 expire and "never" is untouched.
            setup: vec![
                (0, create()),
                (0, grant("late", 10, Some(200))),
                (0, grant("soon", 10, Some(100))),
                (0, grant("never", 10, None)),
                (50, usage(12)),
            ],
            at: 250,
            command: Command::Sweep { account: id() },
            want: Ok((10, 0, 12, 8)),
        },
        Row {
            name: "suspended account refuses usage",
            setup: vec![
                (0, create()),
                (0, grant("g1", 10, None)),
                (0, update(|u| u.status = Some(AccountStatus::Suspended))),
            ],
            at: 1,
            command: usage(1),
            want: Err(AccountSuspended),
        },
        Row {
            name: "expired account refuses usage",
            setup: vec![
                (0, create()),
                (0, grant("g1", 10, None)),
                (0, update(|u| u.expires_at = Some(Some(t(30))))),
            ],
            at: 30,
            command: usage(1),
            want: Err(AccountExpired),
        },
        Row {
            name: "expired account still accepts a grant",
            setup: vec![
                (0, create()),
                (0, update(|u| u.expires_at = Some(Some(t(30))))),
            ],
            at: 31,
            command: grant("g1", 3, None),
            want: Ok((3, 0, 0, 0)),
        },
        Row {
            name: "lock reserves",
            setup: base(),
            at: 1,
            command: lock_until("h1", 4, 1, 100).1,
            want: Ok((6, 4, 0, 0)),
        },
        Row {
            name: "lock above available",
            setup: with_hold(),
            at: 2,
            command: lock_until("h2", 7, 2, 100).1,
            want: Err(InsufficientBalance),
        },
        Row {
            name: "lock with a zero TTL",
            setup: base(),
            at: 5,
            command: lock_until("h1", 1, 5, 5).1,
            want: Err(InvalidTtl),
        },
        Row {
            name: "lock beyond the longest TTL",
            setup: base(),
            at: 0,
            command: lock_until("h1", 1, 0, 8 * 86_400).1,
            want: Err(InvalidTtl),
        },
        Row {
            name: "settle below the hold returns the rest",
            setup: with_hold(),
            at: 2,
            command: settle("h1", 3, None),
            want: Ok((7, 0, 3, 0)),
        },
        Row {
            name: "settle of zero refunds all",
            setup: with_hold(),
            at: 2,
            command: settle("h1", 0, None),
            want: Ok((10, 0, 0, 0)),
        },
        Row {
            name: "settle above the hold, reject",
            setup: with_hold(),
            at: 2,
            command: settle("h1", 5, None),
            want: Err(ExceedsHold),
        },
        Row {
            name: "settle above the hold, cap",
            setup: with_hold(),
            at: 2,
            command: settle("h1", 5, Some(Cap)),
            want: Ok((6, 0, 4, 0)),
        },
        Row {
            name: "settle above the hold, allow",
            setup: with_hold(),
            at: 2,
            command: settle("h1", 5, Some(Allow)),
            want: Ok((5, 0, 5, 0)),
        },
        Row {
            name: "settle above the hold, allow but balance short: cap",
            setup: with_hold(),
            at: 2,
            command: settle("h1", 20, Some(Allow)),
            want: Ok((6, 0, 4, 0)),
        },
        Row {
            name: "account policy applies when the request names none",
            setup: vec![
                (0, create()),
                (0, grant("g1", 10, None)),
                (0, update(|u| u.overage = Some(Cap))),
                lock_until("h1", 4, 1, 100),
            ],
            at: 2,
            command: settle("h1", 9, None),
            want: Ok((6, 0, 4, 0)),
        },
        Row {
            name: "account-or-cap caps where the account's policy rejects",
            setup: with_hold(),
            at: 2,
            command: settle_by("h1", 5, SettleOverage::AccountOrCap),
            want: Ok((6, 0, 4, 0)),
        },
        Row {
            name: "account-or-cap charges in full where the account allows",
            setup: vec![
                (0, create()),
                (0, grant("g1", 10, None)),
                (0, update(|u| u.overage = Some(Allow))),
                lock_until("h1", 4, 1, 100),
            ],
            at: 2,
            command: settle_by("h1", 5, SettleOverage::AccountOrCap),
            want: Ok((5, 0, 5, 0)),
        },
        Row {
            name: "release refunds all",
            setup: with_hold(),
            at: 2,
            command: release("h1"),
            want: Ok((10, 0, 0, 0)),
        },
        Row {
            name: "settle unknown hold",
            setup: with_hold(),
            at: 2,
            command: settle("nope", 1, None),
            want: Err(HoldNotFound),
        },
        Row {
            name: "settle twice",
            setup: vec![
                (0, create()),
                (0, grant("g1", 10, None)),
                lock_until("h1", 4, 1, 100),
                (2, settle("h1", 1, None)),
            ],
            at: 3,
            command: settle("h1", 1, None),
            want: Err(HoldAlreadySettled),
        },
        Row {
            name: "release after settle",
            setup: vec![
                (0, create()),
                (0, grant("g1", 10, None)),
                lock_until("h1", 4, 1, 100),
                (2, settle("h1", 1, None)),
            ],
            at: 3,
            command: release("h1"),
            want: Err(HoldAlreadySettled),
        },
        Row {
            name: "settle after release",
            setup: vec![
                (0, create()),
                (0, grant("g1", 10, None)),
                lock_until("h1", 4, 1, 100),
                (2, release("h1")),
            ],
            at: 3,
            command: settle("h1", 1, None),
            want: Err(HoldAlreadyReleased),
        },
        Row {
            name: "settle after hold expiry",
            setup: with_hold(),
            at: 100,
            command: settle("h1", 1, None),
            want: Err(HoldExpired),
        },
        Row {
            name: "expired hold frees its amount without a sweep",
            setup: with_hold(),
            at: 100,
            command: usage(10),
            want: Ok((0, 0, 10, 0)),
        },
        Row {
            name: "hold survives the expiry of the grant it drew from",
            setup: vec![
                (0, create()),
                (0, grant("g1", 10, Some(50))),
                lock_until("h1", 4, 1, 100),
            ],
            at: 60,
            // 6 unheld expired at 50; the hold still pays 3 and its unused 1 expires.
            command: settle("h1", 3, None),
            want: Ok((0, 0, 3, 7)),
        },
        Row {
            name: "hold expiring after its grant: everything expires",
            setup: vec![
                (0, create()),
                (0, grant("g1", 10, Some(50))),
                lock_until("h1", 4, 1, 80),
            ],
            at: 90,
            command: Command::Sweep { account: id() },
            want: Ok((0, 0, 0, 10)),
        },
        Row {
            name: "hold expiring before its grant returns to it",
            setup: vec![
                (0, create()),
                (0, grant("g1", 10, Some(80))),
                lock_until("h1", 4, 1, 50),
            ],
            at: 60,
            command: Command::Sweep { account: id() },
            want: Ok((10, 0, 0, 0)),
        },
        Row {
            name: "settle draws from an exhausted grant it reserved",
            setup: vec![
                (0, create()),
                (0, grant("g1", 4, None)),
                lock_until("h1", 4, 1, 100),
                (1, grant("g2", 5, None)),
            ],
            at: 2,
            command: settle("h1", 2, None),
            want: Ok((7, 0, 2, 0)),
        },
    ]
}

#[test]
fn table() {
    for row in rows() {
        let state = if row.setup.is_empty() {
            None
        } else {
            Some(run(&row.setup))
        };
        let got = apply(state.as_ref(), &row.command, t(row.at)).map(|a| {
            a.state.check_invariants().unwrap();
            let b = a.outcome.balance;
            let whole = |x: Amount| x.micros() / 1_000_000;
            (
                whole(b.available),
                whole(b.held),
                whole(b.used),
                whole(b.expired),
            )
        });
        assert_eq!(got, row.want, "row: {}", row.name);
    }
}

#[test]
fn rejection_leaves_state_untouched() {
    let state = run(&[
        (0, create()),
        (0, grant("g1", 10, Some(50))),
        lock_until("h1", 4, 1, 40),
    ]);
    let before = state.clone();
    assert_eq!(
        apply(Some(&state), &usage(100), t(60)),
        Err(Rejection::InsufficientBalance)
    );
    assert_eq!(state, before);
}

#[test]
fn lazy_expiry_events_carry_the_instant_they_happened() {
    let state = run(&[
        (0, create()),
        (0, grant("g1", 10, Some(50))),
        lock_until("h1", 4, 1, 40),
    ]);
    let applied = apply(Some(&state), &Command::Sweep { account: id() }, t(60)).unwrap();
    let kinds: Vec<_> = applied
        .events
        .iter()
        .map(|e| (e.kind, e.at, e.amount))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::HoldExpired, t(40), units(4)),
            (EventKind::GrantExpired, t(50), units(10))
        ]
    );
}

#[test]
fn check_is_read_only_and_explains() {
    let state = run(&[(0, create()), (0, grant("g1", 10, Some(50)))]);
    let c = check(&state, units(5), t(10));
    assert_eq!((c.allowed, c.available, c.reason), (true, units(10), None));
    let c = check(&state, units(5), t(50));
    assert_eq!(
        (c.allowed, c.available, c.reason),
        (false, units(0), Some(Rejection::InsufficientBalance))
    );
    assert_eq!(state.balance_at(t(10)).available, units(10));
}

#[test]
fn every_rejection_code_round_trips() {
    for r in Rejection::ALL {
        assert_eq!(Rejection::parse(r.code()), Some(r));
    }
}
