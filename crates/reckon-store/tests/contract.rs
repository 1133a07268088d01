//! The store contract: behaviour every backend must show. Each check is an
//! async function over a fresh [`Harness`]; the `contract!` macro at the
//! bottom lists the checks once and instantiates them for each backend, so
//! both backends run the same code. PostgreSQL checks each get a fresh schema; without a server
//! they print why they were skipped (and fail under `CI=true`).

use reckon_core::*;
use reckon_store::*;
use std::sync::Arc;

struct Harness {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    /// Reopens the same database with a fresh store (a restart).
    reopen: Box<dyn Fn() -> Arc<dyn Store> + Send + Sync>,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<reckon_store::postgres::scratch::ScratchSchema>,
}

const T0: i64 = 1_700_000_000_000;

/// A directory of its own, the database path in it and a clock at `T0`.
fn fresh_sqlite_file() -> (tempfile::TempDir, std::path::PathBuf, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    (
        dir,
        path,
        Arc::new(ManualClock::new(Timestamp::from_millis(T0))),
    )
}

async fn sqlite(_test: &str) -> Option<Harness> {
    let (dir, path, clock) = fresh_sqlite_file();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, clock.clone()).unwrap());
    let c2 = clock.clone();
    Some(Harness {
        store,
        clock,
        reopen: Box::new(move || Arc::new(SqliteStore::open(&path, c2.clone()).unwrap())),
        _dir: Some(dir),
        _schema: None,
    })
}

/// A fresh schema per test; `None` (printed) when there is no server.
async fn postgres(test: &str) -> Option<Harness> {
    let schema = reckon_store::postgres::scratch::ScratchSchema::for_tests(test).await?;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&schema.url, clock.clone())
            .await
            .unwrap(),
    );
    let (url, c2) = (schema.url.clone(), clock.clone());
    Some(Harness {
        store,
        clock,
        // A second node on the same database (connect is async; reopen is
        // called from async tests, so run it on a helper thread's runtime).
        reopen: Box::new(move || {
            let (url, c) = (url.clone(), c2.clone());
            let handle = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                let store = handle.block_on(PostgresStore::connect(&url, c)).unwrap();
                Arc::new(store) as Arc<dyn Store>
            })
            .join()
            .unwrap()
        }),
        _dir: None,
        _schema: Some(schema),
    })
}

fn id(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

fn units(n: i64) -> Amount {
    Amount::from_units(n).unwrap()
}

fn create(name: &str) -> Request {
    Request::new(Command::CreateAccount(CreateAccount {
        id: id(name),
        unit: Unit::default(),
        expires_at: None,
        timezone: None,
        metadata: "{}".into(),
        overage: OveragePolicy::Reject,
    }))
}

fn grant(name: &str, n: i64, expiry: GrantExpiry) -> Request {
    Request::new(Command::Grant(GrantCmd {
        account: id(name),
        grant_id: uuid(),
        amount: units(n),
        expiry,
        source: "test".into(),
    }))
}

fn usage(name: &str, n: i64) -> Request {
    Request::new(Command::Usage(UsageCmd {
        account: id(name),
        amount: units(n),
    }))
}

fn lock(name: &str, hold: &str, n: i64, ttl_secs: u64) -> Request {
    Request::new(Command::Lock(LockCmd {
        account: id(name),
        hold_id: hold.into(),
        amount: units(n),
        ttl_secs,
    }))
}

fn settle(name: &str, hold: &str, n: i64) -> Request {
    Request::new(Command::Settle(SettleCmd {
        account: id(name),
        hold_id: hold.into(),
        amount: units(n),
        overage: SettleOverage::Account,
    }))
}

fn keyed(mut r: Request, key: &str) -> Request {
    r.idempotency_key = Some(IdempotencyKey::parse(key).unwrap());
    r
}

/// A fresh id per call, as the server would make; tests need no real UUIDs.
fn uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!("id-{}", N.fetch_add(1, Ordering::Relaxed))
}

