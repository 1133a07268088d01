//! `spawn_app()`: a real Reckon server on port 0 with its own fresh
//! database and a clock the test moves. Started through the same
//! `startup::run` the binary uses.
//!
//! The database is SQLite, or with `RECKON_TEST_BACKEND=postgres` a fresh
//! PostgreSQL schema per test (`scripts/test` runs these tests both ways).
#![allow(dead_code)]

use reckon_core::Timestamp;
use reckon_server::config::{Config, Database};
use reckon_store::{Clock, ManualClock};
use serde_json::{json, Value};
use std::sync::Arc;

pub const ADMIN: &str = "test-admin-key";
pub const SERVICE: &str = "test-service-key";
/// 2026-01-01T00:00:00Z
pub const T0_MS: i64 = 1_767_225_600_000;

pub struct App {
    pub base: String,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    pub database: Database,
    _dir: tempfile::TempDir,
    _schema: Option<reckon_store::postgres::scratch::ScratchSchema>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the admin key.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-Admin-Key", ADMIN)
    }

    /// A request with the service key.
    pub fn service(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-API-Key", SERVICE)
    }

    pub async fn create_account(&self, id: &str) {
        let r = self
            .admin(reqwest::Method::POST, "/v1/accounts")
            .json(&json!({ "id": id }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    pub async fn grant(&self, id: &str, amount: Value) -> Value {
        let r = self
            .admin(reqwest::Method::POST, &format!("/v1/accounts/{id}/grants"))
            .json(&json!({ "amount": amount }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    }

    pub async fn account(&self, id: &str) -> Value {
        let r = self
            .service(reqwest::Method::GET, &format!("/v1/accounts/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// The account's newest event, as `GET /v1/accounts/{id}/events` shows it.
    pub async fn newest_event(&self, id: &str) -> Value {
        let r = self
            .service(
                reqwest::Method::GET,
                &format!("/v1/accounts/{id}/events?limit=1"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut page: Value = r.json().await.unwrap();
        page["events"][0].take()
    }

    pub async fn available(&self, id: &str) -> String {
        self.account(id).await["balance"]["available"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// One scheduler pass at the fake clock's time, as the running server's
    /// scheduler would make it (a second handle on the same database, whose
    /// writer uses the same fake clock).
    pub async fn sweep(&self) -> reckon_server::scheduler::SweepReport {
        let store = reckon_server::startup::open_store(&self.database, self.clock.clone())
            .await
            .unwrap();
        reckon_server::scheduler::sweep_once(store.as_ref(), self.clock.now(), 86_400)
            .await
            .unwrap()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

pub fn config(database: Database, admin: Vec<String>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database,
        service_keys: vec![SERVICE.into()],
        admin_keys: admin,
        // Off, as in a default deployment: with CORS on, every request goes
        // through axum's router and the hot routes (`dispatch.rs`) are off.
        cors_origins: Vec::new(),
        idempotency_retention_secs: 86_400,
        // Tests sweep explicitly with the fake clock.
        sweep_interval_secs: 3_600,
        hold_ttl_default_secs: 300,
        hold_ttl_max_secs: 3_600,
        sqlite_compact_cache_bytes: reckon_store::sqlite::COMPACT_BYTES_MAX,
    }
}

/// A fresh database for one test: SQLite in `dir`, or a PostgreSQL schema.
pub async fn fresh_database(
    dir: &tempfile::TempDir,
) -> (
    Database,
    Option<reckon_store::postgres::scratch::ScratchSchema>,
) {
    if std::env::var("RECKON_TEST_BACKEND").is_ok_and(|b| b == "postgres") {
        let base = std::env::var("RECKON_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| reckon_store::postgres::scratch::DEFAULT_URL.into());
        let schema = reckon_store::postgres::scratch::ScratchSchema::create(&base)
            .await
            .expect("RECKON_TEST_BACKEND=postgres needs a PostgreSQL server");
        let database = Database::parse(&schema.url).unwrap();
        (database, Some(schema))
    } else {
        (Database::Sqlite(dir.path().join("reckon.db")), None)
    }
}

pub async fn spawn_app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let (database, schema) = fresh_database(&dir).await;
    let config = config(database, vec![ADMIN.into()]);
    spawn_with(dir, schema, config).await
}

pub async fn spawn_with(
    dir: tempfile::TempDir,
    schema: Option<reckon_store::postgres::scratch::ScratchSchema>,
    config: Config,
) -> App {
    let database = config.database.clone();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0_MS)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let c: Arc<dyn Clock> = clock.clone();
    let server = tokio::spawn(async move {
        reckon_server::startup::run(config, c, listener, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    App {
        base,
        clock,
        http: reqwest::Client::new(),
        database,
        _dir: dir,
        _schema: schema,
        stop: Some(stop),
        server: Some(server),
    }
}

/// The error code of a JSON error response.
pub async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {body}"))
            .to_owned(),
    )
}
