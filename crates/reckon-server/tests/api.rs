//! The native API over real HTTP: a real server on port 0, a fresh database
//! per test, the clock moved by the test.

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn health_docs_and_openapi_need_no_key() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let spec: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/accounts",
        "/v1/accounts/{id}",
        "/v1/accounts/{id}/grants",
        "/v1/accounts/{id}/usage",
        "/v1/accounts/{id}/check",
        "/v1/accounts/{id}/events",
        "/healthz",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "openapi.json lacks {path}"
        );
    }
    let docs = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "/docs serves Swagger UI"
    );
    app.stop().await;
}

/// CORS applies to every route, the hot ones included, and to unknown
/// paths alike.
#[tokio::test]
async fn cors_and_unknown_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (database, schema) = fresh_database(&dir).await;
    let mut config = config(database, vec![ADMIN.into()]);
    config.cors_origins = vec!["*".into()];
    let app = spawn_with(dir, schema, config).await;
    let origin = "https://dashboard.example";
    let get = |path: &str| app.http.get(app.url(path)).header("Origin", origin).send();
    let r = get("/healthz").await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    app.create_account("a").await;
    app.grant("a", json!("5")).await;
    let r = app
        .service(Method::POST, "/v1/accounts/a/usage")
        .header("Origin", origin)
        .json(&json!({"amount": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/v1/accounts/a/usage"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert!(preflight
        .headers()
        .contains_key("access-control-allow-methods"));
    let r = get("/no/such/path").await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = app.http.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    app.stop().await;
}

/// `POST` to the hot paths skips axum's router (`dispatch.rs`); the
/// answers must be the router's: ids percent-decoded, an empty id refused,
/// other methods 405, a trailing slash 404; and an id that is not UTF-8 is
/// refused in our error shape on every route.
#[tokio::test]
async fn hot_routes_answer_as_the_router_does() {
    let app = spawn_app().await;
    app.create_account("team.7").await;
    app.grant("team.7", json!("5")).await;
    let usage = |path: &str| {
        app.service(Method::POST, path)
            .json(&json!({"amount": "1"}))
            .send()
    };
    let r = usage("/v1/accounts/team%2E7/usage").await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["account_id"], "team.7");
    assert_eq!(body["balance"]["available"], "4");
    let r = usage("/v1/accounts/%FF/usage").await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_path".into()));
    let r = usage("/v1/accounts/team.7/usage/").await.unwrap();
    assert_eq!(r.status(), 404);
    let r = usage("/v1/accounts//usage").await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_id".into()));
    let r = app
        .service(Method::GET, "/v1/accounts/team.7/usage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = app
        .service(Method::POST, "/v1/accounts/team%2E7/check")
        .json(&json!({"amount": "9"}))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["allowed"], false, "{body}");
    assert_eq!(app.available("team.7").await, "4");
    // The router's routes read their ids the same way.
    let r = app
        .service(Method::GET, "/v1/accounts/team%2E7")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], "team.7", "{body}");
    let r = app
        .admin(Method::GET, "/v1/accounts/%FF")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_path".into()));
    let r = app
        .admin(
            Method::POST,
            "/v1/accounts/team.7/credentials/%C3%28/deactivate",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_path".into()));
    app.stop().await;
}