async fn ok(h: &Harness, r: Request) -> Executed {
    let what = format!("{:?}", r.command);
    h.store
        .submit(r)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn rejected(h: &Harness, r: Request) -> Rejection {
    match h.store.submit(r).await {
        Err(ExecError::Rejected(rej)) => rej,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

async fn available(h: &Harness, name: &str) -> Amount {
    let state = h.store.account(&id(name)).await.unwrap().unwrap();
    state.balance_at(h.clock.now()).available
}

/// The accounts due at the clock's instant (at most 10).
async fn due_now(h: &Harness) -> Vec<AccountId> {
    h.store.due_accounts(h.clock.now(), 10).await.unwrap()
}

/// How many of the account's events are of `kind`.
async fn events_of(h: &Harness, name: &str, kind: EventKind) -> usize {
    let events = h.store.events(&id(name), None, PAGE_SIZE_MAX).await;
    events
        .unwrap()
        .iter()
        .filter(|e| e.event.kind == kind)
        .count()
}

/// Creates each account with a grant of `n` that never expires.
async fn funded(h: &Harness, names: &[&str], n: i64) {
    for name in names {
        ok(h, create(name)).await;
        ok(h, grant(name, n, GrantExpiry::Never)).await;
    }
}

async fn event_count(h: &Harness, name: &str) -> usize {
    h.store
        .events(&id(name), None, PAGE_SIZE_MAX)
        .await
        .unwrap()
        .len()
}

// ---- the checks -------------------------------------------------------------

async fn accounts_grants_and_usage(h: Harness) {
    ok(&h, create("a")).await;
    assert_eq!(rejected(&h, create("a")).await, Rejection::AccountExists);
    assert_eq!(
        rejected(&h, usage("nobody", 1)).await,
        Rejection::AccountNotFound
    );
    ok(&h, grant("a", 10, GrantExpiry::Never)).await;
    let e = ok(&h, usage("a", 4)).await;
    assert_eq!(e.outcome.balance.available, units(6));
    assert_eq!(e.outcome.balance.used, units(4));
    assert_eq!(available(&h, "a").await, units(6));
    assert_eq!(
        rejected(&h, usage("a", 7)).await,
        Rejection::InsufficientBalance
    );
    assert_eq!(available(&h, "a").await, units(6));
    // created, granted, used: the rejection left no event.
    assert_eq!(event_count(&h, "a").await, 3);
    let events = h.store.events(&id("a"), None, 10).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Used,
            EventKind::Granted,
            EventKind::AccountCreated
        ],
        "newest first"
    );
    assert_eq!(events[0].event.available_after, units(6));
    let page = h
        .store
        .events(&id("a"), Some(events[0].seq), 1)
        .await
        .unwrap();
    assert_eq!(
        page[0].event.kind,
        EventKind::Granted,
        "pagination continues below the cursor"
    );
}

async fn idempotent_replay_applies_once(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, grant("a", 10, GrantExpiry::Never)).await;
    let first = ok(&h, keyed(usage("a", 3), "k1")).await;
    assert!(!first.replayed);
    let again = ok(&h, keyed(usage("a", 3), "k1")).await;
    assert!(again.replayed);
    assert_eq!(
        again.outcome, first.outcome,
        "a replay answers what the first call answered"
    );
    assert_eq!(available(&h, "a").await, units(7));
    match h.store.submit(keyed(usage("a", 4), "k1")).await {
        Err(ExecError::IdempotencyConflict) => {}
        other => panic!("same key, other body: {other:?}"),
    }
    // Later, the replay still answers with the balance the first call left.
    ok(&h, usage("a", 1)).await;
    let later = ok(&h, keyed(usage("a", 3), "k1")).await;
    assert!(later.replayed);
    assert_eq!(later.outcome.balance, first.outcome.balance);
    assert_eq!(available(&h, "a").await, units(6));
    // Keys are per account.
    ok(&h, create("b")).await;
    ok(&h, grant("b", 5, GrantExpiry::Never)).await;
    assert!(!ok(&h, keyed(usage("b", 3), "k1")).await.replayed);
    // A grant's generated id differs on retry, yet the retry is a replay.
    let g1 = ok(&h, keyed(grant("a", 1, GrantExpiry::AfterSecs(60)), "g")).await;
    let g2 = ok(&h, keyed(grant("a", 1, GrantExpiry::AfterSecs(60)), "g")).await;
    assert!(g2.replayed);
    assert_eq!(g1.outcome.grant.unwrap().id, g2.outcome.grant.unwrap().id);
    // A rejected request stores nothing: the same key works once the balance allows.
    assert_eq!(
        rejected(&h, keyed(usage("b", 50), "later")).await,
        Rejection::InsufficientBalance
    );
    ok(&h, grant("b", 100, GrantExpiry::Never)).await;
    assert!(!ok(&h, keyed(usage("b", 50), "later")).await.replayed);
}

async fn duplicates_in_one_batch_apply_once(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, grant("a", 10, GrantExpiry::Never)).await;
    let results = h
        .store
        .submit_many(vec![
            keyed(usage("a", 2), "same"),
            keyed(usage("a", 2), "same"),
            usage("a", 1),
        ])
        .await;
    let flags: Vec<bool> = results
        .iter()
        .map(|r| r.as_ref().unwrap().replayed)
        .collect();
    assert_eq!(flags, vec![false, true, false]);
    assert_eq!(available(&h, "a").await, units(7));
}

async fn batch_applies_in_order(h: Harness) {
    let results = h
        .store
        .submit_many(vec![
            create("a"),
            grant("a", 5, GrantExpiry::Never),
            usage("a", 5),
            usage("a", 1),
        ])
        .await;
    assert!(results[..3].iter().all(Result::is_ok));
    assert!(matches!(
        results[3],
        Err(ExecError::Rejected(Rejection::InsufficientBalance))
    ));
}

async fn grants_expire_lazily_and_by_sweep(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, grant("a", 10, GrantExpiry::AfterSecs(60))).await;
    ok(&h, grant("a", 5, GrantExpiry::Never)).await;
    ok(&h, usage("a", 3)).await; // drawn from the expiring grant
    assert!(due_now(&h).await.is_empty());
    h.clock.advance_secs(60);
    // No sweep ran, yet the expired grant no longer counts.
    assert_eq!(available(&h, "a").await, units(5));
    assert_eq!(
        rejected(&h, usage("a", 6)).await,
        Rejection::InsufficientBalance
    );
    assert_eq!(due_now(&h).await, vec![id("a")]);
    ok(&h, Request::new(Command::Sweep { account: id("a") })).await;
    assert!(due_now(&h).await.is_empty());
    let state = h.store.account(&id("a")).await.unwrap().unwrap();
    assert_eq!(state.totals.expired, units(7));
    assert_eq!(state.grants.len(), 1);
    let newest = &h.store.events(&id("a"), None, 1).await.unwrap()[0].event;
    assert_eq!(newest.kind, EventKind::GrantExpired);
    assert_eq!(
        newest.at.millis(),
        T0 + 60_000,
        "the event carries the instant of expiry"
    );
}

