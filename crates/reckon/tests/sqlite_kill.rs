//! Acknowledged writes survive SIGKILL on SQLite.
//!
//! - While the account log's ring is being rewritten: a real `reckon serve`
//!   takes enough usage, spread over enough accounts, that the writer fills
//!   the account log's ring and comes round it (`sqlite/account_log.rs`):
//!   rows still an account's newest are skipped, the rest overwritten. The
//!   server is killed without a chance to checkpoint or close, restarted on
//!   the same file, and every account must show exactly the usage that was
//!   acknowledged.
//! - In the middle of locks and settles: the server is killed while
//!   requests are in flight. Every acknowledged lock and settle must be
//!   there after the restart, each account's holds must still list as a
//!   whole chain, newest first, and its balance must add up to its holds.

mod support;

use serde_json::{json, Value};

const ADMIN: &str = "kill-admin";
const ACCOUNTS: usize = 2_000;
/// Operations per `/v1/batch` call; each usage batch changes half the
/// accounts once each, so it writes 1,000 log rows.
const OPS: usize = ACCOUNTS / 2;
/// Enough batches to pass the ring's limit (two rows per account plus
/// `LOG_SLACK_ROWS`, ~8,100 rows here) and come round it.
const USAGE_BATCHES: usize = 16;

fn start(database: &str) -> support::Server {
    let env = [("RECKON_ADMIN_KEY", ADMIN), ("RECKON_LOG", "warn")];
    support::serve(database, &env, &[])
}

fn name(i: usize) -> String {
    format!("acct-{i}")
}

/// Batch operations creating accounts 0..n, each granted 1,000,000.
fn funded_accounts(n: usize) -> Vec<Value> {
    (0..n)
        .flat_map(|i| {
            [
                json!({"op": "create_account", "account_id": name(i), "unit": "credits"}),
                json!({"op": "grant", "account_id": name(i), "amount": "1000000"}),
            ]
        })
        .collect()
}

