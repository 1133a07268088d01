//! `reckon bench`: a load generator for a running Reckon (or one it starts).
//!
//! Each connection is one HTTP/1.1 keep-alive connection driven by its own
//! task. Closed loop sends the next request when the previous answer is in
//! (maximum throughput). Open loop (`--rate`) schedules requests at fixed
//! intervals and measures latency from the *intended* send time, so a slow
//! server is charged for the queue it causes (no coordinated omission).
//!
//! Scenarios: `healthz` (no database: the HTTP ceiling of the machine),
//! `check`, `usage`, `lock-settle` (one op = a lock and its settle),
//! `batch` (`--batch-size` usage operations per request; ops count each
//! operation), `mixed` (60 % usage, 30 % check, 10 % lock-settle), and
//! `nilauth` (one op = a lock and its unlock through the nilauth-credit
//! protocol, `/v1/funds/lock` and `/v1/funds/unlock`, as seed 002's
//! middleware spends), and `nilauth-credential` (the same, the lock naming
//! the account by a public credential, `/v1/balance/lock/public`, as the
//! nilauth-credit Python client does; setup gives each account one).
//!
//! Around the scenarios it probes the disk under the database (`disk.rs`),
//! and during each it records where the machine's CPU time went
//! (`machine.rs`): on a VM those move the figures more than most code
//! changes do.

mod disk;
mod machine;
mod report;
mod server;
mod worker;

use anyhow::{bail, Context, Result};
use clap::Args;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Scenarios to run in order, comma-separated: healthz, check, usage, lock-settle, batch, mixed, nilauth, nilauth-credential.
    #[arg(long, default_value = "healthz,usage")]
    pub scenarios: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Unmeasured seconds before each scenario.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Open loop: total requests per second across all connections.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Accounts the load is spread over.
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// Send every operation to one account.
    #[arg(long)]
    pub hot: bool,
    /// Operations per request in the batch scenario.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Give every `usage` request its own `Idempotency-Key`, as a client
    /// that retries safely does (each is stored for the retention period).
    #[arg(long)]
    pub idempotency_keys: bool,
    /// A running server to load, or several nodes on one database
    /// (comma-separated; connections are spread over them). Without it,
    /// bench starts its own server on a fresh database.
    #[arg(long)]
    pub url: Option<String>,
    /// Admin key of the server at --url (for setup).
    #[arg(long, env = "RECKON_ADMIN_KEY")]
    pub key: Option<String>,
    /// Process id of the server at --url, to report its peak RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Database for the server bench starts (default: a fresh temporary one).
    #[arg(long)]
    pub database: Option<String>,
    /// The accounts already exist (bench-0 .. bench-N with large grants).
    #[arg(long)]
    pub skip_setup: bool,
    /// Where to probe the disk's fsync latency before and after the
    /// scenarios. Default: the directory of the SQLite database bench starts;
    /// no probe for a server at --url unless given.
    #[arg(long)]
    pub fsync_probe_dir: Option<std::path::PathBuf>,
    /// Write the results as JSON here.
    #[arg(long, default_value = "bench-result.json")]
    pub out: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Healthz,
    Check,
    Usage,
    LockSettle,
    Batch,
    Mixed,
    Nilauth,
    NilauthCredential,
}

impl Scenario {
    fn parse(text: &str) -> Result<Scenario> {
        Ok(match text.trim() {
            "healthz" => Scenario::Healthz,
            "check" => Scenario::Check,
            "usage" => Scenario::Usage,
            "lock-settle" | "lock+settle" => Scenario::LockSettle,
            "batch" => Scenario::Batch,
            "mixed" => Scenario::Mixed,
            "nilauth" => Scenario::Nilauth,
            "nilauth-credential" => Scenario::NilauthCredential,
            other => bail!("unknown scenario {other:?}"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Healthz => "healthz",
            Scenario::Check => "check",
            Scenario::Usage => "usage",
            Scenario::LockSettle => "lock-settle",
            Scenario::Batch => "batch",
            Scenario::Mixed => "mixed",
            Scenario::Nilauth => "nilauth",
            Scenario::NilauthCredential => "nilauth-credential",
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let scenarios = args
        .scenarios
        .split(',')
        .map(Scenario::parse)
        .collect::<Result<Vec<_>>>()?;
    if args.connections == 0 || args.accounts == 0 || args.batch_size == 0 || args.batch_size > 1000
    {
        bail!("--connections and --accounts must be at least 1, --batch-size 1 to 1000");
    }
    let server = match &args.url {
        Some(url) => server::Target::external(url, args.key.clone(), args.server_pid)?,
        None => server::Target::spawn(args.database.as_deref()).await?,
    };
    if !args.skip_setup && scenarios.iter().any(|s| *s != Scenario::Healthz) {
        let started = std::time::Instant::now();
        server
            .setup_accounts(args.accounts)
            .await
            .context("creating bench accounts")?;
        eprintln!(
            "setup: {} accounts in {:.1}s",
            args.accounts,
            started.elapsed().as_secs_f64()
        );
        if scenarios.contains(&Scenario::NilauthCredential) {
            let started = std::time::Instant::now();
            server
                .setup_credentials(args.accounts)
                .await
                .context("giving bench accounts credentials")?;
            eprintln!(
                "setup: {} credentials in {:.1}s",
                args.accounts,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let probe_dir = args
        .fsync_probe_dir
        .clone()
        .or_else(|| server.database_dir.clone());
    let disk_before = probe_disk(probe_dir.as_deref(), "before").await?;
    let mut results = Vec::new();
    for scenario in scenarios {
        let config = worker::LoadConfig {
            scenario,
            connections: args.connections,
            warmup: Duration::from_secs_f64(args.warmup_secs),
            duration: Duration::from_secs_f64(args.duration_secs),
            rate: args.rate,
            accounts: if args.hot { 1 } else { args.accounts },
            batch_size: args.batch_size,
            idempotency_keys: args.idempotency_keys,
        };
        let result = worker::run_load(&server, &config).await?;
        report::print(&result);
        results.push(result);
    }
    let disk_after = probe_disk(probe_dir.as_deref(), "after").await?;
    let rss_kb = server.peak_rss_kb();
    if let Some(kb) = rss_kb {
        println!("server peak RSS: {:.1} MB", kb as f64 / 1024.0);
    }
    let disk = report::Disk {
        before: disk_before,
        after: disk_after,
    };
    report::write_json(&args.out, &args, &results, rss_kb, disk)?;
    println!("results written to {}", args.out);
    server.stop();
    Ok(())
}

/// Runs the disk probe in `dir`, if there is one, and prints it.
async fn probe_disk(dir: Option<&std::path::Path>, when: &str) -> Result<Option<disk::FsyncProbe>> {
    let Some(dir) = dir.map(|d| d.to_owned()) else {
        if when == "before" {
            println!("disk: not probed (no SQLite file of its own; --fsync-probe-dir names a directory on the database's disk)");
        }
        return Ok(None);
    };
    let probe = tokio::task::spawn_blocking(move || disk::probe(&dir))
        .await?
        .context("probing the disk's fsync latency")?;
    println!("disk {when}: {probe}");
    Ok(Some(probe))
}
