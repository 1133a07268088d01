//! Several Reckon nodes on one PostgreSQL database (issue: PostgreSQL
//! backend). Three real `reckon serve` processes share a fresh schema;
//! clients hammer a few hot accounts through all of them with usage, holds,
//! settles, releases and idempotent retries, and one node is killed with
//! SIGKILL mid-run. Clients retry an unanswered request on another node with
//! the same idempotency key, as they would behind a load balancer. Then the
//! database must show: no account below zero, every acknowledged operation
//! applied exactly once, and the events adding up to the balances.
//!
//! Skipped (with the reason printed) when there is no PostgreSQL server,
//! except under `CI=true`.

mod support;

use reckon_core::{AccountId, Amount, EventKind};
use reckon_store::postgres::scratch::ScratchSchema;
use reckon_store::{PostgresStore, Store, SystemClock};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const ADMIN: &str = "multinode-admin";
const SERVICE: &str = "multinode-service";
const NODES: usize = 3;
const ACCOUNTS: usize = 4;
/// Units granted per account: less than the clients try to spend, so
/// balances run dry and refusals are part of the test.
const GRANT_UNITS: i64 = 400;
const CLIENTS: usize = 16;
const OPS_PER_CLIENT: usize = 60;
/// The victim node is killed once this many operations were acknowledged.
const KILL_AFTER_OPS: usize = CLIENTS * OPS_PER_CLIENT / 3;

fn start_node(url: &str) -> support::Server {
    let env = [
        ("RECKON_ADMIN_KEY", ADMIN),
        ("RECKON_API_KEY", SERVICE),
        ("RECKON_LOG", "warn"),
    ];
    support::serve(url, &env, &[])
}

/// What the client was told about one keyed request.
#[derive(Clone, Debug, PartialEq)]
enum Ack {
    Applied(EventKind),
    Refused,
}

struct Cluster {
    bases: Vec<String>,
    http: reqwest::Client,
    /// Requests sent again to another node because one did not answer.
    moved: AtomicUsize,
}

