//! The server under load: one bench starts itself, or one already running.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use reckon_server::config::Database;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Key the spawned server is started with.
const SPAWNED_ADMIN_KEY: &str = "bench-admin-key";
/// Each bench account starts with this much (effectively unlimited).
const BENCH_GRANT_UNITS: &str = "1000000000";

/// Where requests go and with which key; cheap to clone into each worker.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: String,
    pub key: String,
}

impl Endpoint {
    pub async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    pub fn request(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("x-api-key", &self.key);
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        b.body(Full::new(body.unwrap_or_default()))
            .expect("a valid request")
    }
}

pub struct Target {
    /// One per node; connection `i` goes to node `i % len` (round robin,
    /// as a load balancer would spread them).
    pub endpoints: Vec<Endpoint>,
    pid: Option<u32>,
    child: Option<Child>,
    /// The directory of the SQLite database bench started, where the disk
    /// probe runs (`disk.rs`); unknown for a server at `--url`.
    pub database_dir: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// `urls`: one or more comma-separated base URLs of nodes sharing one database.
    pub fn external(urls: &str, key: Option<String>, pid: Option<u32>) -> Result<Target> {
        let key = key.context("--key (or RECKON_ADMIN_KEY) is needed with --url")?;
        let endpoints = urls
            .split(',')
            .map(|url| {
                let host = url
                    .trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                let addr = std::net::ToSocketAddrs::to_socket_addrs(&host)?
                    .next()
                    .with_context(|| format!("{url} does not resolve"))?;
                Ok(Endpoint {
                    addr,
                    host,
                    key: key.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Target {
            endpoints,
            pid,
            child: None,
            database_dir: None,
            _dir: None,
        })
    }

    /// Starts `reckon serve` (this same binary) on port 0 with a fresh database.
    pub async fn spawn(database: Option<&str>) -> Result<Target> {
        let dir = tempfile::tempdir()?;
        let database = match database {
            Some(d) => d.to_owned(),
            None => format!("sqlite:{}", dir.path().join("bench.db").display()),
        };
        // Parsed as `serve` will parse it (`sqlite:`, `sqlite://`, a bare path).
        let database_dir = match Database::parse(&database) {
            Ok(Database::Sqlite(path)) => Some(match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            }),
            _ => None,
        };
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &database])
            .env("RECKON_ADMIN_KEY", SPAWNED_ADMIN_KEY)
            .env("RECKON_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("reckon listening on ") else {
            bail!("server did not start: {line:?}");
        };
        let host = url.trim_start_matches("http://").to_owned();
        eprintln!("started reckon (pid {}) at {url} on {database}", child.id());
        Ok(Target {
            endpoints: vec![Endpoint {
                addr: host.parse()?,
                host,
                key: SPAWNED_ADMIN_KEY.into(),
            }],
            pid: Some(child.id()),
            child: Some(child),
            database_dir,
            _dir: Some(dir),
        })
    }

    /// Creates bench-0 .. bench-{n-1}, each with a large grant, 500 per batch.
    pub async fn setup_accounts(&self, n: usize) -> Result<()> {
        let endpoint = &self.endpoints[0];
        let mut sender = endpoint.connect().await?;
        for start in (0..n).step_by(500) {
            let mut ops = Vec::new();
            for i in start..(start + 500).min(n) {
                ops.push(
                    serde_json::json!({"op": "create_account", "account_id": format!("bench-{i}")}),
                );
                ops.push(serde_json::json!({"op": "grant", "account_id": format!("bench-{i}"), "amount": BENCH_GRANT_UNITS}));
            }
            let body = serde_json::to_vec(&serde_json::json!({ "operations": ops }))?;
            sender.ready().await?;
            let resp = sender
                .send_request(endpoint.request(hyper::Method::POST, "/v1/batch", Some(body.into())))
                .await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!(
                    "setup batch failed: {status} {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            if let Some(bad) = v["results"].as_array().and_then(|r| {
                r.iter()
                    .find(|x| x["ok"] != true && x["error"]["code"] != "account_exists")
            }) {
                bail!("setup operation failed: {bad}");
            }
        }
        Ok(())
    }

    /// Gives bench-0 .. bench-{n-1} their public credential
    /// ([`bench_credential`]). Adding a credential an account already has
    /// answers it again, so a second setup changes nothing.
    pub async fn setup_credentials(&self, n: usize) -> Result<()> {
        let endpoint = &self.endpoints[0];
        let mut sender = endpoint.connect().await?;
        for i in 0..n {
            let body = serde_json::to_vec(
                &serde_json::json!({"key": bench_credential(i), "public": true}),
            )?;
            let path = format!("/v1/accounts/bench-{i}/credentials");
            sender.ready().await?;
            let resp = sender
                .send_request(endpoint.request(hyper::Method::POST, &path, Some(body.into())))
                .await?;
            let status = resp.status();
            if !status.is_success() {
                let bytes = resp.into_body().collect().await?.to_bytes();
                bail!(
                    "adding a credential failed: {status} {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            resp.into_body().collect().await?;
        }
        Ok(())
    }

    /// The server's peak resident memory (VmHWM), when its pid is known (Linux).
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: let it shut down cleanly.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

/// The public credential setup gives bench account `i`.
pub fn bench_credential(i: usize) -> String {
    format!("bench-pk-{i}")
}
