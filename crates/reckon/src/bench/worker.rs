//! The load itself: one task per connection, closed or open loop.

use super::machine;
use super::report::ScenarioResult;
use super::server::{Endpoint, Target};
use super::Scenario;
use anyhow::Result;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Method;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct LoadConfig {
    pub scenario: Scenario,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub rate: Option<f64>,
    pub accounts: usize,
    pub batch_size: usize,
    pub idempotency_keys: bool,
}

/// What one connection draws its requests from.
struct Draw {
    rng: Rng,
    keys: Option<Keys>,
}

/// Idempotency keys for one connection: unique across connections and runs
/// (a repeated key would be answered as a replay, which costs less).
struct Keys {
    prefix: String,
    sent: u64,
}

impl Keys {
    fn next(&mut self) -> String {
        self.sent += 1;
        format!("{}-{}", self.prefix, self.sent)
    }
}

/// Pre-built batch bodies the batch scenario rotates through, so building
/// JSON does not eat the load generator's CPU.
const BATCH_BODY_VARIANTS: usize = 16;

struct Stats {
    latency_us: Histogram<u64>,
    ops: u64,
    requests: u64,
    errors: BTreeMap<String, u64>,
}

/// A tiny xorshift: the bench needs spread, not cryptography.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

pub async fn run_load(server: &Target, config: &LoadConfig) -> Result<ScenarioResult> {
    let batch_bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..BATCH_BODY_VARIANTS)
            .map(|v| {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (v as u64 + 1));
                let ops: Vec<serde_json::Value> = (0..config.batch_size)
                    .map(|_| serde_json::json!({"op": "usage", "account_id": format!("bench-{}", rng.below(config.accounts)), "amount": "1"}))
                    .collect();
                Bytes::from(serde_json::to_vec(&serde_json::json!({ "operations": ops })).expect("json"))
            })
            .collect(),
    );
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + config.warmup;
    let end = measure_from + config.duration;
    // Open loop: one OS thread keeps the schedule (std sleep is precise to
    // tens of microseconds; tokio's timer rounds to whole milliseconds, which
    // would show up as latency) and hands each intended send time to a
    // connection, round robin. A busy connection's ticks queue up, and their
    // latency counts from the intended time.
    let mut ticks: Vec<Option<tokio::sync::mpsc::UnboundedReceiver<Instant>>> = Vec::new();
    if let Some(rate) = config.rate {
        let interval = Duration::from_secs_f64(1.0 / rate);
        let mut senders = Vec::new();
        for _ in 0..config.connections {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            senders.push(tx);
            ticks.push(Some(rx));
        }
        std::thread::Builder::new()
            .name("bench-ticker".into())
            .spawn(move || {
                let mut at = start;
                let mut i = 0usize;
                while at < end {
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    if senders[i % senders.len()].send(at).is_err() {
                        return;
                    }
                    i += 1;
                    at += interval;
                }
            })?;
    } else {
        ticks.resize_with(config.connections, || None);
    }
    // The machine's CPU over exactly the measured window.
    let machine = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = machine::ticks()?;
        tokio::time::sleep_until(end.into()).await;
        machine::share(before, machine::ticks()?)
    });
    let mut tasks = Vec::new();
    // Tells this run's idempotency keys from every earlier run's.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for (i, mut tick) in ticks.into_iter().enumerate() {
        let target = server.endpoints[i % server.endpoints.len()].clone();
        let mut sender = target.connect().await?;
        let scenario = config.scenario;
        let accounts = config.accounts;
        let batch_size = config.batch_size as u64;
        let bodies = batch_bodies.clone();
        let idempotency_keys = config.idempotency_keys;
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats {
                latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
                ops: 0,
                requests: 0,
                errors: BTreeMap::new(),
            };
            let mut draw = Draw {
                rng: Rng(0x2545_f491_4f6c_dd1d ^ ((i as u64 + 1) * 0x9e37_79b9)),
                keys: idempotency_keys.then(|| Keys {
                    prefix: format!("bench-{run:x}-{i}"),
                    sent: 0,
                }),
            };
            tokio::time::sleep_until(start.into()).await;
            loop {
                let intended = match tick.as_mut() {
                    Some(rx) => match rx.recv().await {
                        Some(t) => t,
                        None => break,
                    },
                    None => Instant::now(),
                };
                if intended >= end {
                    break;
                }
                let outcome = perform(
                    &mut sender,
                    &target,
                    scenario,
                    accounts,
                    batch_size,
                    &bodies,
                    &mut draw,
                )
                .await;
                let done = Instant::now();
                if intended < measure_from {
                    continue;
                }
                stats.requests += 1;
                match outcome {
                    Ok(ops) => {
                        stats.ops += ops;
                        let _ = stats
                            .latency_us
                            .record(done.duration_since(intended).as_micros().max(1) as u64);
                    }
                    Err(what) => *stats.errors.entry(what).or_insert(0) += 1,
                }
                if sender.is_closed() {
                    // The server closed the connection: open a new one.
                    match target.connect().await {
                        Ok(s) => sender = s,
                        Err(_) => break,
                    }
                }
            }
            stats
        }));
    }
    let mut total = Stats {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        ops: 0,
        requests: 0,
        errors: BTreeMap::new(),
    };
    for t in tasks {
        let s = t.await?;
        total.latency_us.add(&s.latency_us).expect("same bounds");
        total.ops += s.ops;
        total.requests += s.requests;
        for (k, v) in s.errors {
            *total.errors.entry(k).or_insert(0) += v;
        }
    }
    let secs = config.duration.as_secs_f64();
    let h = &total.latency_us;
    Ok(ScenarioResult {
        scenario: config.scenario.name(),
        connections: config.connections,
        rate: config.rate,
        accounts: config.accounts,
        batch_size: (config.scenario == Scenario::Batch).then_some(config.batch_size),
        duration_secs: secs,
        requests: total.requests,
        ops: total.ops,
        ops_per_sec: total.ops as f64 / secs,
        requests_per_sec: total.requests as f64 / secs,
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        errors: total.errors,
        machine: machine.await?,
    })
}

