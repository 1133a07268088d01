//! The scheduler: wakes up and has the store sweep accounts with expiries
//! due, which submits ordinary `Sweep` commands for them (on PostgreSQL each
//! node claims the accounts it sweeps, so every node may run this); it also forgets idempotency records
//! past their retention. It decides nothing itself: the core does, and
//! correctness never waits for it (every read and write applies due expiries
//! lazily). Sweeping makes expiry events appear in the audit trail on time.

use reckon_core::Timestamp;
use reckon_store::{Clock, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// Most accounts one pass sweeps; the next pass takes the rest.
pub const SWEEP_ACCOUNTS_MAX: usize = 1_000;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub interval: Duration,
    pub idempotency_retention_secs: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub accounts_swept: usize,
    pub idempotency_purged: u64,
}

/// One pass at `now`. Tests call this directly with a fake clock.
pub async fn sweep_once(
    store: &dyn Store,
    now: Timestamp,
    retention_secs: u64,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport {
        accounts_swept: store.sweep_due(now, SWEEP_ACCOUNTS_MAX).await?,
        ..SweepReport::default()
    };
    let cutoff = Timestamp::from_millis(
        now.millis()
            .saturating_sub(retention_secs.saturating_mul(1000) as i64),
    );
    report.idempotency_purged = store.purge_idempotency(cutoff).await?;
    Ok(report)
}

/// Runs passes every `interval` until `shutdown` fires.
pub async fn run(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: SchedulerConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = shutdown.changed() => return,
        }
        match sweep_once(
            store.as_ref(),
            clock.now(),
            config.idempotency_retention_secs,
        )
        .await
        {
            Ok(r) if r.accounts_swept > 0 || r.idempotency_purged > 0 => {
                tracing::info!(
                    accounts = r.accounts_swept,
                    keys = r.idempotency_purged,
                    "swept"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed; retrying next interval"),
        }
    }
}