async fn holds_resolve_once(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, grant("a", 10, GrantExpiry::Never)).await;
    let locked = ok(&h, lock("a", "h1", 4, 300)).await;
    assert_eq!(locked.outcome.balance.available, units(6));
    assert_eq!(locked.outcome.balance.held, units(4));
    let settled = ok(&h, settle("a", "h1", 3)).await;
    assert_eq!(settled.outcome.balance.available, units(7));
    assert_eq!(settled.outcome.hold.unwrap().status, HoldStatus::Settled);
    // The resolved hold is loaded from the database, not from memory.
    assert_eq!(
        rejected(&h, settle("a", "h1", 1)).await,
        Rejection::HoldAlreadySettled
    );
    let hold = h.store.hold("h1").await.unwrap().unwrap();
    assert_eq!(
        (hold.status, hold.settled_amount),
        (HoldStatus::Settled, units(3))
    );
    // Expiry without a sweep.
    ok(&h, lock("a", "h2", 5, 30)).await;
    assert_eq!(available(&h, "a").await, units(2));
    h.clock.advance_secs(30);
    assert_eq!(available(&h, "a").await, units(7));
    assert_eq!(
        rejected(&h, settle("a", "h2", 1)).await,
        Rejection::HoldExpired
    );
    // A hold of another account is not found through this one.
    ok(&h, create("b")).await;
    assert_eq!(
        rejected(&h, settle("b", "h1", 1)).await,
        Rejection::HoldNotFound
    );
    let held = h
        .store
        .holds(&id("a"), Some(HoldStatus::Held), h.clock.now(), 10)
        .await
        .unwrap();
    assert!(held.is_empty(), "{held:?}");
    let expired = h
        .store
        .holds(&id("a"), Some(HoldStatus::Expired), h.clock.now(), 10)
        .await
        .unwrap();
    assert_eq!(
        expired
            .iter()
            .map(|h| (h.id.as_str(), h.status))
            .collect::<Vec<_>>(),
        vec![("h2", HoldStatus::Expired)]
    );
}

/// An account's holds list newest first, filtered by their status as of
/// now, up to the limit, and only its own.
async fn holds_list_newest_first(h: Harness) {
    funded(&h, &["a", "b"], 100).await;
    ok(&h, lock("a", "h1", 1, 300)).await;
    h.clock.advance_secs(1);
    ok(&h, lock("b", "hb", 1, 300)).await;
    ok(&h, lock("a", "h2", 1, 30)).await;
    h.clock.advance_secs(1);
    ok(&h, lock("a", "h3", 1, 300)).await;
    h.clock.advance_secs(1);
    ok(&h, settle("a", "h1", 1)).await;
    ok(&h, usage("a", 1)).await;
    h.clock.advance_secs(1);
    ok(&h, lock("a", "h4", 1, 300)).await;
    h.clock.advance_secs(40);
    let list = |name: &'static str, status: Option<HoldStatus>, limit: usize| {
        let h = &h;
        async move {
            h.store
                .holds(&id(name), status, h.clock.now(), limit)
                .await
                .unwrap()
                .into_iter()
                .map(|hold| (hold.id, hold.status))
                .collect::<Vec<_>>()
        }
    };
    let pair = |id: &str, status| (id.to_owned(), status);
    assert_eq!(
        list("a", None, 10).await,
        [
            pair("h4", HoldStatus::Held),
            pair("h3", HoldStatus::Held),
            pair("h2", HoldStatus::Expired),
            pair("h1", HoldStatus::Settled),
        ]
    );
    assert_eq!(
        list("a", None, 2).await,
        [pair("h4", HoldStatus::Held), pair("h3", HoldStatus::Held)]
    );
    assert_eq!(
        list("a", Some(HoldStatus::Held), 10).await,
        [pair("h4", HoldStatus::Held), pair("h3", HoldStatus::Held)]
    );
    assert_eq!(
        list("a", Some(HoldStatus::Held), 1).await,
        [pair("h4", HoldStatus::Held)]
    );
    assert!(list("b", Some(HoldStatus::Settled), 10).await.is_empty());
    assert_eq!(
        list("a", Some(HoldStatus::Expired), 10).await,
        [pair("h2", HoldStatus::Expired)]
    );
    assert_eq!(
        list("a", Some(HoldStatus::Settled), 10).await,
        [pair("h1", HoldStatus::Settled)]
    );
    assert!(list("a", Some(HoldStatus::Released), 10).await.is_empty());
    assert_eq!(list("b", None, 10).await, [pair("hb", HoldStatus::Held)]);
    assert!(list("nobody", None, 10).await.is_empty());
}

