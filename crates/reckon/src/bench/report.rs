//! Printing and saving results.

use super::disk::FsyncProbe;
use super::machine::MachineShare;
use super::BenchArgs;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize, Clone, Debug)]
pub struct ScenarioResult {
    pub scenario: &'static str,
    pub connections: usize,
    pub rate: Option<f64>,
    pub accounts: usize,
    pub batch_size: Option<usize>,
    pub duration_secs: f64,
    pub requests: u64,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub requests_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Failed requests by HTTP status (or "connection").
    pub errors: BTreeMap<String, u64>,
    /// The whole machine's CPU over the measured window (Linux).
    pub machine: Option<MachineShare>,
}

pub fn print(r: &ScenarioResult) {
    let mode = match r.rate {
        Some(rate) => format!("open loop at {rate:.0} req/s"),
        None => "closed loop".to_owned(),
    };
    println!(
        "{:<18} {:>4} conns, {}, {} accounts: {:>10.0} ops/s ({:.0} req/s)  latency p50 {} p99 {} p99.9 {} max {}  errors {:?}",
        r.scenario,
        r.connections,
        mode,
        r.accounts,
        r.ops_per_sec,
        r.requests_per_sec,
        us(r.p50_us),
        us(r.p99_us),
        us(r.p999_us),
        us(r.max_us),
        r.errors
    );
    if let Some(m) = r.machine {
        println!("{:<18} {m}", "");
    }
}

fn us(v: u64) -> String {
    if v >= 1000 {
        format!("{:.2}ms", v as f64 / 1000.0)
    } else {
        format!("{v}us")
    }
}

/// The disk probe around the scenarios (absent without a directory to probe).
#[derive(Serialize)]
pub struct Disk {
    pub before: Option<FsyncProbe>,
    pub after: Option<FsyncProbe>,
}

#[derive(Serialize)]
struct Report<'a> {
    reckon_version: &'static str,
    cpus: usize,
    hot: bool,
    scenarios: &'a [ScenarioResult],
    server_peak_rss_kb: Option<u64>,
    disk: Disk,
}

pub fn write_json(
    path: &str,
    args: &BenchArgs,
    results: &[ScenarioResult],
    rss_kb: Option<u64>,
    disk: Disk,
) -> Result<()> {
    let report = Report {
        reckon_version: env!("CARGO_PKG_VERSION"),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        hot: args.hot,
        scenarios: results,
        server_peak_rss_kb: rss_kb,
        disk,
    };
    std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    Ok(())
}
