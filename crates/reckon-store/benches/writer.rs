//! The SQLite writer's cost per batch, without HTTP: what `reckon bench`'s
//! `batch` scenario spends in the writer thread, measured steadily enough to
//! compare two commits. Each iteration is one durable batch (commit and the
//! durability thread's fsync included) of usage operations spread over
//! 1,000 accounts, each with a 30-day grant. Run: `cargo bench -p
//! reckon-store`; `scripts/writer-instructions` counts its instructions.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use reckon_core::{
    AccountId, Amount, Command, CreateAccount, GrantCmd, GrantExpiry, OveragePolicy, Unit, UsageCmd,
};
use reckon_store::{Request, SqliteStore, Store, SystemClock};
use std::sync::Arc;

const ACCOUNTS: usize = 1_000;
/// Each account's grant expires after 30 days, as a monthly budget does.
const GRANT_VALID_SECS: u64 = 30 * 86_400;

fn account(i: usize) -> AccountId {
    AccountId::parse(&format!("bench-{i}")).unwrap()
}

/// `n` usage requests on accounts picked by a fixed pseudo-random sequence.
fn usage_batch(n: usize, seed: &mut u64) -> Vec<Request> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Request::new(Command::Usage(UsageCmd {
                account: account((*seed >> 33) as usize % ACCOUNTS),
                amount: Amount::from_micros(1).unwrap(),
            }))
        })
        .collect()
}

fn setup(store: &SqliteStore, rt: &tokio::runtime::Runtime) {
    let mut requests = Vec::new();
    for i in 0..ACCOUNTS {
        requests.push(Request::new(Command::CreateAccount(CreateAccount {
            id: account(i),
            unit: Unit::default(),
            expires_at: None,
            timezone: None,
            metadata: "{}".into(),
            overage: OveragePolicy::Reject,
        })));
        requests.push(Request::new(Command::Grant(GrantCmd {
            account: account(i),
            grant_id: format!("grant-{i}"),
            amount: Amount::from_units(1_000_000_000).unwrap(),
            // Most budgets expire (a month, a bundle): the account then has a
            // `next_due`, which the writer must not rewrite on every usage.
            expiry: GrantExpiry::AfterSecs(GRANT_VALID_SECS),
            source: "bench".into(),
        })));
    }
    for result in rt.block_on(store.submit_many(requests)) {
        result.expect("setup request applies");
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("bench.db"), Arc::new(SystemClock)).unwrap();
    setup(&store, &rt);
    let mut seed = 1;
    let mut group = c.benchmark_group("sqlite writer");
    for n in [64, 1_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n} usage ops over {ACCOUNTS} accounts"), |b| {
            b.iter_batched(
                || usage_batch(n, &mut seed),
                |batch| rt.block_on(store.submit_many(batch)),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