async fn concurrent_usage_never_overspends(h: Harness) {
    ok(&h, create("hot")).await;
    ok(&h, grant("hot", 50, GrantExpiry::Never)).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = h.store.clone();
        tasks.push(tokio::spawn(async move {
            let r = if i % 2 == 0 {
                usage("hot", 1)
            } else {
                keyed(usage("hot", 1), &format!("k{i}"))
            };
            store.submit(r).await
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(ExecError::Rejected(Rejection::InsufficientBalance)) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(accepted, 50);
    let state = h.store.account(&id("hot")).await.unwrap().unwrap();
    assert_eq!(state.totals.used, units(50));
    assert_eq!(state.balance_at(h.clock.now()).available, Amount::ZERO);
    assert_eq!(event_count(&h, "hot").await, 2 + 50);
}

async fn acknowledged_writes_survive_restart(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, grant("a", 10, GrantExpiry::AfterSecs(3600))).await;
    ok(&h, lock("a", "h1", 2, 300)).await;
    ok(&h, keyed(usage("a", 3), "k")).await;
    // Settings changes take another write path than balance changes: both
    // must reach the database, not only the writer's cached state.
    let update = |status| {
        Request::new(Command::UpdateAccount(UpdateAccount {
            id: id("a"),
            expires_at: Some(Some(Timestamp::from_millis(T0 + 86_400_000))),
            status,
            metadata: Some(r#"{"plan":"pro"}"#.into()),
            overage: Some(OveragePolicy::Cap),
        }))
    };
    ok(&h, update(None)).await;
    ok(&h, usage("a", 1)).await;
    ok(&h, update(Some(AccountStatus::Suspended))).await;
    let before = h.store.account(&id("a")).await.unwrap().unwrap();
    assert_eq!(before.account.status, AccountStatus::Suspended);
    assert_eq!(&*before.account.metadata, r#"{"plan":"pro"}"#);
    drop(h.store);
    let store = (h.reopen)();
    let after = store.account(&id("a")).await.unwrap().unwrap();
    assert_eq!(before, after);
    let replay = store.submit(keyed(usage("a", 3), "k")).await.unwrap();
    assert!(replay.replayed, "idempotency records survive a restart");
}

async fn purge_forgets_old_keys(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, grant("a", 10, GrantExpiry::Never)).await;
    ok(&h, keyed(usage("a", 1), "old")).await;
    h.clock.advance_secs(3600);
    ok(&h, keyed(usage("a", 1), "new")).await;
    let purged = h
        .store
        .purge_idempotency(Timestamp::from_millis(T0 + 1000))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(ok(&h, keyed(usage("a", 1), "new")).await.replayed);
    assert!(!ok(&h, keyed(usage("a", 1), "old")).await.replayed);
}

/// More records than one purge step takes (SQLite deletes in steps so the
/// writer serves requests between them): all go in one call.
async fn purge_takes_every_old_key(h: Harness) {
    const RECORDS: usize = 4_500;
    ok(&h, create("a")).await;
    ok(&h, grant("a", RECORDS as i64 + 1, GrantExpiry::Never)).await;
    let requests: Vec<Request> = (0..RECORDS)
        .map(|i| keyed(usage("a", 1), &format!("k{i}")))
        .collect();
    for r in h.store.submit_many(requests).await {
        r.unwrap();
    }
    h.clock.advance_secs(1);
    let purged = h.store.purge_idempotency(h.clock.now()).await.unwrap();
    assert_eq!(purged, RECORDS as u64);
    assert!(!ok(&h, keyed(usage("a", 1), "k0")).await.replayed);
}

async fn settings_round_trip(h: Harness) {
    assert_eq!(h.store.setting("x").await.unwrap(), None);
    h.store.set_setting("x", "1").await.unwrap();
    h.store.set_setting("x", "2").await.unwrap();
    assert_eq!(h.store.setting("x").await.unwrap().as_deref(), Some("2"));
}

async fn accounts_page_by_id(h: Harness) {
    for name in ["c", "a", "b"] {
        ok(&h, create(name)).await;
    }
    let page = h.store.accounts(None, 2).await.unwrap();
    let ids: Vec<_> = page.iter().map(|s| s.account.id.to_string()).collect();
    assert_eq!(ids, ["a", "b"]);
    let page = h.store.accounts(Some(&id("b")), 2).await.unwrap();
    assert_eq!(page.len(), 1);
}

/// Random sequences with repeated keys: every key applies exactly once, and
/// the stored totals equal the sum of what was acknowledged.
async fn random_retries_apply_once(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, grant("a", 1_000, GrantExpiry::Never)).await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut applied = std::collections::HashMap::new();
    for _ in 0..300 {
        let key = format!("k{}", next() % 60);
        let n = (key[1..].parse::<i64>().unwrap() % 7) + 1; // the same key always asks the same amount
        let batch: Vec<Request> = (0..(next() % 4 + 1))
            .map(|_| keyed(usage("a", n), &key))
            .collect();
        for r in h.store.submit_many(batch).await {
            match r {
                Ok(e) if !e.replayed => assert!(
                    applied.insert(key.clone(), n).is_none(),
                    "key {key} applied twice"
                ),
                Ok(_) | Err(ExecError::Rejected(Rejection::InsufficientBalance)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    let used: i64 = applied.values().sum();
    let state = h.store.account(&id("a")).await.unwrap().unwrap();
    assert_eq!(state.totals.used, units(used));
    state.check_invariants().unwrap();
}

async fn credentials_name_accounts(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, create("b")).await;
    let now = h.clock.now();
    let secret = CredentialKey::parse("sk_live_0123456789abcdef", false).unwrap();
    let c = h
        .store
        .add_credential(&id("a"), secret.clone(), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.public, c.active, c.display.as_str()),
        (false, true, "sk_live_...")
    );
    let again = h
        .store
        .add_credential(&id("a"), secret.clone(), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, c, "adding the same key again is a no-op");
    let taken = h
        .store
        .add_credential(&id("b"), secret.clone(), now)
        .await
        .unwrap();
    assert_eq!(taken, Err(CredentialRefusal::KeyInUse));
    let nobody = h
        .store
        .add_credential(&id("zz"), CredentialKey::parse("pub-1", true).unwrap(), now)
        .await
        .unwrap();
    assert_eq!(nobody, Err(CredentialRefusal::AccountNotFound));
    // The same text as a public identifier is a different credential.
    let public = CredentialKey::parse("sk_live_0123456789abcdef", true).unwrap();
    assert_eq!(h.store.find_credential(&public).await.unwrap(), None);
    assert_eq!(
        h.store
            .find_credential(&secret)
            .await
            .unwrap()
            .unwrap()
            .account_id,
        id("a")
    );
    let off = h
        .store
        .set_credential_active(&id("a"), &c.id, false, now)
        .await
        .unwrap()
        .unwrap();
    assert!(!off.active);
    assert!(
        !h.store
            .find_credential(&secret)
            .await
            .unwrap()
            .unwrap()
            .active
    );
    assert_eq!(
        h.store
            .set_credential_active(&id("b"), &c.id, true, now)
            .await
            .unwrap(),
        None,
        "another account's credential"
    );
    assert_eq!(h.store.credentials(&id("a")).await.unwrap().len(), 1);
    let kinds: Vec<EventKind> = h
        .store
        .events(&id("a"), None, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.kind)
        .collect();
    assert_eq!(
        kinds[..2],
        [EventKind::CredentialDeactivated, EventKind::CredentialAdded]
    );
    assert!(
        CredentialKey::parse("short", false).is_err(),
        "private keys have a minimum length"
    );
}

async fn open_holds_across_accounts(h: Harness) {
    funded(&h, &["a", "b"], 10).await;
    ok(&h, lock("a", "ha", 1, 60)).await;
    ok(&h, lock("b", "hb", 1, 600)).await;
    ok(&h, lock("b", "hb2", 1, 600)).await;
    ok(&h, settle("b", "hb2", 1)).await;
    let ids = |v: Vec<Hold>| v.into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(
        ids(h.store.open_holds(h.clock.now(), 10).await.unwrap()),
        ["ha", "hb"]
    );
    h.clock.advance_secs(60);
    assert_eq!(
        ids(h.store.open_holds(h.clock.now(), 10).await.unwrap()),
        ["hb"],
        "an expired hold is not open"
    );
}

/// Another writer on the same database (the CLI on the SQLite file, another
/// node on PostgreSQL) is never hidden by anything this store keeps in memory.
async fn writes_of_another_handle_are_seen(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, grant("a", 5, GrantExpiry::Never)).await;
    ok(&h, usage("a", 5)).await; // the account is now warm in this store
    let other = (h.reopen)();
    other
        .submit(grant("a", 3, GrantExpiry::Never))
        .await
        .unwrap();
    let e = ok(&h, usage("a", 2)).await;
    assert_eq!(
        e.outcome.balance.available,
        units(1),
        "the first store saw the other's grant"
    );
    other.submit(usage("a", 1)).await.unwrap();
    assert_eq!(
        rejected(&h, usage("a", 1)).await,
        Rejection::InsufficientBalance,
        "and its usage"
    );
    let state = h.store.account(&id("a")).await.unwrap().unwrap();
    assert_eq!(
        (state.totals.granted, state.totals.used),
        (units(8), units(8))
    );
}

/// Two handles on one database (two nodes on PostgreSQL, the server and the
/// CLI on SQLite) racing on the same accounts: every account is created
/// once, a shared balance is never overspent, and an idempotent retry sent
/// to both applies once.
async fn two_handles_race_on_the_same_accounts(h: Harness) {
    let other = (h.reopen)();
    let stores = [h.store.clone(), other];
    let mut tasks = Vec::new();
    for i in 0..20 {
        for store in &stores {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.submit(create(&format!("new{i}"))).await
            }));
        }
    }
    let (mut created, mut exists) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(ExecError::Rejected(Rejection::AccountExists)) => exists += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        (created, exists),
        (20, 20),
        "each account created exactly once"
    );

    ok(&h, create("shared")).await;
    ok(&h, grant("shared", 60, GrantExpiry::Never)).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        for store in &stores {
            let store = store.clone();
            // Half the requests are the same keyed request sent to both
            // handles: a client retrying on another node.
            let r = if i % 2 == 0 {
                keyed(usage("shared", 1), &format!("retry{i}"))
            } else {
                usage("shared", 1)
            };
            tasks.push(tokio::spawn(async move { store.submit(r).await }));
        }
    }
    let (mut applied, mut replayed, mut refused) = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(e) if e.replayed => replayed += 1,
            Ok(_) => applied += 1,
            Err(ExecError::Rejected(Rejection::InsufficientBalance)) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(applied, 60, "exactly the balance was spent");
    assert_eq!(applied + replayed + refused, 200);
    let state = h.store.account(&id("shared")).await.unwrap().unwrap();
    assert_eq!(state.totals.used, units(60));
    assert_eq!(
        events_of(&h, "shared", EventKind::Used).await,
        60,
        "one event per applied usage"
    );
}