#[tokio::test]
async fn keys_and_scopes() {
    let app = spawn_app().await;
    let body = json!({"id": "a"});
    let r = app
        .http
        .post(app.url("/v1/accounts"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "unauthorized".into()));
    let r = app
        .http
        .post(app.url("/v1/accounts"))
        .header("X-API-Key", "wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (401, "unauthorized".into()));
    let r = app
        .service(Method::POST, "/v1/accounts")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (403, "forbidden".into()),
        "a service key cannot create accounts"
    );
    let r = app
        .http
        .post(app.url("/v1/accounts"))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the admin key works as a bearer token");
    // Admin covers service scope, in any header.
    let r = app
        .http
        .get(app.url("/v1/accounts/a"))
        .header("X-API-Key", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .get(app.url("/v1/accounts/a"))
        .bearer_auth(SERVICE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn generated_admin_key_is_shown_once_and_kept_as_a_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = reckon_store::SqliteStore::open(
        dir.path().join("k.db"),
        std::sync::Arc::new(reckon_store::SystemClock),
    )
    .unwrap();
    let (keys, generated) = reckon_server::Keys::resolve(&[], &[], &store)
        .await
        .unwrap();
    let key = generated.expect("a key is generated when none is configured");
    assert_eq!(keys.scope_of(&key), Some(reckon_server::auth::Scope::Admin));
    let (keys, again) = reckon_server::Keys::resolve(&[], &[], &store)
        .await
        .unwrap();
    assert_eq!(again, None, "shown only on the start that made it");
    assert_eq!(keys.scope_of(&key), Some(reckon_server::auth::Scope::Admin));
    use reckon_store::Store;
    let stored = store
        .setting("generated_admin_key_sha256")
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.contains(&key[9..]), "only a hash is stored");
}

#[tokio::test]
async fn account_lifecycle_and_errors() {
    let app = spawn_app().await;
    let r = app
        .admin(Method::POST, "/v1/accounts")
        .json(&json!({"id": "user@example.com", "unit": "USD", "metadata": {"plan": "pro"}, "timezone": "Europe/Amsterdam"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["unit"], "USD");
    assert_eq!(a["metadata"]["plan"], "pro");
    assert_eq!(a["balance"]["available"], "0");
    let r = app
        .admin(Method::POST, "/v1/accounts")
        .json(&json!({"id": "user@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (409, "account_exists".into()));
    let r = app
        .admin(Method::POST, "/v1/accounts")
        .json(&json!({"id": "bad id/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_id".into()));
    let r = app
        .admin(Method::POST, "/v1/accounts")
        .json(&json!({"id": "x", "colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (400, "invalid_json".into()),
        "unknown fields are refused, not ignored"
    );
    // Bodies as sent, with the given Content-Type (or none).
    let create = |body: &'static str, content_type: Option<&'static str>| {
        let req = app.admin(Method::POST, "/v1/accounts").body(body);
        match content_type {
            Some(t) => req.header("content-type", t),
            None => req,
        }
        .send()
    };
    let json = Some("application/json");
    let r = create("{\"id\":", json).await.unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_json".into()));
    let r = create("{\"id\":\"x\"}", None).await.unwrap();
    assert_eq!(
        error_code(r).await,
        (400, "invalid_json".into()),
        "a body without a JSON content type"
    );
    let r = create("{\"id\":\"x\"} []", json).await.unwrap();
    assert_eq!(
        error_code(r).await,
        (400, "invalid_json".into()),
        "trailing characters after the value"
    );
    let r = create("{\"id\": 5}", json).await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Failed to deserialize the JSON body into the target type: id: invalid type"
        ),
        "the message names the field: {message}"
    );
    let r = create(
        "{\"id\":\"typed\"}",
        Some("application/json; charset=utf-8"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "a charset parameter is still JSON");
    let r = app
        .service(Method::GET, "/v1/accounts/nobody")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "account_not_found".into()));
    let r = app
        .admin(Method::PATCH, "/v1/accounts/user@example.com")
        .json(&json!({"status": "frozen"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_field".into()));
    let big = "x".repeat(wire_body_max() + 1);
    let r = app
        .admin(Method::POST, "/v1/accounts")
        .json(&json!({"id": "y", "metadata": {"blob": big}}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (413, "payload_too_large".into()));
    app.stop().await;
}

fn wire_body_max() -> usize {
    reckon_server::wire::BODY_BYTES_MAX
}

#[tokio::test]
async fn amounts_are_exact_in_and_out() {
    let app = spawn_app().await;
    app.create_account("a").await;
    app.grant("a", json!(0.3)).await;
    for amount in [json!(0.1), json!("0.2")] {
        let r = app
            .service(Method::POST, "/v1/accounts/a/usage")
            .json(&json!({"amount": amount}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // 0.3 - 0.1 - 0.2 is exactly zero here, unlike in floating point.
    assert_eq!(app.available("a").await, "0");
    for (bad, why) in [
        (json!(-1), "negative"),
        (json!("abc"), "text"),
        (json!(0.0000001), "7 decimals"),
        (json!(1e13), "too large"),
        (json!(null), "null"),
        (json!(true), "bool"),
        (json!(0), "zero"),
    ] {
        let r = app
            .service(Method::POST, "/v1/accounts/a/usage")
            .json(&json!({"amount": bad}))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, (400, "invalid_amount".into()), "{why}");
    }
    let events: Value = app
        .service(Method::GET, "/v1/accounts/a/events")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        events["events"].as_array().unwrap().len(),
        4,
        "bad input changed nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn usage_refused_beyond_balance_changes_nothing() {
    let app = spawn_app().await;
    app.create_account("a").await;
    app.grant("a", json!("50")).await;
    let r = app
        .service(Method::POST, "/v1/accounts/a/usage")
        .json(&json!({"amount": "12.34", "attributes": {"model": "gpt-4"}, "idempotency_key": "req-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["balance"],
        json!({"granted": "50", "used": "12.34", "held": "0", "available": "37.66", "expired": "0"})
    );
    // The event keeps what the caller sent with it.
    let used = &app.newest_event("a").await;
    assert_eq!(used["kind"], "used");
    assert_eq!(used["attributes"], json!({"model": "gpt-4"}));
    assert_eq!(used["idempotency_key"], "req-1");
    let r = app
        .service(Method::POST, "/v1/accounts/a/usage")
        .json(&json!({"amount": "37.67"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (402, "insufficient_balance".into()));
    assert_eq!(app.available("a").await, "37.66");
    let r = app
        .service(Method::POST, "/v1/accounts/nobody/usage")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "account_not_found".into()));
    app.stop().await;
}

/// A check goes through the writer like a spend, but spends nothing and,
/// with no expiry due, records nothing: the history is the same after it.
#[tokio::test]
async fn check_changes_nothing() {
    let app = spawn_app().await;
    app.create_account("a").await;
    app.grant("a", json!("5")).await;
    let events = |app: &App| {
        app.service(Method::GET, "/v1/accounts/a/events?limit=100")
            .send()
    };
    let before: Value = events(&app).await.unwrap().json().await.unwrap();
    for amount in ["1", "6"] {
        let r = app
            .service(Method::POST, "/v1/accounts/a/check")
            .json(&json!({"amount": amount}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let after: Value = events(&app).await.unwrap().json().await.unwrap();
    assert_eq!(before, after);
    assert_eq!(app.available("a").await, "5");
    let r = app
        .service(Method::POST, "/v1/accounts/nobody/check")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "account_not_found".into()));
    app.stop().await;
}

#[tokio::test]
async fn idempotency_by_header_or_body() {
    let app = spawn_app().await;
    app.create_account("a").await;
    app.grant("a", json!(10)).await;
    let send = |key_in_header: bool, amount: i64| {
        let mut body = json!({"amount": amount});
        let mut req = app.service(Method::POST, "/v1/accounts/a/usage");
        if key_in_header {
            req = req.header("Idempotency-Key", "req_abc123");
        } else {
            body["idempotency_key"] = json!("req_abc123");
        }
        req.json(&body).send()
    };
    let first = send(true, 3).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send(false, 3).await.unwrap();
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        first,
        "the replay returns the first answer"
    );
    assert_eq!(app.available("a").await, "7");
    let r = send(true, 4).await.unwrap();
    assert_eq!(error_code(r).await, (409, "idempotency_conflict".into()));
    let r = app
        .service(Method::POST, "/v1/accounts/a/usage")
        .header("Idempotency-Key", "one")
        .json(&json!({"amount": 1, "idempotency_key": "two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_idempotency_key".into()));
    // Grants and account creation are idempotent too.
    let g = |k: &'static str| {
        app.admin(Method::POST, "/v1/accounts/a/grants")
            .header("Idempotency-Key", k)
            .json(&json!({"amount": 5}))
            .send()
    };
    let g1: Value = g("grant-1").await.unwrap().json().await.unwrap();
    let g2: Value = g("grant-1").await.unwrap().json().await.unwrap();
    assert_eq!(g1["grant"]["id"], g2["grant"]["id"]);
    assert_eq!(app.available("a").await, "12");
    let c = || {
        app.admin(Method::POST, "/v1/accounts")
            .header("Idempotency-Key", "mk-b")
            .json(&json!({"id": "b"}))
            .send()
    };
    assert_eq!(c().await.unwrap().status(), 201);
    assert_eq!(
        c().await.unwrap().status(),
        201,
        "a replayed create is not account_exists"
    );
    app.stop().await;
}

#[tokio::test]
async fn expiry_follows_the_clock_without_any_sweep() {
    let app = spawn_app().await;
    app.create_account("a").await;
    let r = app
        .admin(Method::POST, "/v1/accounts/a/grants")
        .json(&json!({"amount": "1024", "valid_for_secs": 60, "source": "bundle"}))
        .send()
        .await
        .unwrap();
    let g: Value = r.json().await.unwrap();
    assert_eq!(g["grant"]["expires_at"], "2026-01-01T00:01:00.000Z");
    app.grant("a", json!(1)).await;
    app.clock.advance_secs(60);
    let a = app.account("a").await;
    assert_eq!(a["balance"]["available"], "1");
    assert_eq!(a["balance"]["expired"], "1024");
    assert_eq!(
        a["grants"].as_array().unwrap().len(),
        1,
        "only live grants are listed"
    );
    let r = app
        .service(Method::POST, "/v1/accounts/a/usage")
        .json(&json!({"amount": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (402, "insufficient_balance".into()));
    // The scheduler's pass writes the expiry event, stamped with the instant it happened.
    assert_eq!(app.sweep().await.accounts_swept, 1);
    let expired = app.newest_event("a").await;
    assert_eq!(expired["kind"], "grant_expired");
    assert_eq!(expired["at"], "2026-01-01T00:01:00.000Z");
    app.stop().await;
}

#[tokio::test]
async fn account_expiry_suspension_and_patch() {
    let app = spawn_app().await;
    let r = app
        .admin(Method::POST, "/v1/accounts")
        .json(&json!({"id": "a", "expires_at": "2026-01-31T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.grant("a", json!(10)).await;
    let check = |amount: i64| {
        app.service(Method::POST, "/v1/accounts/a/check")
            .json(&json!({"amount": amount}))
            .send()
    };
    let c: Value = check(5).await.unwrap().json().await.unwrap();
    assert_eq!(
        c,
        json!({"allowed": true, "available": "10", "reason": null})
    );
    let c: Value = check(11).await.unwrap().json().await.unwrap();
    assert_eq!(
        c,
        json!({"allowed": false, "available": "10", "reason": "insufficient_balance"})
    );
    app.clock.advance_secs(30 * 86_400);
    let c: Value = check(5).await.unwrap().json().await.unwrap();
    assert_eq!(c["reason"], "account_expired");
    let r = app
        .service(Method::POST, "/v1/accounts/a/usage")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "account_expired".into()));
    // Extend by clearing the expiry; then suspend.
    let r = app
        .admin(Method::PATCH, "/v1/accounts/a")
        .json(&json!({"expires_at": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["expires_at"], Value::Null);
    let r = app
        .service(Method::POST, "/v1/accounts/a/usage")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .admin(Method::PATCH, "/v1/accounts/a")
        .json(&json!({"status": "suspended"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .service(Method::POST, "/v1/accounts/a/usage")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (403, "account_suspended".into()));
    let r = app
        .admin(Method::PATCH, "/v1/accounts/nobody")
        .json(&json!({"status": "active"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "account_not_found".into()));
    app.stop().await;
}

#[tokio::test]
async fn events_and_accounts_paginate() {
    let app = spawn_app().await;
    for id in ["c", "a", "b"] {
        app.create_account(id).await;
    }
    for _ in 0..5 {
        app.grant("a", json!(1)).await;
    }
    let page: Value = app
        .service(Method::GET, "/v1/accounts/a/events?limit=4")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["granted"; 4]);
    let before = page["next_before"].as_i64().unwrap();
    let rest: Value = app
        .service(
            Method::GET,
            &format!("/v1/accounts/a/events?limit=4&before={before}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = rest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["granted", "account_created"]);
    assert_eq!(rest["next_before"], Value::Null);
    let page: Value = app
        .service(Method::GET, "/v1/accounts?limit=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(page["next_after"], "b");
    let r = app
        .service(Method::GET, "/v1/accounts?limit=100000")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "invalid_query".into()));
    let r = app
        .service(Method::GET, "/v1/accounts/nobody/events")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (404, "account_not_found".into()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_http_usage_never_overspends() {
    let app = spawn_app().await;
    app.create_account("hot").await;
    app.grant("hot", json!(30)).await;
    let mut tasks = Vec::new();
    for i in 0..120 {
        let req = app
            .service(Method::POST, "/v1/accounts/hot/usage")
            .header("Idempotency-Key", format!("k{}", i % 100)) // 20 retries among them
            .json(&json!({"amount": 1}));
        tasks.push(tokio::spawn(async move {
            req.send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        *statuses.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    let a = app.account("hot").await;
    assert_eq!(a["balance"]["available"], "0");
    assert_eq!(a["balance"]["used"], "30", "statuses: {statuses:?}");
    assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), vec![200, 402]);
    let events: Value = app
        .service(Method::GET, "/v1/accounts/hot/events?limit=500")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let used = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "used")
        .count();
    assert_eq!(used, 30, "one event per unit actually spent");
    app.stop().await;
}

#[tokio::test]
async fn writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Kept here, so the database outlives both servers.
    let (db, _schema) = fresh_database(&dir).await;
    let app = spawn_with(
        tempfile::tempdir().unwrap(),
        None,
        config(db.clone(), vec![ADMIN.into()]),
    )
    .await;
    app.create_account("a").await;
    app.grant("a", json!("5.5")).await;
    app.stop().await;
    let app = spawn_with(
        tempfile::tempdir().unwrap(),
        None,
        config(db.clone(), vec![ADMIN.into()]),
    )
    .await;
    assert_eq!(app.available("a").await, "5.5");
    app.stop().await;
}