const ONE: &[u8] = br#"{"amount":"1"}"#;

/// Sends one request and reads the whole answer: `Ok(status, body)`, or a
/// label for what went wrong.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<Bytes, String> {
    sender.ready().await.map_err(|_| "connection".to_owned())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|_| "connection".to_owned())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|_| "connection".to_owned())?
        .to_bytes();
    if status.is_success() {
        Ok(body)
    } else {
        Err(status.as_u16().to_string())
    }
}

/// One operation of the scenario; returns how many ledger operations it was.
async fn perform(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Endpoint,
    scenario: Scenario,
    accounts: usize,
    batch_size: u64,
    bodies: &[Bytes],
    draw: &mut Draw,
) -> Result<u64, String> {
    let rng = &mut draw.rng;
    let scenario = match scenario {
        Scenario::Mixed => match rng.below(10) {
            0..=5 => Scenario::Usage,
            6..=8 => Scenario::Check,
            _ => Scenario::LockSettle,
        },
        s => s,
    };
    let account = rng.below(accounts);
    match scenario {
        Scenario::Healthz => send(sender, target.request(Method::GET, "/healthz", None))
            .await
            .map(|_| 1),
        Scenario::Check => {
            let path = format!("/v1/accounts/bench-{account}/check");
            send(
                sender,
                target.request(Method::POST, &path, Some(Bytes::from_static(ONE))),
            )
            .await
            .map(|_| 1)
        }
        Scenario::Usage => {
            let path = format!("/v1/accounts/bench-{account}/usage");
            let mut request = target.request(Method::POST, &path, Some(Bytes::from_static(ONE)));
            if let Some(keys) = draw.keys.as_mut() {
                let key = keys.next().parse().expect("an ASCII key");
                request.headers_mut().insert("idempotency-key", key);
            }
            send(sender, request).await.map(|_| 1)
        }
        Scenario::LockSettle => {
            let body = format!(r#"{{"account_id":"bench-{account}","amount":"2"}}"#);
            let answer = send(
                sender,
                target.request(Method::POST, "/v1/holds", Some(Bytes::from(body))),
            )
            .await?;
            let v: serde_json::Value =
                serde_json::from_slice(&answer).map_err(|_| "bad-json".to_owned())?;
            let id = v["id"].as_str().ok_or_else(|| "no-hold-id".to_owned())?;
            let path = format!("/v1/holds/{id}/settle");
            send(
                sender,
                target.request(Method::POST, &path, Some(Bytes::from_static(ONE))),
            )
            .await
            .map(|_| 1)
        }
        Scenario::Nilauth | Scenario::NilauthCredential => {
            // Locks 2, costs 1: the unlock settles (a cost of 0 would release).
            let (path, body) = if scenario == Scenario::Nilauth {
                let body = format!(r#"{{"user_id":"bench-{account}","amount":2}}"#);
                ("/v1/funds/lock", body)
            } else {
                let credential = crate::bench::server::bench_credential(account);
                let body = format!(r#"{{"credential":"{credential}","amount":2}}"#);
                ("/v1/balance/lock/public", body)
            };
            let answer = send(
                sender,
                target.request(Method::POST, path, Some(Bytes::from(body))),
            )
            .await?;
            let v: serde_json::Value =
                serde_json::from_slice(&answer).map_err(|_| "bad-json".to_owned())?;
            let id = v["lock_id"]
                .as_str()
                .ok_or_else(|| "no-lock-id".to_owned())?;
            let body = format!(r#"{{"lock_id":"{id}","real_cost":1}}"#);
            send(
                sender,
                target.request(Method::POST, "/v1/funds/unlock", Some(Bytes::from(body))),
            )
            .await
            .map(|_| 1)
        }
        Scenario::Batch => {
            let body = bodies[rng.below(bodies.len())].clone();
            send(
                sender,
                target.request(Method::POST, "/v1/batch", Some(body)),
            )
            .await
            .map(|_| batch_size)
        }
        Scenario::Mixed => unreachable!("mixed picks a concrete scenario above"),
    }
}
