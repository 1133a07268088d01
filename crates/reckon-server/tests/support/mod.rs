//! `spawn_app()`: a real Reckon server on port 0 with its own fresh SQLite
//! database and a clock the test moves. Started through the same
//! `startup::run` the binary uses.
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
    pub db_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
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
        let store = reckon_store::SqliteStore::open(&self.db_path, self.clock.clone()).unwrap();
        reckon_server::scheduler::sweep_once(&store, self.clock.now(), 86_400)
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

pub fn config(db_path: &std::path::Path, admin: Vec<String>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: Database::Sqlite(db_path.to_path_buf()),
        service_keys: vec![SERVICE.into()],
        admin_keys: admin,
        cors_origins: vec!["*".into()],
        idempotency_retention_secs: 86_400,
        // Tests sweep explicitly with the fake clock.
        sweep_interval_secs: 3_600,
        hold_ttl_default_secs: 300,
        hold_ttl_max_secs: 3_600,
    }
}

pub async fn spawn_app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("reckon.db");
    spawn_with(dir, db_path.clone(), config(&db_path, vec![ADMIN.into()])).await
}

pub async fn spawn_with(
    dir: tempfile::TempDir,
    db_path: std::path::PathBuf,
    config: Config,
) -> App {
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
        db_path,
        _dir: dir,
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