/// Two handles sweeping at once expire each grant once.
async fn concurrent_sweeps_expire_once(h: Harness) {
    let other = (h.reopen)();
    for i in 0..30 {
        let name = format!("due{i}");
        ok(&h, create(&name)).await;
        ok(&h, grant(&name, 2, GrantExpiry::AfterSecs(60))).await;
    }
    h.clock.advance_secs(61);
    let now = h.clock.now();
    let (a, b) = tokio::join!(h.store.sweep_due(now, 1_000), other.sweep_due(now, 1_000));
    assert!(a.unwrap() + b.unwrap() >= 30, "every due account was swept");
    for i in 0..30 {
        let name = format!("due{i}");
        let expired = events_of(&h, &name, EventKind::GrantExpired).await;
        assert_eq!(expired, 1, "{name} expired once");
    }
    assert!(h.store.due_accounts(now, 100).await.unwrap().is_empty());
}

/// Open holds past their expiry are found by the sweeper, though they do
/// not count in `next_due`; resolved holds are not, and a swept hold is
/// stored as expired.
async fn expired_holds_are_swept(h: Harness) {
    funded(&h, &["a", "b"], 10).await;
    ok(&h, lock("a", "ha1", 4, 30)).await;
    ok(&h, lock("a", "ha2", 3, 30)).await;
    ok(&h, lock("b", "hb1", 2, 60)).await;
    ok(&h, lock("b", "hb2", 1, 10)).await;
    ok(&h, settle("b", "hb2", 1)).await;
    h.clock.advance_secs(29);
    assert!(due_now(&h).await.is_empty());
    h.clock.advance_secs(1);
    assert_eq!(
        due_now(&h).await,
        vec![id("a")],
        "two expired holds, one account; b's settled hold is not due"
    );
    h.clock.advance_secs(30);
    let mut due = due_now(&h).await;
    due.sort();
    assert_eq!(due, vec![id("a"), id("b")]);
    assert_eq!(
        h.store.due_accounts(h.clock.now(), 1).await.unwrap().len(),
        1
    );
    assert_eq!(h.store.sweep_due(h.clock.now(), 10).await.unwrap(), 2);
    assert!(due_now(&h).await.is_empty());
    for hold in ["ha1", "ha2", "hb1"] {
        let stored = h.store.hold(hold).await.unwrap().unwrap();
        assert_eq!(stored.status, HoldStatus::Expired, "{hold}");
    }
    assert_eq!(available(&h, "a").await, units(10));
    assert_eq!(available(&h, "b").await, units(9));
    assert_eq!(events_of(&h, "a", EventKind::HoldExpired).await, 2);
}

