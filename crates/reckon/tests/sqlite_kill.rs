//! Acknowledged writes survive SIGKILL while the SQLite account log's ring
//! is being rewritten.
//!
//! A real `reckon serve` takes enough usage, spread over enough accounts,
//! that the writer fills the account log's ring and comes round it
//! (`sqlite/account_log.rs`): rows still an account's newest are skipped,
//! the rest overwritten. The server is killed without a chance to checkpoint or
//! close, restarted on the same file, and every account must show exactly
//! the usage that was acknowledged.

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
    let setup: Vec<Value> = (0..ACCOUNTS)
        .flat_map(|i| {
            [
                json!({"op": "create_account", "account_id": name(i), "unit": "credits"}),
                json!({"op": "grant", "account_id": name(i), "amount": "1000000"}),
            ]
        })
        .collect();
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