/// Runs one `/v1/batch` call and asserts every operation succeeded.
async fn batch(client: &reqwest::Client, base: &str, ops: Vec<Value>) {
    let resp = client
        .post(format!("{base}/v1/batch"))
        .header("X-Admin-Key", ADMIN)
        .json(&json!({ "operations": ops }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    for r in body["results"].as_array().unwrap() {
        assert_eq!(r["ok"], true, "{r}");
    }
}

#[tokio::test]
async fn acknowledged_usage_survives_sigkill_while_the_ring_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reckon.db");
    let database = format!("sqlite:{}", path.display());
    let client = reqwest::Client::new();
    let server = start(&database);
    let setup = funded_accounts(ACCOUNTS);
    for chunk in setup.chunks(OPS) {
        batch(&client, &server.base, chunk.to_vec()).await;
    }
    let mut used = vec![0u64; ACCOUNTS];
    for b in 0..USAGE_BATCHES {
        // The first batch changes the upper half, the others the lower
        // half: the upper half's rows are still their accounts' newest when
        // the ring comes round to them, and are skipped.
        let ops = (0..OPS)
            .map(|k| {
                let i = if b == 0 { OPS + k } else { k };
                used[i] += 1;
                json!({"op": "usage", "account_id": name(i), "amount": 1})
            })
            .collect();
        batch(&client, &server.base, ops).await;
    }
    drop(server);

    let (written, rows): (i64, i64) = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT max(written), count(*) FROM account_log", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(written > rows, "the ring never came round ({rows} rows)");

    let server = start(&database);
    for (i, expected) in used.iter().enumerate() {
        let account: Value = client
            .get(format!("{}/v1/accounts/{}", server.base, name(i)))
            .header("X-Admin-Key", ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            account["balance"]["used"],
            expected.to_string(),
            "{} after the restart",
            name(i)
        );
    }
}

/// One acknowledged lock, and whether its settle was acknowledged too.
#[derive(Clone, Debug)]
struct Acked {
    id: String,
    account: usize,
    amount: u64,
    settled: bool,
}

const HOLD_ACCOUNTS: usize = 40;
const HOLD_CLIENTS: usize = 16;
/// Acknowledged locks after which the server is killed, with every client
/// still sending.
const LOCKS_BEFORE_KILL: usize = 3_000;

/// Notifies when dropped: when a client's task ends, however it ends.
struct WakeOnDrop(std::sync::Arc<tokio::sync::Notify>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// The answer to a POST, or `None` once the server refuses or is gone.
async fn post(client: &reqwest::Client, url: String, body: Value) -> Option<Value> {
    let resp = client
        .post(url)
        .header("X-Admin-Key", ADMIN)
        .json(&body)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    let resp = client
        .get(&url)
        .header("X-Admin-Key", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.unwrap()
}

fn units(v: &Value) -> u64 {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn acknowledged_holds_survive_sigkill_mid_load() {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite:{}", dir.path().join("reckon.db").display());
    let client = reqwest::Client::new();
    let server = start(&database);
    batch(&client, &server.base, funded_accounts(HOLD_ACCOUNTS)).await;

    // Each client locks 1-3 on an account, and settles every other hold
    // for 1, until the server stops answering.
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let wake = Arc::new(tokio::sync::Notify::new());
    let clients: Vec<_> = (0..HOLD_CLIENTS)
        .map(|c| {
            let (client, base) = (client.clone(), server.base.clone());
            let (acked, wake) = (acked.clone(), wake.clone());
            tokio::spawn(async move {
                // A client that stops wakes the test too, so a server that
                // refuses early fails the test instead of hanging it.
                let _wake = WakeOnDrop(wake.clone());
                for n in 0.. {
                    let account = (c * 7 + n * 3) % HOLD_ACCOUNTS;
                    let amount = 1 + (n % 3) as u64;
                    let body = json!({"account_id": name(account), "amount": amount});
                    let Some(hold) = post(&client, format!("{base}/v1/holds"), body).await else {
                        return;
                    };
                    let id = hold["id"].as_str().unwrap().to_owned();
                    let index = {
                        let mut acked = acked.lock().unwrap();
                        acked.push(Acked {
                            id: id.clone(),
                            account,
                            amount,
                            settled: false,
                        });
                        if acked.len() == LOCKS_BEFORE_KILL {
                            wake.notify_one();
                        }
                        acked.len() - 1
                    };
                    if n % 2 == 0 {
                        let url = format!("{base}/v1/holds/{id}/settle");
                        if post(&client, url, json!({"amount": 1})).await.is_none() {
                            return;
                        }
                        acked.lock().unwrap()[index].settled = true;
                    }
                }
            })
        })
        .collect();
    wake.notified().await;
    let before_kill = acked.lock().unwrap().len();
    drop(server); // SIGKILL, with requests in flight
    assert!(
        before_kill >= LOCKS_BEFORE_KILL,
        "a client stopped after {before_kill} locks, before the kill"
    );
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let server = start(&database);
    let base = &server.base;
    let mut by_account: HashMap<usize, Vec<&Acked>> = HashMap::new();
    for a in &acked {
        by_account.entry(a.account).or_default().push(a);
    }
    for account in 0..HOLD_ACCOUNTS {
        let who = name(account);
        let url = format!("{base}/v1/accounts/{who}/holds?limit=500");
        let listed = get(&client, url).await["holds"].as_array().unwrap().clone();
        assert!(listed.len() < 500, "all of {who}'s holds fit one page");
        // The whole chain, newest first, once each: an account's holds are
        // made in order, so their times never rise down the list.
        let ids: Vec<&str> = listed.iter().map(|h| h["id"].as_str().unwrap()).collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "{who}");
        let times: Vec<&str> = listed
            .iter()
            .map(|h| h["created_at"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "{who}: {times:?}");
        // Every acknowledged lock is there with its amount; an acknowledged
        // settle stuck.
        let found: HashMap<&str, (&str, u64)> = listed
            .iter()
            .map(|h| {
                let status = h["status"].as_str().unwrap();
                (h["id"].as_str().unwrap(), (status, units(&h["amount"])))
            })
            .collect();
        for a in by_account.get(&account).into_iter().flatten() {
            let got = found.get(a.id.as_str()).copied();
            let kept = match got {
                Some(("settled", amount)) => amount == a.amount,
                Some(("held", amount)) => amount == a.amount && !a.settled,
                _ => false,
            };
            assert!(
                kept,
                "{who} hold {} after the restart: {got:?} ({a:?})",
                a.id
            );
        }
        // The balance adds up to the holds: each open one holds its
        // amount, each settled one charged 1.
        let held_sum: u64 = listed
            .iter()
            .filter(|h| h["status"] == "held")
            .map(|h| units(&h["amount"]))
            .sum();
        let settled = listed.iter().filter(|h| h["status"] == "settled").count() as u64;
        let balance = get(&client, format!("{base}/v1/accounts/{who}")).await["balance"].clone();
        assert_eq!(units(&balance["held"]), held_sum, "{who}");
        assert_eq!(units(&balance["used"]), settled, "{who}");
        assert_eq!(
            units(&balance["available"]) + held_sum + settled,
            1_000_000,
            "{who}"
        );
        // The open ones list the same through their index, and each can
        // still be settled.
        let url = format!("{base}/v1/accounts/{who}/holds?status=held&limit=500");
        let open = get(&client, url).await["holds"].as_array().unwrap().clone();
        let open: Vec<&str> = open.iter().map(|h| h["id"].as_str().unwrap()).collect();
        let walked: Vec<&str> = listed
            .iter()
            .filter(|h| h["status"] == "held")
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        assert_eq!(open, walked, "{who}");
        for id in open {
            let url = format!("{base}/v1/holds/{id}/settle");
            assert!(
                post(&client, url, json!({"amount": 1})).await.is_some(),
                "{id}"
            );
        }
    }
}
