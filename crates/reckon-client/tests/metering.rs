//! The metering layer on a real axum app, against a real Reckon server.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use reckon_client::metering::{Cost, FailMode, Meter, Metering, UserId};
use reckon_client::{amount, Amount, Client};
use reckon_server::config::{Config, Database};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const ADMIN: &str = "meter-admin";
const SERVICE: &str = "meter-service";

struct Env {
    admin: Client,
    app: String,
    calls: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

async fn start_reckon() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: Database::Sqlite(dir.path().join("r.db")),
        service_keys: vec![SERVICE.into()],
        admin_keys: vec![ADMIN.into()],
        cors_origins: vec![],
        idempotency_retention_secs: 86_400,
        sweep_interval_secs: 3_600,
        hold_ttl_default_secs: 300,
        hold_ttl_max_secs: 3_600,
        sqlite_compact_cache_bytes: reckon_store::sqlite::COMPACT_BYTES_MAX,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(reckon_server::startup::run(
        config,
        Arc::new(reckon_store::SystemClock),
        listener,
        std::future::pending(),
    ));
    (url, dir)
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// The metered app: each route shows one way to name the user or price the work.
fn app(metering: &Metering, calls: Arc<AtomicUsize>) -> Router {
    let counted = move |body: &'static str| {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                body
            }
        }
    };
    let header = || UserId::header("x-user-id");
    Router::new()
        .route(
            "/fixed",
            get(counted("ok")).layer(metering.layer(Meter::new(header(), amount("1")))),
        )
        .route(
            "/size",
            get(|| async { "x".repeat(2048) }).layer(metering.layer(
                Meter::new(header(), amount("5")).cost(Cost::ResponseSize {
                    base: amount("0.5"),
                    per_kib: amount("0.1"),
                }),
            )),
        )
        .route(
            "/time",
            get(counted("ok")).layer(metering.layer(Meter::new(header(), amount("10")).cost(
                Cost::ProcessingTime {
                    base: amount("1"),
                    per_second: amount("2"),
                },
            ))),
        )
        .route(
            "/custom",
            get(|| async { (StatusCode::NOT_FOUND, "missing") }).layer(metering.layer(
                Meter::new(header(), amount("3")).cost(Cost::Custom(Arc::new(|i| {
                    if i.status.is_client_error() {
                        amount("0.25")
                    } else {
                        amount("2")
                    }
                }))),
            )),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") })
                .layer(metering.layer(Meter::new(header(), amount("4")))),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("handler panicked");
                }
                "never"
            })
            .layer(metering.layer(Meter::new(header(), amount("4")))),
        )
        .route(
            "/over",
            get(counted("ok")).layer(
                metering.layer(Meter::new(header(), amount("1")).cost(Cost::Fixed(amount("3")))),
            ),
        )
        .route(
            "/over-allowed",
            get(counted("ok")).layer(
                metering.layer(
                    Meter::new(header(), amount("1"))
                        .cost(Cost::Fixed(amount("3")))
                        .allow_overage(),
                ),
            ),
        )
        .route(
            "/query",
            get(counted("ok"))
                .layer(metering.layer(Meter::new(UserId::Query("user_id".into()), amount("1")))),
        )
        .route(
            "/users/{user}/thing",
            get(|Path(_u): Path<String>| async { "ok" })
                .layer(metering.layer(Meter::new(UserId::Path("user".into()), amount("1")))),
        )
        .route(
            "/body",
            post(|body: String| async move { body }).layer(
                metering.layer(Meter::new(UserId::JsonField("user_id".into()), amount("1"))),
            ),
        )
        .route(
            "/jwt",
            get(counted("ok")).layer(metering.layer(Meter::new(UserId::JwtSub, amount("1")))),
        )
}

async fn setup(balance: &str) -> Env {
    let (url, dir) = start_reckon().await;
    let admin = Client::new(&url, ADMIN);
    admin.create_account("u1", None).await.unwrap();
    admin
        .grant("u1", amount(balance), None, None)
        .await
        .unwrap();
    let reckon = Client::new(&url, SERVICE);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = serve(app(&Metering::new(reckon), calls.clone())).await;
    Env {
        admin,
        app,
        calls,
        _dir: dir,
    }
}

impl Env {
    async fn get(&self, path: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{}{path}", self.app))
            .header("x-user-id", "u1")
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    async fn available(&self) -> Amount {
        let a = self.admin.account("u1").await.unwrap();
        assert_eq!(a.balance.held, Amount::ZERO, "no hold is left open");
        a.balance.available
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_by_each_calculator() {
    let env = setup("100").await;
    assert_eq!(env.get("/fixed").await, 200);
    assert_eq!(env.available().await, amount("99"));
    assert_eq!(env.get("/size").await, 200);
    assert_eq!(env.available().await, amount("98.3"), "0.5 + 2 KiB x 0.1");
    assert_eq!(env.get("/time").await, 200);
    let after_time = env.available().await;
    assert!(
        after_time <= amount("97.3") && after_time >= amount("97"),
        "1 + 2/s for a fast handler: {after_time}"
    );
    assert_eq!(env.get("/custom").await, 404);
    assert_eq!(
        env.available().await,
        after_time.checked_sub(amount("0.25")).unwrap(),
        "a custom closure sees the status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_panics_refund() {
    let env = setup("10").await;
    assert_eq!(env.get("/fail").await, 500);
    assert_eq!(env.available().await, amount("10"));
    let status = env.get("/panic").await;
    assert_ne!(status, 200, "a panicking handler does not succeed");
    assert_eq!(
        env.available().await,
        amount("10"),
        "the hold was released before the panic went on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overage_is_clamped_unless_allowed() {
    let env = setup("10").await;
    assert_eq!(env.get("/over").await, 200);
    assert_eq!(
        env.available().await,
        amount("9"),
        "clamped to the 1 locked"
    );
    assert_eq!(env.get("/over-allowed").await, 200);
    assert_eq!(
        env.available().await,
        amount("6"),
        "the full 3 when the route allows overage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_stop_before_the_handler() {
    let env = setup("1").await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/fixed", env.app)).send().await.unwrap();
    assert_eq!(r.status(), 401, "no user id");
    let r = http
        .get(format!("{}/fixed", env.app))
        .header("x-user-id", "nobody")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no such account");
    assert_eq!(env.get("/fixed").await, 200);
    assert_eq!(env.get("/fixed").await, 402, "the balance is spent");
    assert_eq!(
        env.calls.load(Ordering::SeqCst),
        1,
        "refused requests never reached the handler"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_sources() {
    let env = setup("10").await;
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{}/query?user_id=u1", env.app))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{}/users/u1/thing", env.app))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http
        .post(format!("{}/body", env.app))
        .header("content-type", "application/json")
        .body(r#"{"user_id":"u1","x":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"user_id":"u1","x":1}"#,
        "the handler still gets the body"
    );
    // {"alg":"none"}.{"sub":"u1"}
    let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.";
    assert_eq!(
        http.get(format!("{}/jwt", env.app))
            .bearer_auth(jwt)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(env.available().await, amount("6"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_reckon_fails_closed_or_open() {
    // A port nothing listens on: bind, read the port, drop the listener.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let closed = serve(app(
        &Metering::new(Client::new(&dead, SERVICE)),
        calls.clone(),
    ))
    .await;
    let open = serve(app(
        &Metering::new(Client::new(&dead, SERVICE)).fail_mode(FailMode::Open),
        calls.clone(),
    ))
    .await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{closed}/fixed"))
        .header("x-user-id", "u1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let r = http
        .get(format!("{open}/fixed"))
        .header("x-user-id", "u1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
