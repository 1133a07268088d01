//! The nilauth-credit protocol over real HTTP, byte for byte what the Python
//! client `nilauth-credit-middleware` 0.1.3 sends and expects. (The Python
//! client itself runs against Reckon in `tests/interop/`.)

mod support;

use reqwest::Method;
use serde_json::{json, Value};
use support::*;

const SECRET: &str = "sk_test_0123456789abcdef";

async fn setup() -> App {
    let app = spawn_app().await;
    app.create_account("user-1").await;
    app.grant("user-1", json!(10)).await;
    let r = app
        .admin(Method::POST, "/v1/accounts/user-1/credentials")
        .json(&json!({"key": SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = app
        .admin(Method::POST, "/v1/accounts/user-1/credentials")
        .json(&json!({"key": "did:nil:user1", "public": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app
}

/// A request as the Python client makes it: `Authorization: Bearer <token>`.
fn nil(app: &App, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.http.request(method, app.url(path)).bearer_auth(SERVICE)
}

async fn error_text(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("error is not a string: {body}"))
            .to_owned(),
    )
}

#[tokio::test]
async fn lock_unlock_summary() {
    let app = setup().await;
    assert_eq!(
        nil(&app, Method::GET, "/v1/health")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = nil(&app, Method::POST, "/v1/balance/lock/private")
        .json(&json!({"credential": SECRET, "amount": 5.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let lock: Value = r.json().await.unwrap();
    let lock_id = lock["lock_id"].as_str().unwrap().to_owned();
    assert!(
        uuid::Uuid::parse_str(&lock_id).is_ok(),
        "lock_id is a UUID: {lock_id}"
    );
    assert_eq!(lock.as_object().unwrap().len(), 1);
    let summary: Value = nil(&app, Method::GET, "/v1/summary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        summary,
        json!({"users": [{"user_id": "user-1", "balance": 5}], "locks": [{"lock_id": lock_id}]})
    );
    let r = nil(&app, Method::POST, "/v1/balance/unlock")
        .json(&json!({"lock_id": lock_id, "real_cost": 1.25}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap().len(),
        0,
        "unlock answers with an empty body"
    );
    let summary: Value = nil(&app, Method::GET, "/v1/summary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        summary,
        json!({"users": [{"user_id": "user-1", "balance": 8.75}], "locks": []})
    );
    // A retried unlock with the same cost is answered again; another cost is refused.
    let again = nil(&app, Method::POST, "/v1/balance/unlock")
        .json(&json!({"lock_id": lock_id, "real_cost": 1.25}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let other = nil(&app, Method::POST, "/v1/balance/unlock")
        .json(&json!({"lock_id": lock_id, "real_cost": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 400);
    assert_eq!(app.available("user-1").await, "8.75");
    app.stop().await;
}

#[tokio::test]
async fn lock_errors_use_the_protocol_statuses() {
    let app = setup().await;
    let lock = |path: &'static str, body: Value| nil(&app, Method::POST, path).json(&body).send();
    let r = lock(
        "/v1/balance/lock/private",
        json!({"credential": SECRET, "amount": 11}),
    )
    .await
    .unwrap();
    assert_eq!(error_text(r).await, (400, "insufficient balance".into()));
    let r = lock(
        "/v1/balance/lock/private",
        json!({"credential": "sk_unknown_0123456789", "amount": 1}),
    )
    .await
    .unwrap();
    assert_eq!(error_text(r).await.0, 404);
    let r = lock(
        "/v1/balance/lock/public",
        json!({"credential": "did:nil:user1", "amount": 1}),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        200,
        "public identifiers lock through the public endpoint"
    );
    let r = lock(
        "/v1/balance/lock/private",
        json!({"credential": "did:nil:user1", "amount": 1}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404, "a public identifier is not a private key");
    let r = lock("/v1/funds/lock", json!({"user_id": "user-1", "amount": 2}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the older form names the user directly");
    let r = lock("/v1/funds/lock", json!({"user_id": "nobody", "amount": 2}))
        .await
        .unwrap();
    assert_eq!(error_text(r).await, (404, "user not found".into()));
    let r = lock(
        "/v1/balance/lock/other",
        json!({"credential": SECRET, "amount": 1}),
    )
    .await
    .unwrap();
    assert_eq!(
        error_text(r).await,
        (404, "no such lock endpoint".into()),
        "only the two kinds lock"
    );
    let r = app
        .http
        .post(app.url("/v1/balance/lock/private"))
        .bearer_auth("wrong")
        .json(&json!({"credential": SECRET, "amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_text(r).await.0,
        401,
        "auth failures use the protocol's error shape too"
    );
    let r = lock(
        "/v1/balance/lock/private",
        json!({"credential": SECRET, "amount": -1}),
    )
    .await
    .unwrap();
    assert_eq!(error_text(r).await.0, 400);
    assert_eq!(
        app.available("user-1").await,
        "7",
        "only the two good locks reserved"
    );
    app.stop().await;
}

#[tokio::test]
async fn unlock_errors_and_refunds() {
    let app = setup().await;
    let unlock = |body: Value| {
        nil(&app, Method::POST, "/v1/balance/unlock")
            .json(&body)
            .send()
    };
    let r = unlock(json!({"lock_id": "00000000-0000-4000-8000-000000000000", "real_cost": 1}))
        .await
        .unwrap();
    assert_eq!(error_text(r).await, (404, "lock not found".into()));
    let lock: Value = nil(&app, Method::POST, "/v1/funds/lock")
        .json(&json!({"user_id": "user-1", "amount": 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = lock["lock_id"].as_str().unwrap();
    let r = unlock(json!({"lock_id": id, "real_cost": -0.5}))
        .await
        .unwrap();
    assert_eq!(error_text(r).await.0, 400);
    // Cost 0 is a full refund (what the middleware sends when a handler fails).
    let r = unlock(json!({"lock_id": id, "real_cost": 0.0}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.available("user-1").await, "10");
    let r = unlock(json!({"lock_id": id, "real_cost": 1}))
        .await
        .unwrap();
    assert_eq!(
        error_text(r).await.0,
        400,
        "a resolved lock cannot be unlocked again"
    );
    let r = nil(&app, Method::POST, "/v1/funds/unlock")
        .json(&json!({"lock_id": id, "real_cost": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the older unlock path, replaying the refund"
    );
    app.stop().await;
}

#[tokio::test]
async fn float_costs_round_to_micro_units() {
    let app = setup().await;
    let lock: Value = nil(&app, Method::POST, "/v1/balance/lock/private")
        .json(&json!({"credential": SECRET, "amount": 0.30000000000000004}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = lock["lock_id"].as_str().unwrap();
    let held = app.account("user-1").await["balance"]["held"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(held, "0.300001", "a lock rounds up");
    let r = nil(&app, Method::POST, "/v1/balance/unlock")
        .json(&json!({"lock_id": id, "real_cost": 0.1 + 0.2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.account("user-1").await["balance"]["used"],
        "0.3",
        "a cost rounds half up"
    );
    // A cost above the lock is capped under the default policy (`reject`),
    // and charged in full under the account's `allow`.
    lock_and_unlock(&app, 1, 3).await;
    assert_eq!(app.account("user-1").await["balance"]["used"], "1.3");
    let r = app
        .admin(Method::PATCH, "/v1/accounts/user-1")
        .json(&json!({"overage_policy": "allow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    lock_and_unlock(&app, 1, 3).await;
    assert_eq!(app.account("user-1").await["balance"]["used"], "4.3");
    app.stop().await;
}

/// `user-1` locks `amount` through the older path and unlocks at `cost`.
async fn lock_and_unlock(app: &App, amount: i64, cost: i64) {
    let lock: Value = nil(app, Method::POST, "/v1/funds/lock")
        .json(&json!({"user_id": "user-1", "amount": amount}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = nil(app, Method::POST, "/v1/funds/unlock")
        .json(&json!({"lock_id": lock["lock_id"], "real_cost": cost}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn validate_credential() {
    let app = setup().await;
    let validate = |key: &str, public: bool| {
        nil(&app, Method::POST, "/v1/credential/validate")
            .json(&json!({"credential_key": key, "is_public": public}))
            .send()
    };
    let r: Value = validate(SECRET, false).await.unwrap().json().await.unwrap();
    assert_eq!(
        r,
        json!({"user_id": "user-1", "is_valid": true, "is_public": false})
    );
    let r: Value = validate("did:nil:user1", true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({"user_id": "user-1", "is_valid": true, "is_public": true})
    );
    assert_eq!(
        validate("sk_unknown_0123456789", false)
            .await
            .unwrap()
            .status(),
        404
    );
    let list: Value = app
        .admin(Method::GET, "/v1/accounts/user-1/credentials")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let private = list["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["public"] == false)
        .unwrap();
    let id = private["id"].as_str().unwrap();
    app.admin(
        Method::POST,
        &format!("/v1/accounts/user-1/credentials/{id}/deactivate"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        error_text(validate(SECRET, false).await.unwrap()).await.0,
        401
    );
    let r = nil(&app, Method::POST, "/v1/balance/lock/private")
        .json(&json!({"credential": SECRET, "amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_text(r).await.0,
        401,
        "an inactive credential cannot lock"
    );
    app.stop().await;
}
