//! `POST /v1/batch` against a real server.

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

async fn batch(app: &App, admin: bool, ops: Value) -> reqwest::Response {
    let req = if admin {
        app.admin(Method::POST, "/v1/batch")
    } else {
        app.service(Method::POST, "/v1/batch")
    };
    req.json(&json!({ "operations": ops }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn operations_apply_in_order_and_fail_alone() {
    let app = spawn_app().await;
    let r = batch(
        &app,
        true,
        json!([
            {"op": "create_account", "account_id": "a", "unit": "MB"},
            {"op": "grant", "account_id": "a", "amount": "10", "valid_for_secs": 3600},
            {"op": "check", "account_id": "a", "amount": 10},
            {"op": "usage", "account_id": "a", "amount": 4, "idempotency_key": "u1"},
            {"op": "usage", "account_id": "a", "amount": 4, "idempotency_key": "u1"},
            {"op": "usage", "account_id": "a", "amount": 100},
            {"op": "usage", "account_id": "a", "amount": -1},
            {"op": "check", "account_id": "a", "amount": 7},
            {"op": "lock", "account_id": "a", "amount": 2},
            {"op": "fly", "account_id": "a"},
            {"op": "usage", "account_id": "a", "amount": 1, "colour": "red"},
            {"op": "settle", "hold_id": "no-such-hold", "amount": 1},
        ]),
    )
    .await;
    assert_eq!(r.status(), 200);
    let results: Value = r.json().await.unwrap();
    let r = results["results"].as_array().unwrap();
    let summary: Vec<(bool, u64, &str)> = r
        .iter()
        .map(|x| {
            (
                x["ok"].as_bool().unwrap(),
                x["status"].as_u64().unwrap(),
                x["error"]["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (true, 200, ""),
            (true, 200, ""),
            (true, 200, ""),
            (true, 200, ""),
            (true, 200, ""),
            (false, 402, "insufficient_balance"),
            (false, 400, "invalid_amount"),
            (true, 200, ""),
            (true, 200, ""),
            (false, 400, "invalid_op"),
            (false, 400, "invalid_json"),
            (false, 404, "hold_not_found"),
        ]
    );
    assert_eq!(r[2]["allowed"], true, "the check saw the grant before it");
    assert_eq!(r[4]["replayed"], true, "a replay inside the same batch");
    assert_eq!(r[7]["allowed"], false, "the check saw the usage before it");
    assert_eq!(r[7]["reason"], "insufficient_balance");
    assert_eq!(r[8]["balance"]["available"], "4");
    let message = r[10]["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("unknown field `colour`") && !message.contains("line"),
        "says what is wrong, not where in the operation's own text: {message}"
    );
    // Settle and release the hold from the first batch in a second one.
    let hold = r[8]["hold"]["id"].as_str().unwrap();
    let r: Value = batch(
        &app,
        false,
        json!([
            {"op": "settle", "hold_id": hold, "amount": "1.5"},
            {"op": "release", "hold_id": hold},
        ]),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r["results"][0]["hold"]["status"], "settled");
    assert_eq!(r["results"][1]["error"]["code"], "hold_already_settled");
    assert_eq!(app.available("a").await, "4.5");
    app.stop().await;
}

#[tokio::test]
async fn scopes_and_limits() {
    let app = spawn_app().await;
    app.create_account("a").await;
    let r: Value = batch(
        &app,
        false,
        json!([
            {"op": "grant", "account_id": "a", "amount": 1},
            {"op": "create_account", "account_id": "b"},
        ]),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        r["results"][0]["status"], 403,
        "a service key cannot grant, even in a batch"
    );
    assert_eq!(r["results"][1]["status"], 403);
    let r = batch(&app, true, json!([])).await;
    assert_eq!(error_code(r).await, (400, "invalid_batch".into()));
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"op": "check", "account_id": "a", "amount": 1}))
        .collect();
    let r = batch(&app, true, Value::Array(too_many)).await;
    assert_eq!(error_code(r).await, (400, "invalid_batch".into()));
    let full: Vec<Value> = (0..1000).map(|i| json!({"op": "usage", "account_id": "a", "amount": 1, "idempotency_key": format!("k{i}")})).collect();
    app.grant("a", json!(1000)).await;
    let r: Value = batch(&app, false, Value::Array(full))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["ok"] == true),
        "1,000 operations fit one batch"
    );
    assert_eq!(app.available("a").await, "0");
    // A batch may be larger than an ordinary body, up to its own limit.
    let padded = |bytes: usize| {
        let ops = r#"{"operations": [{"op": "check", "account_id": "a", "amount": 1}]"#;
        format!("{ops}{}}}", " ".repeat(bytes - ops.len() - 1))
    };
    let send = |body: String| {
        app.service(Method::POST, "/v1/batch")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = send(padded(reckon_server::wire::BODY_BYTES_MAX * 2))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let over = reckon_server::native::batch::BATCH_BODY_BYTES_MAX + 1;
    let r = send(padded(over)).await.unwrap();
    assert_eq!(error_code(r).await, (413, "payload_too_large".into()));
    app.stop().await;
}