/// A `next_due` stored by an older formula (which counted open holds) is
/// early, never late: the sweeper visits the account once, finds nothing
/// to change, and stores the value the formula gives now.
async fn a_sweep_rewrites_a_stale_next_due(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, grant("a", 10, GrantExpiry::Never)).await;
    store_next_due(&h, "a", T0 + 1_000).await;
    h.clock.advance_secs(2);
    assert_eq!(due_now(&h).await, vec![id("a")]);
    let events = event_count(&h, "a").await;
    assert_eq!(h.store.sweep_due(h.clock.now(), 10).await.unwrap(), 1);
    assert!(due_now(&h).await.is_empty());
    assert_eq!(event_count(&h, "a").await, events, "nothing to change");
    assert_eq!(available(&h, "a").await, units(10));
}

/// Writes `accounts.next_due` behind the store's back, as an older build
/// left it.
async fn store_next_due(h: &Harness, account: &str, millis: i64) {
    if let Some(dir) = &h._dir {
        let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
        let sql = "UPDATE accounts SET next_due = ?2 WHERE id = ?1";
        assert_eq!(
            conn.execute(sql, rusqlite::params![account, millis])
                .unwrap(),
            1
        );
    } else {
        let url = &h._schema.as_ref().unwrap().url;
        let (c, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let sql = "UPDATE accounts SET next_due = $2 WHERE id = $1";
        assert_eq!(c.execute(sql, &[&account, &millis]).await.unwrap(), 1);
    }
}

/// An account's history, paged by the cursor a page hands out, holds every
/// event of the account once, newest first, whichever path wrote it: one
/// batch interleaving accounts, a credential change (written beside the
/// ledger batches), and another handle on the same database. A cursor that
/// is not one of the account's own events still pages correctly.
async fn event_history_pages_through_every_write_path(h: Harness) {
    ok(&h, create("a")).await;
    ok(&h, create("b")).await;
    let mut batch = vec![
        grant("a", 100, GrantExpiry::Never),
        grant("b", 100, GrantExpiry::Never),
    ];
    for _ in 0..5 {
        batch.push(usage("a", 1));
        batch.push(usage("b", 1));
    }
    for r in h.store.submit_many(batch).await {
        r.unwrap();
    }
    let key = CredentialKey::parse("sk_test_history_0123456789", false).unwrap();
    h.store
        .add_credential(&id("a"), key, h.clock.now())
        .await
        .unwrap()
        .unwrap();
    ok(&h, usage("a", 1)).await;
    let other = (h.reopen)();
    other.submit(usage("a", 1)).await.unwrap();
    other.submit(usage("b", 1)).await.unwrap();
    ok(&h, usage("a", 1)).await;
    // created, granted, 5 used, credential added, 3 used
    let all = h.store.events(&id("a"), None, PAGE_SIZE_MAX).await.unwrap();
    assert_eq!(all.len(), 11, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    assert!(all.iter().all(|e| e.account_id == id("a")));
    assert_eq!(all[3].event.kind, EventKind::CredentialAdded);
    assert_eq!(all[10].event.kind, EventKind::AccountCreated);
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = h.store.events(&id("a"), before, 3).await.unwrap();
        before = page.last().map(|e| e.seq);
        let last = page.len() < 3;
        paged.extend(page);
        if last {
            break;
        }
    }
    let seqs = |v: &[StoredEvent]| v.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(&paged),
        seqs(&all),
        "pages join up without gaps or repeats"
    );
    let b = h.store.events(&id("b"), None, PAGE_SIZE_MAX).await.unwrap();
    assert_eq!(b.len(), 8);
    let foreign = b[4].seq; // one of b's events, in the middle of a's history
    let below = h
        .store
        .events(&id("a"), Some(foreign), PAGE_SIZE_MAX)
        .await
        .unwrap();
    let expected: Vec<i64> = seqs(&all).into_iter().filter(|s| *s < foreign).collect();
    assert!(!expected.is_empty() && expected.len() < all.len());
    assert_eq!(seqs(&below), expected);
    assert!(h
        .store
        .events(&id("nobody"), None, 10)
        .await
        .unwrap()
        .is_empty());
}

// ---- the backends ------------------------------------------------------------

/// The whole list of checks, once, for every backend.
macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        contract_for!(sqlite: $($check),*);
        contract_for!(postgres: $($check),*);
    };
}

macro_rules! contract_for {
    ($backend:ident: $($check:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(harness) = super::$backend(stringify!($check)).await else {
                        return;
                    };
                    super::$check(harness).await
                }
            )*
        }
    };
}

