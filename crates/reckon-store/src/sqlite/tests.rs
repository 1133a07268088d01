//! The writer's cache against no cache: the same random operations, run on
//! stores whose caches differ only in size, must give the same answers,
//! states and events. The small caches' decoded tier is full after a few
//! batches, so most states go to the compact tier, which fills, refuses accounts and starts over; the uncached store
//! reads every account from SQLite. Now and then a second handle on the
//! same file (as the admin CLI would be) writes a batch instead, and one
//! store is restarted, its writer filling the new cache while batches
//! arrive (`fill`).

use super::account_log::log_columns;
use super::cache::Cache;
use super::SqliteStore;
use crate::{Clock, ManualClock, Request, Store, PAGE_SIZE_MAX};
use reckon_core::*;
use std::sync::Arc;

const ACCOUNTS: u64 = 40;
const STEPS: usize = 1_500;

/// xorshift64*: deterministic, so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn id(n: u64) -> AccountId {
    AccountId::parse(&format!("acct-{n}")).unwrap()
}

/// A grant to account `n` that never expires.
fn grant_to(n: u64, amount: Amount) -> Command {
    Command::Grant(GrantCmd {
        account: id(n),
        grant_id: format!("g-{n}"),
        amount,
        expiry: GrantExpiry::Never,
        source: "manual".into(),
    })
}

/// A new account counting credits, with the defaults (tests elsewhere in
/// `sqlite` use it too).
pub(super) fn credits_account(id: AccountId) -> Command {
    Command::CreateAccount(CreateAccount {
        id,
        unit: Unit::parse("credits").unwrap(),
        expires_at: None,
        timezone: None,
        metadata: "{}".into(),
        overage: OveragePolicy::Reject,
    })
}

/// Micros, sometimes whole units (the compact tier writes those apart).
fn amount(rng: &mut Rng, units_max: u64) -> Amount {
    let micros = if rng.below(2) == 0 {
        rng.below(units_max + 1) * 1_000_000
    } else {
        rng.below(units_max * 1_000_000 + 1)
    };
    Amount::from_micros(micros as i64).unwrap()
}

/// A random request at `step`; `holds` has each account's newest hold id,
/// which settles and releases target.
fn random_request(rng: &mut Rng, step: usize, holds: &mut [String]) -> Request {
    let n = rng.below(ACCOUNTS);
    let account = id(n);
    let hold_id = holds[n as usize].clone();
    let command = match rng.below(12) {
        0 => Command::CreateAccount(CreateAccount {
            id: account,
            unit: Unit::parse(["credits", "mb", "requests"][rng.below(3) as usize]).unwrap(),
            expires_at: None,
            timezone: [None, Some("Europe/Paris".into())][rng.below(2) as usize].clone(),
            metadata: "{}".into(),
            overage: OveragePolicy::Reject,
        }),
        1 | 2 => Command::Grant(GrantCmd {
            account,
            // Server-made ids are UUIDs; clients may send anything.
            grant_id: if rng.below(2) == 0 {
                format!("01a2434c-9f7b-7463-b889-{:012x}", step)
            } else {
                format!("grant-{step}")
            },
            amount: amount(rng, 50),
            expiry: match rng.below(3) {
                0 => GrantExpiry::Never,
                _ => GrantExpiry::AfterSecs(1 + rng.below(600)),
            },
            source: ["manual", "renewal"][rng.below(2) as usize].into(),
        }),
        3..=5 => Command::Usage(UsageCmd {
            account,
            amount: amount(rng, 5),
        }),
        6 => Command::Lock(LockCmd {
            account,
            hold_id: {
                holds[n as usize] = format!("h-{n}-{step}");
                holds[n as usize].clone()
            },
            amount: amount(rng, 5),
            ttl_secs: 1 + rng.below(3_000),
        }),
        7 => Command::Settle(SettleCmd {
            account,
            hold_id,
            amount: amount(rng, 2),
            overage: SettleOverage::Account,
        }),
        8 => Command::Release(ReleaseCmd { account, hold_id }),
        9 => Command::UpdateAccount(UpdateAccount {
            id: account,
            expires_at: None,
            status: match rng.below(4) {
                0 => Some(AccountStatus::Suspended),
                1 => Some(AccountStatus::Active),
                _ => None,
            },
            metadata: Some(match rng.below(3) {
                0 => "{}".into(),
                1 => format!(r#"{{"step":{step}}}"#),
                _ => format!(r#"{{"note":"{}"}}"#, "x".repeat(100 + step % 50)),
            }),
            overage: Some(
                [
                    OveragePolicy::Reject,
                    OveragePolicy::Cap,
                    OveragePolicy::Allow,
                ][rng.below(3) as usize],
            ),
        }),
        10 => Command::Check {
            account,
            amount: amount(rng, 5),
        },
        _ => Command::Sweep { account },
    };
    let mut request = Request::new(command);
    if rng.below(4) == 0 {
        let key = format!("k-{}", rng.below(30));
        request.idempotency_key = Some(crate::IdempotencyKey::parse(&key).unwrap());
    }
    request
}

struct Under {
    store: SqliteStore,
    clock: Arc<ManualClock>,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn store(cache: Cache) -> Under {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_700_000_000_000)));
    let path = dir.path().join("ledger.db");
    let store = SqliteStore::open_with_cache(&path, clock.clone(), cache).unwrap();
    Under {
        store,
        clock,
        path,
        _dir: dir,
    }
}