impl Cluster {
    /// Sends one keyed request, starting at node `start`, moving on to the
    /// next node whenever there is no answer or a 5xx, until one answers.
    async fn send(&self, start: usize, path: &str, body: &Value) -> (u16, Value, bool) {
        for attempt in 0..60 {
            let base = &self.bases[(start + attempt) % self.bases.len()];
            let sent = self
                .http
                .post(format!("{base}{path}"))
                .header("X-API-Key", SERVICE)
                .json(body)
                .send()
                .await;
            let Ok(response) = sent else {
                self.moved.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let status = response.status().as_u16();
            if status >= 500 {
                self.moved.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let replayed = response.headers().contains_key("idempotent-replayed");
            let body: Value = response.json().await.unwrap_or(Value::Null);
            return (status, body, replayed);
        }
        panic!("no node answered {path}");
    }
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_killed_nothing_lost_nothing_doubled() {
    let Some(schema) = ScratchSchema::for_tests("three_nodes_one_killed").await else {
        return;
    };
    let mut nodes: Vec<Option<support::Server>> =
        (0..NODES).map(|_| Some(start_node(&schema.url))).collect();
    let cluster = Arc::new(Cluster {
        bases: nodes
            .iter()
            .map(|n| n.as_ref().unwrap().base.clone())
            .collect(),
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .unwrap(),
        moved: AtomicUsize::new(0),
    });
    let admin = |path: &str| {
        cluster
            .http
            .post(format!("{}{path}", cluster.bases[0]))
            .header("X-Admin-Key", ADMIN)
    };
    for a in 0..ACCOUNTS {
        let r = admin("/v1/accounts")
            .json(&json!({"id": format!("hot{a}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = admin(&format!("/v1/accounts/hot{a}/grants"))
            .json(&json!({"amount": GRANT_UNITS}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    let acks: Arc<Mutex<HashMap<String, (String, Ack)>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (cluster, acks, done) = (cluster.clone(), acks.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let record = |key: &str, account: &str, ack: Ack| {
                let old = acks
                    .lock()
                    .unwrap()
                    .insert(key.to_owned(), (account.to_owned(), ack));
                assert!(old.is_none(), "key {key} used twice");
            };
            for n in 0..OPS_PER_CLIENT {
                let seed = fnv(&format!("{c}/{n}"));
                let account = format!("hot{}", seed % ACCOUNTS as u64);
                let start = (seed >> 8) as usize;
                if seed >> 16 & 1 == 0 {
                    let key = format!("u-{c}-{n}");
                    let body = json!({"amount": 1 + (seed >> 20) % 3, "idempotency_key": key});
                    let path = format!("/v1/accounts/{account}/usage");
                    let (status, first, _) = cluster.send(start, &path, &body).await;
                    let ack = match status {
                        200 | 201 => Ack::Applied(EventKind::Used),
                        402 => Ack::Refused,
                        s => panic!("usage answered {s}: {first}"),
                    };
                    // A client that did not see the answer retries elsewhere.
                    if ack != Ack::Refused && seed >> 24 & 3 == 0 {
                        let (s, again, replayed) = cluster.send(start + 1, &path, &body).await;
                        assert_eq!((s, replayed), (status, true), "{again}");
                        assert_eq!(again, first, "a replay answers what the first call did");
                    }
                    record(&key, &account, ack);
                } else {
                    let key = format!("l-{c}-{n}");
                    let body = json!({"account_id": account, "amount": 5, "idempotency_key": key});
                    let (status, locked, _) = cluster.send(start, "/v1/holds", &body).await;
                    if status == 402 {
                        record(&key, &account, Ack::Refused);
                        done.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    assert_eq!(status, 201, "lock answered {status}: {locked}");
                    record(&key, &account, Ack::Applied(EventKind::Locked));
                    let hold = locked["id"].as_str().unwrap().to_owned();
                    let (path, body, kind, key) = if seed >> 28 & 3 == 0 {
                        let key = format!("r-{c}-{n}");
                        let body = json!({"idempotency_key": key});
                        (
                            format!("/v1/holds/{hold}/release"),
                            body,
                            EventKind::Released,
                            key,
                        )
                    } else {
                        let key = format!("s-{c}-{n}");
                        let body = json!({"amount": (seed >> 32) % 6, "idempotency_key": key});
                        (
                            format!("/v1/holds/{hold}/settle"),
                            body,
                            EventKind::Settled,
                            key,
                        )
                    };
                    let (status, resolved, _) = cluster.send(start + 2, &path, &body).await;
                    assert_eq!(status, 200, "{path} answered {status}: {resolved}");
                    if seed >> 40 & 3 == 0 {
                        let (s, _, replayed) = cluster.send(start, &path, &body).await;
                        assert_eq!((s, replayed), (200, true));
                    }
                    record(&key, &account, Ack::Applied(kind));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Kill one node mid-run, without warning.
    while done.load(Ordering::Relaxed) < KILL_AFTER_OPS {
        if let Some(i) = clients.iter().position(|c| c.is_finished()) {
            // A client stopped early: it failed; surface its panic.
            clients.remove(i).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(nodes[NODES - 1].take()); // SIGKILL
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(done.load(Ordering::Relaxed), CLIENTS * OPS_PER_CLIENT);
    let moved = cluster.moved.load(Ordering::Relaxed);
    assert!(moved > 0, "requests reached the killed node after it died");
    println!("{moved} requests moved to another node after the kill");
    drop(nodes);

    // Everything below is read back from the database itself.
    let store = PostgresStore::connect(&schema.url, Arc::new(SystemClock))
        .await
        .unwrap();
    let now = reckon_store::Clock::now(&SystemClock);
    let acks = acks.lock().unwrap().clone();
    let mut applied_keys = 0;
    for a in 0..ACCOUNTS {
        let id = AccountId::parse(&format!("hot{a}")).unwrap();
        let state = store.account(&id).await.unwrap().unwrap();
        state.check_invariants().unwrap();
        let balance = state.balance_at(now);
        assert!(balance.available >= Amount::ZERO);
        let units = |n: i64| Amount::from_units(n).unwrap();
        assert!(
            state.totals.used <= units(GRANT_UNITS),
            "never overspent: {balance:?}"
        );

        let mut events = Vec::new();
        let mut before = None;
        loop {
            let page = store.events(&id, before, 500).await.unwrap();
            let Some(last) = page.last() else { break };
            before = Some(last.seq);
            events.extend(page);
        }
        // The events add up to the balance.
        let sum = |kinds: &[EventKind]| {
            events
                .iter()
                .filter(|e| kinds.contains(&e.event.kind))
                .fold(Amount::ZERO, |s, e| s.checked_add(e.event.amount).unwrap())
        };
        assert_eq!(sum(&[EventKind::Granted]), state.totals.granted);
        assert_eq!(
            sum(&[EventKind::Used, EventKind::Settled]),
            state.totals.used
        );
        let open: Amount = state
            .holds
            .iter()
            .filter(|h| h.status_at(now) == reckon_core::HoldStatus::Held)
            .fold(Amount::ZERO, |s, h| s.checked_add(h.amount).unwrap());
        assert_eq!(open, balance.held);
        assert_eq!(open, Amount::ZERO, "every hold was settled or released");
        // The newest event's balance is the account's balance.
        assert_eq!(events[0].event.available_after, balance.available);

        // Every acknowledged operation applied exactly once; refusals not at all.
        let mut by_key: HashMap<&str, Vec<EventKind>> = HashMap::new();
        for e in &events {
            if let Some(k) = &e.idempotency_key {
                by_key.entry(k).or_default().push(e.event.kind);
            }
        }
        for (key, (account, ack)) in &acks {
            if account != id.as_str() {
                continue;
            }
            let seen = by_key.remove(key.as_str()).unwrap_or_default();
            match ack {
                Ack::Applied(kind) => {
                    assert_eq!(seen, vec![*kind], "{key} applied exactly once");
                    applied_keys += 1;
                }
                Ack::Refused => assert!(seen.is_empty(), "{key} was refused but applied"),
            }
        }
        assert!(
            by_key.is_empty(),
            "events no client was told about: {by_key:?}"
        );
    }
    assert!(
        applied_keys > CLIENTS * OPS_PER_CLIENT / 2,
        "{applied_keys}"
    );
    let refused = acks.values().filter(|(_, a)| *a == Ack::Refused).count();
    assert!(refused > 0, "balances ran dry at some point");
}