contract!(
    accounts_grants_and_usage,
    idempotent_replay_applies_once,
    duplicates_in_one_batch_apply_once,
    batch_applies_in_order,
    grants_expire_lazily_and_by_sweep,
    holds_resolve_once,
    holds_list_newest_first,
    concurrent_usage_never_overspends,
    acknowledged_writes_survive_restart,
    purge_forgets_old_keys,
    purge_takes_every_old_key,
    settings_round_trip,
    accounts_page_by_id,
    random_retries_apply_once,
    credentials_name_accounts,
    open_holds_across_accounts,
    writes_of_another_handle_are_seen,
    two_handles_race_on_the_same_accounts,
    concurrent_sweeps_expire_once,
    expired_holds_are_swept,
    a_sweep_rewrites_a_stale_next_due,
    event_history_pages_through_every_write_path,
);

// ---- PostgreSQL only -----------------------------------------------------------

/// A batch does not wait for a row lock another node holds: the request on
/// the locked account is put off (and runs, once, when the lock is gone),
/// while a request on a free account in the same batch is answered at once.
/// A single-threaded runtime makes the batch deterministic: both jobs are
/// queued before the writer first runs.
#[tokio::test(flavor = "current_thread")]
async fn postgres_locked_account_does_not_hold_up_the_batch() {
    use std::task::Poll;
    let Some(h) = postgres("postgres_locked_account_does_not_hold_up_the_batch").await else {
        return;
    };
    funded(&h, &["locked", "free"], 10).await;
    // Another node's transaction, holding the row lock.
    let url = &h._schema.as_ref().unwrap().url;
    let (other, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    other.batch_execute("BEGIN").await.unwrap();
    other
        .execute(
            "SELECT id FROM accounts WHERE id = 'locked' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();

    let mut on_locked = h.store.submit(usage("locked", 1));
    let on_free = h.store.submit(usage("free", 1));
    // Queue the first job without giving the writer a turn.
    std::future::poll_fn(|cx| {
        assert!(on_locked.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    let guard = std::time::Duration::from_secs(30);
    let free = tokio::time::timeout(guard, on_free).await;
    let mut ran_early = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = on_locked.as_mut().poll(cx) {
            ran_early = Some(r);
        }
        Poll::Ready(())
    })
    .await;
    let locked_ran_early = ran_early.is_some();
    // Let go of the lock and let the writer finish before asserting
    // anything: a failure that left a transaction open would leave the
    // schema's drop waiting on it forever.
    other.batch_execute("COMMIT").await.unwrap();
    let locked = match ran_early {
        Some(r) => r,
        None => tokio::time::timeout(guard, on_locked)
            .await
            .expect("the put-off request runs once the lock is gone"),
    };
    let free = free.expect("the free account's request must not wait for the other lock");
    assert!(free.is_ok(), "{free:?}");
    assert!(
        !locked_ran_early,
        "the locked account's request cannot run while the lock is held"
    );
    assert!(locked.is_ok(), "{locked:?}");
    for name in ["locked", "free"] {
        assert_eq!(available(&h, name).await, units(9), "{name}: applied once");
        assert_eq!(
            event_count(&h, name).await,
            3,
            "{name}: created, granted, used"
        );
    }
}

// ---- SQLite only ----------------------------------------------------------------

/// The WAL file of the SQLite database at `db`.
fn wal_file(db: &std::path::Path) -> std::fs::File {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::File::open(std::path::PathBuf::from(wal)).unwrap()
}

/// The WAL's header: checkpoint sequence number and first salt, which SQLite
/// changes each time the WAL starts over from its beginning.
fn wal_generation(db: &std::path::Path) -> [u8; 8] {
    use std::io::Read;
    let mut header = [0u8; 20];
    wal_file(db).read_exact(&mut header).unwrap();
    header[12..20].try_into().unwrap()
}

fn wal_bytes(db: &std::path::Path) -> u64 {
    wal_file(db).metadata().unwrap().len()
}

/// Under a steady stream of writes the WAL still starts over (the checkpoint
/// thread copies and flushes it, the writer catches up the last frames), so
/// it cannot grow without bound, and nothing written across the restart of
/// the WAL is lost, in the running store or after reopening the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_starts_over_under_steady_writes() {
    const ACCOUNTS: usize = 4_000;
    const BATCH: usize = 1_000;
    let (_dir, path, clock) = fresh_sqlite_file();
    let store = SqliteStore::open(&path, clock.clone()).unwrap();
    let name = |i: usize| format!("acct-{i}");
    for chunk in (0..ACCOUNTS).collect::<Vec<_>>().chunks(BATCH / 2) {
        let setup = chunk
            .iter()
            .flat_map(|&i| {
                [
                    create(&name(i)),
                    grant(&name(i), 1_000_000, GrantExpiry::Never),
                ]
            })
            .collect();
        assert!(store.submit_many(setup).await.iter().all(|r| r.is_ok()));
    }
    let first = wal_generation(&path);
    // Each batch spends on accounts spread over the file, so it dirties
    // hundreds of pages. Three tasks keep the writer's queue full, so the
    // background checkpoints never find the WAL fully copied at the moment
    // a write begins; this task checks the WAL after each of its batches.
    let store = Arc::new(store);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = move |n: usize| -> Vec<Request> {
        (0..BATCH)
            .map(|k| usage(&name((n * BATCH + k) * 7919 % ACCOUNTS), 1))
            .collect()
    };
    let writers: Vec<_> = (1..=3)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut batches = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let results = store.submit_many(load(w * 100_000 + batches)).await;
                    assert!(results.iter().all(|r| r.is_ok()));
                    batches += 1;
                }
                batches
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut batches = 0;
    let mut failure = None;
    while wal_generation(&path) == first {
        // The store asks for a catch-up at 16k frames (~17 MB); what is
        // written while the checkpoint thread flushes comes on top.
        let wal = wal_bytes(&path);
        if wal >= 96 << 20 {
            failure = Some(format!("the WAL grew to {wal} bytes without starting over"));
        } else if std::time::Instant::now() >= deadline {
            failure = Some(format!("the WAL never started over in {batches} batches"));
        }
        if failure.is_some() {
            break;
        }
        let results = store.submit_many(load(batches)).await;
        assert!(results.iter().all(|r| r.is_ok()));
        batches += 1;
    }
    // Stop the other writers before failing: the store must close before
    // its directory goes.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        batches += w.await.unwrap();
    }
    if let Some(failure) = failure {
        panic!("{failure}");
    }
    let mut spent = batches * BATCH;
    // A few more batches land in the new WAL.
    for b in 0..3 {
        assert!(store.submit_many(load(b)).await.iter().all(|r| r.is_ok()));
        spent += BATCH;
    }
    let store = Arc::into_inner(store).unwrap();
    let used = |states: Vec<AccountState>| {
        states
            .iter()
            .map(|s| s.totals.used)
            .fold(Amount::ZERO, |a, b| a.checked_add(b).unwrap())
    };
    let all = |store: SqliteStore| async move {
        let mut states = Vec::new();
        let mut after: Option<AccountId> = None;
        loop {
            let page = store.accounts(after.as_ref(), 500).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.account.id.clone());
            states.extend(page);
        }
        (states, store)
    };
    let expected = units(spent as i64);
    let (states, store) = all(store).await;
    assert_eq!(states.len(), ACCOUNTS);
    assert_eq!(used(states), expected, "every usage counted once");
    drop(store);
    let (states, _store) = all(SqliteStore::open(&path, clock).unwrap()).await;
    assert_eq!(used(states), expected, "and still after reopening the file");
}