/// Everything a client could see of the store: every account and event.
async fn everything(s: &SqliteStore) -> String {
    let accounts = s.accounts(None, PAGE_SIZE_MAX).await.unwrap();
    let mut out = format!("{accounts:?}\n");
    for a in &accounts {
        let events = s.events(&a.account.id, None, PAGE_SIZE_MAX).await.unwrap();
        out.push_str(&format!("{events:?}\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_states_and_events_do_not_depend_on_the_cache() {
    let mut stores = [
        // Reads every account from SQLite.
        store(Cache::new(0, 0)),
        // Decodes every account from the compact tier, which has room.
        store(Cache::new(0, 1 << 20)),
        // Decoded tier full at once: most states go to a compact tier that fills.
        store(Cache::new(3, 1_500)),
        // Restarted now and then: its writer reads accounts into the new
        // cache (`fill`) while batches arrive.
        store(restarted_cache()),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut holds = vec![String::from("none"); ACCOUNTS as usize];
    let mut step = 0;
    let setup: Vec<Request> = (0..ACCOUNTS)
        .flat_map(|n| {
            let create = CreateAccount {
                id: id(n),
                unit: Unit::default(),
                expires_at: None,
                timezone: None,
                metadata: "{}".into(),
                overage: OveragePolicy::Reject,
            };
            let grant = GrantCmd {
                account: id(n),
                grant_id: format!("first-{n}"),
                amount: Amount::from_units(20).unwrap(),
                expiry: GrantExpiry::Never,
                source: "manual".into(),
            };
            [
                Request::new(Command::CreateAccount(create)),
                Request::new(Command::Grant(grant)),
            ]
        })
        .collect();
    for s in &stores {
        s.store.submit_many(setup.clone()).await;
    }
    while step < STEPS {
        // A batch of one to four requests, the clock moving between them.
        let batch: Vec<Request> = (0..1 + rng.below(4))
            .map(|_| {
                step += 1;
                random_request(&mut rng, step, &mut holds)
            })
            .collect();
        let advance = match rng.below(10) {
            0 => 1 + rng.below(120) as i64,
            _ => 0,
        };
        let purge = rng.below(50) == 0;
        let restart = rng.below(40) == 0;
        // Another process writing the file (the admin CLI): the writer
        // must see it and drop both tiers of its cache.
        let elsewhere = rng.below(30) == 0;
        // A maintenance job that appends an event, moving a chain head.
        let credential = (rng.below(50) == 0).then(|| {
            let key = crate::CredentialKey::parse(&format!("pk-{step}"), true).unwrap();
            (id(rng.below(ACCOUNTS)), key)
        });
        let mut answers = Vec::new();
        if restart {
            let s = &mut stores[3];
            s.store =
                SqliteStore::open_with_cache(&s.path, s.clock.clone(), restarted_cache()).unwrap();
            s.store.fill_cache().unwrap();
        }
        for s in &stores {
            s.clock.advance_secs(advance);
            if purge {
                // A maintenance job that keeps the cache.
                s.store.purge_idempotency(s.clock.now()).await.unwrap();
            }
            if let Some((account, key)) = &credential {
                let added = s.store.add_credential(account, key.clone(), s.clock.now());
                added.await.unwrap().unwrap();
            }
            let got = if elsewhere {
                let other = SqliteStore::open(&s.path, s.clock.clone()).unwrap();
                other.submit_many(batch.clone()).await
            } else {
                s.store.submit_many(batch.clone()).await
            };
            answers.push(format!("{got:?}"));
        }
        assert_eq!(answers[0], answers[1], "step {step}, compact only");
        assert_eq!(answers[0], answers[2], "step {step}, small caches");
        assert_eq!(answers[0], answers[3], "step {step}, restarted");
        if step % 100 < 4 {
            let all = everything(&stores[0].store).await;
            for s in &stores[1..] {
                assert_eq!(all, everything(&s.store).await, "step {step}");
            }
        }
    }
    let all = everything(&stores[0].store).await;
    for kind in [
        "Settled",
        "Released",
        "HoldExpired",
        "GrantExpired",
        "CredentialAdded",
    ] {
        assert!(
            all.contains(kind),
            "no {kind} event: the test lost its reach"
        );
    }
    for s in &stores[1..] {
        assert_eq!(all, everything(&s.store).await);
    }
}

fn restarted_cache() -> Cache {
    Cache::new(3, 1 << 20)
}

/// What the writer reads into its cache ahead of need (`fill`) is what a
/// batch's miss would read, with the head of the account's event chain;
/// accounts with open holds are left out (the compact tier keeps none), and
/// a tier without room ends the fill without starting over.
#[tokio::test]
async fn fill_keeps_what_a_miss_would_read() {
    const N: u64 = 90;
    // Made in one batch, so their rows are in `accounts`. Some never
    // change again; the others' newest rows are in the account log, and
    // some of those have an open hold.
    let changed = |n: u64| !n.is_multiple_of(7);
    let held = |n: u64| n % 5 == 1 && changed(n);
    let under = store(Cache::new(0, 0));
    let made = (0..N)
        .map(|n| Request::new(credits_account(id(n))))
        .collect();
    let changes = (0..N)
        .filter(|&n| changed(n))
        .flat_map(|n| {
            let mut commands = vec![
                grant_to(n, Amount::from_units(100).unwrap()),
                Command::Usage(UsageCmd {
                    account: id(n),
                    amount: Amount::from_micros(1_500_000).unwrap(),
                }),
            ];
            if held(n) {
                commands.push(Command::Lock(LockCmd {
                    account: id(n),
                    hold_id: format!("h-{n}"),
                    amount: Amount::from_units(1).unwrap(),
                    ttl_secs: 600,
                }));
            }
            commands
        })
        .map(Request::new)
        .collect();
    for batch in [made, changes] {
        let done = under.store.submit_many(batch).await;
        assert!(done.iter().all(|r| r.is_ok()));
    }
    let conn = super::open(&under.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
    let log = super::AccountLog::open(&conn).unwrap();
    // Room for everything, then room for a few.
    for (bytes, all) in [(1 << 20, true), (2_500, false)] {
        let mut cache = Cache::new(0, bytes);
        let mut cursor = super::rows::FillCursor::default();
        let mut steps = 0;
        while let Some(next) = super::fill(&conn, &mut cache, &log, cursor).unwrap() {
            cursor = next;
            steps += 1;
        }
        if all {
            // Through the log (one row an account changed since it was
            // made), then through `accounts`, each ended by an empty step.
            let logged = (0..N).filter(|&n| changed(n)).count();
            let step = super::rows::FILL_STEP_ROWS;
            assert_eq!(
                steps,
                logged.div_ceil(step) + 1 + (N as usize).div_ceil(step)
            );
        }
        let mut kept = 0;
        let mut reads = super::rows::AccountReads::prepare(&conn).unwrap();
        for n in 0..N {
            let miss = super::rows::load_account_and_head(
                &conn,
                &mut reads,
                &log,
                &id(n),
                &Default::default(),
            )
            .unwrap()
            .unwrap();
            match cache.take(&id(n)) {
                Some(cached) => {
                    assert_eq!((cached.state, cached.heads), miss, "acct-{n}");
                    kept += 1;
                }
                None => assert!(!all || held(n), "acct-{n} not kept"),
            }
        }
        let open_holds = (0..N).filter(|&n| held(n)).count();
        if all {
            assert_eq!(kept, N as usize - open_holds);
        } else {
            assert!(kept > 0 && kept < N as usize - open_holds, "kept {kept}");
        }
    }
}

/// A database from before schema version 7 keeps account log rows in
/// columns (`state` NULL): the store reads them as it did, and writes the
/// account's next change in the compact form, which reads the same.
#[tokio::test]
async fn log_rows_in_columns_read_as_before() {
    let Under {
        store,
        clock,
        path,
        _dir,
    } = store(Cache::new(0, 0));
    let a = id(1);
    let units = |n: i64| Amount::from_micros(n * 1_000_000).unwrap();
    let usage = |n: i64| {
        Request::new(Command::Usage(UsageCmd {
            account: a.clone(),
            amount: units(n),
        }))
    };
    for command in [
        Command::CreateAccount(CreateAccount {
            id: a.clone(),
            unit: Unit::parse("credits").unwrap(),
            expires_at: None,
            timezone: Some("Europe/Paris".into()),
            metadata: r#"{"plan":"pro"}"#.into(),
            overage: OveragePolicy::Cap,
        }),
        Command::Grant(GrantCmd {
            account: a.clone(),
            grant_id: "g-1".into(),
            amount: units(10),
            expiry: GrantExpiry::Never,
            source: "manual".into(),
        }),
    ] {
        store.submit(Request::new(command)).await.unwrap();
    }
    store.submit(usage(1)).await.unwrap();
    let mut old = store.account(&a).await.unwrap().unwrap();
    drop(store);
    // The next change as a reckon before version 7 appended it: used 3.
    old.totals.used = units(3);
    old.grants[0].remaining = units(7);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (used_column, last_event_seq): (i64, Option<i64>) = conn
        .query_row(
            "SELECT used, last_event_seq FROM account_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(used_column, 0, "this version writes the state compact");
    // Its account's row in `accounts` as it was created, with the state
    // since written over it in columns.
    conn.execute(
        concat!(
            "INSERT INTO account_log (",
            log_columns!(),
            ") SELECT ",
            log_columns!(),
            " FROM accounts WHERE id = ?1"
        ),
        [a.as_str()],
    )
    .unwrap();
    conn.execute(
        "UPDATE account_log SET updated_at = ?1, granted = ?2, used = ?3, next_grant_seq = ?4,
             grants = ?5, last_event_seq = ?6 WHERE seq = last_insert_rowid()",
        rusqlite::params![
            old.account.updated_at.millis(),
            old.totals.granted.micros(),
            old.totals.used.micros(),
            old.next_grant_seq as i64,
            crate::codec::encode_grants(&old.grants),
            last_event_seq,
        ],
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open_with_cache(&path, clock.clone(), Cache::new(0, 0)).unwrap();
    assert_eq!(store.account(&a).await.unwrap().unwrap(), old);
    let done = store.submit(usage(2)).await.unwrap();
    assert_eq!(done.outcome.balance.available, units(5));
    let mut new = old.clone();
    new.totals.used = units(5);
    new.grants[0].remaining = units(5);
    new.account.updated_at = clock.now();
    assert_eq!(store.account(&a).await.unwrap().unwrap(), new);
    drop(store);
    let store = SqliteStore::open_with_cache(&path, clock, Cache::new(0, 0)).unwrap();
    assert_eq!(store.account(&a).await.unwrap().unwrap(), new);
}

/// Readers on the pool while the writer comes round the account log's ring
/// several times over a few accounts, with no writer cache (every batch
/// reads its accounts from SQLite too): a reader may find the slot it looked
/// up overwritten and must look again, so no read fails, and no account's
/// `used` ever goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_the_ring_never_fail_or_go_back() {
    const N: u64 = 50;
    const BATCHES: usize = 500;
    let under = store(Cache::new(0, 0));
    let store = under.store.clone();
    let setup = (0..N)
        .flat_map(|n| {
            [
                credits_account(id(n)),
                grant_to(n, Amount::from_micros(1_000_000_000_000).unwrap()),
            ]
        })
        .map(Request::new)
        .collect();
    assert!(store.submit_many(setup).await.iter().all(|r| r.is_ok()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let mut seen = vec![Amount::ZERO; N as usize];
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    for n in 0..N {
                        let state = store.account(&id(n)).await.unwrap().unwrap();
                        assert!(state.totals.used >= seen[n as usize], "acct-{n} went back");
                        seen[n as usize] = state.totals.used;
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let mut rng = Rng(7);
    for _ in 0..BATCHES {
        let batch = (0..1 + rng.below(N))
            .map(|_| {
                Request::new(Command::Usage(UsageCmd {
                    account: id(rng.below(N)),
                    amount: Amount::from_micros(1_000_000).unwrap(),
                }))
            })
            .collect();
        assert!(store.submit_many(batch).await.iter().all(|r| r.is_ok()));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    let (rows, written): (i64, i64) = rusqlite::Connection::open(&under.path)
        .unwrap()
        .query_row("SELECT count(*), max(written) FROM account_log", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(
        written > 2 * rows,
        "the ring came round ({written} rows written into {rows})"
    );
}
