//! Holds and credentials over the native API, against a real server.

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

async fn lock(app: &App, account: &str, amount: Value, extra: Value) -> reqwest::Response {
    let mut body = json!({"account_id": account, "amount": amount});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    app.service(Method::POST, "/v1/holds")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn settle(app: &App, hold: &str, body: Value) -> reqwest::Response {
    app.service(Method::POST, &format!("/v1/holds/{hold}/settle"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn release(app: &App, hold: &str) -> reqwest::Response {
    app.service(Method::POST, &format!("/v1/holds/{hold}/release"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn lock_settle_release_flow() {
    let app = spawn_app().await;
    app.create_account("a").await;
    app.grant("a", json!(10)).await;
    let r = lock(&app, "a", json!("4"), json!({"ttl_secs": 60})).await;
    assert_eq!(r.status(), 201);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["status"], "held");
    assert_eq!(h["amount"], "4");
    assert_eq!(h["expires_at"], "2026-01-01T00:01:00.000Z");
    assert_eq!(h["balance"]["available"], "6");
    assert_eq!(h["balance"]["held"], "4");
    let id = h["id"].as_str().unwrap().to_owned();
    let r = settle(&app, &id, json!({"amount": "2.5"})).await;
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        (s["status"].as_str(), s["settled_amount"].as_str()),
        (Some("settled"), Some("2.5"))
    );
    assert_eq!(s["balance"]["available"], "7.5");
    let r = settle(&app, &id, json!({"amount": 1})).await;
    assert_eq!(error_code(r).await, (409, "hold_already_settled".into()));
    let r = release(&app, &id).await;
    assert_eq!(error_code(r).await, (409, "hold_already_settled".into()));
    // Release returns everything.
    let h: Value = lock(&app, "a", json!(3), json!({}))
        .await
        .json()
        .await
        .unwrap();
    let id2 = h["id"].as_str().unwrap().to_owned();
    let r = release(&app, &id2).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "released");
    let r = settle(&app, &id2, json!({"amount": 1})).await;
    assert_eq!(error_code(r).await, (409, "hold_already_released".into()));
    assert_eq!(app.available("a").await, "7.5");
    let got: Value = app
        .service(Method::GET, &format!("/v1/holds/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "settled");
    app.stop().await;
}

#[tokio::test]
async fn lock_errors() {
    let app = spawn_app().await;
    app.create_account("a").await;
    app.grant("a", json!(5)).await;
    let r = lock(&app, "a", json!(6), json!({})).await;
    assert_eq!(error_code(r).await, (402, "insufficient_balance".into()));
    let r = lock(&app, "nobody", json!(1), json!({})).await;
    assert_eq!(error_code(r).await, (404, "account_not_found".into()));
    for ttl in [0, 3_601] {
        let r = lock(&app, "a", json!(1), json!({"ttl_secs": ttl})).await;
        assert_eq!(
            error_code(r).await,
            (400, "invalid_ttl".into()),
            "ttl {ttl}"
        );
    }
    let r = lock(&app, "a", json!(0), json!({})).await;
    assert_eq!(error_code(r).await, (400, "invalid_amount".into()));
    let r = settle(&app, "no-such-hold", json!({"amount": 1})).await;
    assert_eq!(error_code(r).await, (404, "hold_not_found".into()));
    let r = release(&app, "no-such-hold").await;
    assert_eq!(error_code(r).await, (404, "hold_not_found".into()));
    // Release's body is optional, but what is sent must parse and fit.
    let release_with = |body: String| {
        app.service(Method::POST, "/v1/holds/no-such-hold/release")
            .body(body)
            .send()
    };
    let r = release_with("  \n".into()).await.unwrap();
    assert_eq!(error_code(r).await, (404, "hold_not_found".into()));
    let r = release_with("{\"colour\": 1}".into()).await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_json".into()));
    let big = format!("{{\"attributes\": \"{}\"}}", "x".repeat(wire_body_max()));
    let r = release_with(big).await.unwrap();
    assert_eq!(error_code(r).await, (413, "payload_too_large".into()));
    let r = app
        .service(Method::GET, "/v1/holds/no-such-hold")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "hold_not_found".into()));
    assert_eq!(app.available("a").await, "5", "nothing changed");
    app.stop().await;
}

#[tokio::test]
async fn overage_policies() {
    let app = spawn_app().await;
    app.create_account("a").await;
    app.grant("a", json!(10)).await;
    let new_hold = || async {
        lock(&app, "a", json!(2), json!({}))
            .await
            .json::<Value>()
            .await
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let h = new_hold().await;
    let r = settle(&app, &h, json!({"amount": 3})).await;
    assert_eq!(
        error_code(r).await,
        (409, "exceeds_hold".into()),
        "reject is the default"
    );
    let r: Value = settle(&app, &h, json!({"amount": 3, "overage": "cap"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["settled_amount"], "2");
    let h = new_hold().await;
    let r: Value = settle(&app, &h, json!({"amount": 3, "overage": "allow"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["settled_amount"], "3");
    // The account's own policy applies when the request names none.
    app.admin(Method::PATCH, "/v1/accounts/a")
        .json(&json!({"overage_policy": "allow"}))
        .send()
        .await
        .unwrap();
    let h = new_hold().await;
    let r: Value = settle(&app, &h, json!({"amount": 4}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["settled_amount"], "4");
    assert_eq!(app.available("a").await, "1");
    let r = settle(&app, &h, json!({"amount": 1, "overage": "sometimes"})).await;
    assert_eq!(error_code(r).await, (400, "invalid_field".into()));
    app.stop().await;
}

#[tokio::test]
async fn hold_expiry_and_listing() {
    let app = spawn_app().await;
    app.create_account("a").await;
    app.grant("a", json!(10)).await;
    let h: Value = lock(&app, "a", json!(4), json!({"ttl_secs": 30}))
        .await
        .json()
        .await
        .unwrap();
    let id = h["id"].as_str().unwrap().to_owned();
    lock(&app, "a", json!(1), json!({"ttl_secs": 300})).await;
    let list = |q: &'static str| {
        app.service(Method::GET, &format!("/v1/accounts/a/holds{q}"))
            .send()
    };
    let held: Value = list("?status=held").await.unwrap().json().await.unwrap();
    assert_eq!(held["holds"].as_array().unwrap().len(), 2);
    app.clock.advance_secs(30);
    assert_eq!(
        app.available("a").await,
        "9",
        "the expired hold no longer reduces available, without a sweep"
    );
    let r = settle(&app, &id, json!({"amount": 1})).await;
    assert_eq!(error_code(r).await, (409, "hold_expired".into()));
    let held: Value = list("?status=held").await.unwrap().json().await.unwrap();
    assert_eq!(held["holds"].as_array().unwrap().len(), 1);
    let expired: Value = list("?status=expired").await.unwrap().json().await.unwrap();
    assert_eq!(expired["holds"][0]["id"], id.as_str());
    let r = list("?status=lost").await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_query".into()));
    // A sweep writes the hold_expired event.
    assert_eq!(app.sweep().await.accounts_swept, 1);
    let expired = app.newest_event("a").await;
    assert_eq!(expired["kind"], "hold_expired");
    assert_eq!(expired["hold_id"], id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn settle_and_release_are_idempotent() {
    let app = spawn_app().await;
    app.create_account("a").await;
    app.grant("a", json!(10)).await;
    let r = lock(&app, "a", json!(4), json!({"idempotency_key": "lock-1"})).await;
    let first: Value = r.json().await.unwrap();
    let r = lock(&app, "a", json!(4), json!({"idempotency_key": "lock-1"})).await;
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert_eq!(
        first["id"], again["id"],
        "a retried lock returns the same hold"
    );
    assert_eq!(app.available("a").await, "6");
    let id = first["id"].as_str().unwrap();
    let s1 = settle(
        &app,
        id,
        json!({"amount": 1, "idempotency_key": "settle-1"}),
    )
    .await;
    assert_eq!(s1.status(), 200);
    let s2 = settle(
        &app,
        id,
        json!({"amount": 1, "idempotency_key": "settle-1"}),
    )
    .await;
    assert_eq!(
        s2.status(),
        200,
        "a replayed settle answers as the first did"
    );
    assert_eq!(s2.headers()["idempotent-replayed"], "true");
    assert_eq!(app.available("a").await, "9");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_locks_never_overcommit() {
    let app = spawn_app().await;
    app.create_account("hot").await;
    app.grant("hot", json!(20)).await;
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let req = app
            .service(Method::POST, "/v1/holds")
            .json(&json!({"account_id": "hot", "amount": 1}));
        tasks.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 201 {
            ok += 1;
        }
    }
    assert_eq!(ok, 20);
    let a = app.account("hot").await;
    assert_eq!(
        (
            a["balance"]["held"].as_str(),
            a["balance"]["available"].as_str()
        ),
        (Some("20"), Some("0"))
    );
    app.stop().await;
}

#[tokio::test]
async fn credentials_are_admin_only_and_hidden() {
    let app = spawn_app().await;
    app.create_account("a").await;
    let add = |key: &str, public: bool| {
        app.admin(Method::POST, "/v1/accounts/a/credentials")
            .json(&json!({"key": key, "public": public}))
            .send()
    };
    let r = add("sk_live_0123456789abcdef", false).await.unwrap();
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    assert_eq!(
        c["key"], "sk_live_...",
        "a private key is shown by prefix only"
    );
    let r = add("pk_abc", true).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["key"], "pk_abc");
    let r = add("short", false).await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_credential".into()));
    app.create_account("b").await;
    let r = app
        .admin(Method::POST, "/v1/accounts/b/credentials")
        .json(&json!({"key": "sk_live_0123456789abcdef"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (409, "credential_in_use".into()));
    let r = app
        .service(Method::GET, "/v1/accounts/a/credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "forbidden".into()));
    let list: Value = app
        .admin(Method::GET, "/v1/accounts/a/credentials")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["credentials"].as_array().unwrap().len(), 2);
    assert!(
        !list.to_string().contains("0123456789abcdef"),
        "the secret never comes back"
    );
    let id = c["id"].as_str().unwrap();
    let r = app
        .admin(
            Method::POST,
            &format!("/v1/accounts/a/credentials/{id}/deactivate"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], false);
    let r = app
        .admin(
            Method::POST,
            "/v1/accounts/a/credentials/cred_nope/deactivate",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "credential_not_found".into()));
    app.stop().await;
}

fn wire_body_max() -> usize {
    reckon_server::wire::BODY_BYTES_MAX
}