/// Every event of an account, walking its chain page by page.
async fn all_events(store: &dyn Store, name: &str) -> Vec<StoredEvent> {
    let mut out: Vec<StoredEvent> = Vec::new();
    loop {
        let before = out.last().map(|e| e.seq);
        let page = store.events(&id(name), before, 100).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// A change to an existing account writes its row into the account log's
/// ring, over a row no longer its account's newest (`sqlite/account_log.rs`).
/// With two handles on the file (the server and the CLI) writing several
/// times the log's slack, each catching up with the other's rows, and
/// credential changes writing rows outside batches: every usage counts
/// once, every event stays on its account's chain, the log stays short, and
/// all of it holds after reopening the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_account_log_ring_is_exact() {
    const ACCOUNTS: usize = 400;
    const ROUNDS: usize = 40;
    const BATCH_A: usize = 500;
    const BATCH_B: usize = 200;
    let (_dir, path, clock) = fresh_sqlite_file();
    let a = SqliteStore::open(&path, clock.clone()).unwrap();
    let b = SqliteStore::open(&path, clock.clone()).unwrap();
    let name = |i: usize| format!("acct-{i}");
    let setup = (0..ACCOUNTS)
        .flat_map(|i| {
            [
                create(&name(i)),
                grant(&name(i), 1_000_000, GrantExpiry::Never),
            ]
        })
        .collect();
    assert!(a.submit_many(setup).await.iter().all(|r| r.is_ok()));
    let mut first_events = Vec::new();
    for i in 0..ACCOUNTS {
        first_events.push(all_events(&a, &name(i)).await.len());
    }
    let mut spent = [0usize; ACCOUNTS];
    let mut credentials = [0usize; ACCOUNTS];
    for round in 0..ROUNDS {
        // A batch writes one row per account it changes. The first round
        // changes every account; later ones only the first half, so the
        // others' rows are still their newest each time the ring comes
        // round to them.
        let spread = if round == 0 { ACCOUNTS } else { ACCOUNTS / 2 };
        let mut pick = |n: usize, stride: usize| -> Vec<Request> {
            (0..n)
                .map(|k| {
                    let i = (round * n + k) * stride % spread;
                    spent[i] += 1;
                    usage(&name(i), 1)
                })
                .collect()
        };
        let (for_a, for_b) = (pick(BATCH_A, 7919), pick(BATCH_B, 104_729));
        let (ra, rb) = tokio::join!(a.submit_many(for_a), b.submit_many(for_b));
        assert!(ra.iter().chain(rb.iter()).all(|r| r.is_ok()));
        if round % 6 == 0 {
            let i = round * 5 % ACCOUNTS;
            let key = CredentialKey::parse(&format!("pub-{round}"), true).unwrap();
            b.add_credential(&id(&name(i)), key, clock.now())
                .await
                .unwrap()
                .unwrap();
            credentials[i] += 1;
        }
    }
    let check = |store: SqliteStore, when: &'static str| {
        let (first_events, spent, credentials) = (first_events.clone(), spent, credentials);
        async move {
            for i in 0..ACCOUNTS {
                let state = store.account(&id(&name(i))).await.unwrap().unwrap();
                assert_eq!(
                    state.totals.used,
                    units(spent[i] as i64),
                    "{when}: acct-{i}"
                );
                assert_eq!(
                    all_events(&store, &name(i)).await.len(),
                    first_events[i] + spent[i] + credentials[i],
                    "{when}: acct-{i}'s chain"
                );
            }
        }
    };
    check(a, "the first handle").await;
    check(b, "the second handle").await;
    let (rows, written): (i64, i64) = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*), max(written) FROM account_log", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let slack = reckon_store::sqlite::LOG_SLACK_ROWS;
    assert!(written > 2 * slack, "only {written} rows written");
    assert!(
        rows <= slack + (ACCOUNTS * 2 + BATCH_A + BATCH_B) as i64,
        "{rows} rows in the log after {written} written"
    );
    check(SqliteStore::open(&path, clock).unwrap(), "after reopening").await;
}
