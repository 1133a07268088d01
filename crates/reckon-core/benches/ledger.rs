//! Micro-benchmarks of the pure core: the cost of deciding, without I/O.
//! Run: `cargo bench -p reckon-core`. Regressions here show up in review.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use reckon_core::*;
use std::hint::black_box;

fn id() -> AccountId {
    AccountId::parse("bench-account").unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + secs * 1000)
}

/// An account with `grants` grants (half expiring) and `holds` open holds.
fn account(grants: usize, holds: usize) -> AccountState {
    let create = Command::CreateAccount(CreateAccount {
        id: id(),
        unit: Unit::default(),
        expires_at: None,
        timezone: None,
        metadata: "{}".into(),
        overage: OveragePolicy::Reject,
    });
    let mut state = apply(None, &create, at(0)).unwrap().state;
    for g in 0..grants {
        let expiry = if g % 2 == 0 {
            GrantExpiry::AfterSecs(86_400 + g as u64)
        } else {
            GrantExpiry::Never
        };
        let cmd = Command::Grant(GrantCmd {
            account: id(),
            grant_id: format!("grant-{g}"),
            amount: Amount::from_units(1_000_000).unwrap(),
            expiry,
            source: "bench".into(),
        });
        state = apply(Some(&state), &cmd, at(0)).unwrap().state;
    }
    for h in 0..holds {
        let cmd = Command::Lock(LockCmd {
            account: id(),
            hold_id: format!("hold-{h}"),
            amount: Amount::from_units(1).unwrap(),
            ttl_secs: 3600,
        });
        state = apply(Some(&state), &cmd, at(0)).unwrap().state;
    }
    state
}

fn usage() -> Command {
    Command::Usage(UsageCmd {
        account: id(),
        amount: Amount::from_micros(1).unwrap(),
    })
}

fn bench(c: &mut Criterion) {
    let small = account(1, 0);
    c.bench_function("apply usage (1 grant)", |b| {
        b.iter(|| apply(black_box(Some(&small)), black_box(&usage()), at(1)).unwrap())
    });
    let big = account(50, 20);
    c.bench_function("apply usage (50 grants, 20 holds)", |b| {
        b.iter(|| apply(black_box(Some(&big)), black_box(&usage()), at(1)).unwrap())
    });
    c.bench_function("check (1 grant)", |b| {
        b.iter(|| check(black_box(&small), Amount::from_units(1).unwrap(), at(1)))
    });
    c.bench_function("lock then settle (1 grant)", |b| {
        b.iter(|| {
            let lock = Command::Lock(LockCmd {
                account: id(),
                hold_id: "h".into(),
                amount: Amount::from_units(2).unwrap(),
                ttl_secs: 60,
            });
            let locked = apply(Some(&small), &lock, at(1)).unwrap().state;
            let settle = Command::Settle(SettleCmd {
                account: id(),
                hold_id: "h".into(),
                amount: Amount::from_units(1).unwrap(),
                overage: SettleOverage::Account,
            });
            apply(Some(&locked), &settle, at(2)).unwrap()
        })
    });
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000 usage commands on one account", |b| {
        b.iter_batched(
            || small.clone(),
            |mut state| {
                for _ in 0..1000 {
                    state = apply(Some(&state), &usage(), at(1)).unwrap().state;
                }
                state
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    c.bench_function("parse amount \"12.345678\"", |b| {
        b.iter(|| Amount::parse(black_box("12.345678")).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
