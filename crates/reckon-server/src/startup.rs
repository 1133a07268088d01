//! Wiring: open the store, resolve keys, start the scheduler, serve. The
//! binary and the API tests both start Reckon through [`run`], so tests
//! exercise the same path users do, with their own clock and listener.

use crate::config::{Config, Database};
use crate::scheduler::{self, SchedulerConfig};
use crate::{app, AppState, Keys, Limits, Shared};
use reckon_store::{Clock, PostgresStore, SqliteStore, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("could not open the database: {0}")]
    Store(#[from] reckon_store::StoreError),
    #[error("could not set up API keys: {0}")]
    Keys(String),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn open_store(
    database: &Database,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, StartError> {
    match database {
        Database::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path, clock)?)),
        Database::Postgres(url) => Ok(Arc::new(PostgresStore::connect(&url.0, clock).await?)),
    }
}

/// Applies pending migrations; returns how many ran.
pub async fn migrate(database: &Database) -> Result<usize, StartError> {
    Ok(match database {
        Database::Sqlite(path) => SqliteStore::migrate(path)?,
        Database::Postgres(url) => PostgresStore::migrate(&url.0).await?,
    })
}

/// Opens everything and serves on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    clock: Arc<dyn Clock>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let store: Arc<dyn Store> = match &config.database {
        Database::Sqlite(path) => {
            let bytes = config.sqlite_compact_cache_bytes;
            let sqlite = SqliteStore::open_with_compact_cache(path, clock.clone(), bytes)?;
            // Serving, unlike a one-shot CLI command: worth reading the file
            // into the OS page cache in the background.
            sqlite.warm_page_cache()?;
            // And the writer's cache, so the first requests after a restart
            // on many accounts do not each read their account from SQLite.
            sqlite.fill_cache()?;
            Arc::new(sqlite)
        }
        Database::Postgres(_) => open_store(&config.database, clock.clone()).await?,
    };
    let (keys, generated) = Keys::resolve(&config.service_keys, &config.admin_keys, store.as_ref())
        .await
        .map_err(|e| StartError::Keys(e.message))?;
    if let Some(key) = generated {
        // Deliberately printed, not logged: shown once, to the operator.
        println!(
            "No admin key was configured, so Reckon generated one. It is shown only this once:"
        );
        println!("    RECKON_ADMIN_KEY={key}");
        println!(
            "Keep it safe; only its hash is stored. Set RECKON_ADMIN_KEY to use your own instead."
        );
    }
    let state = AppState::new(Shared {
        store: store.clone(),
        clock: clock.clone(),
        keys,
        limits: Limits {
            hold_ttl_default_secs: config.hold_ttl_default_secs,
            hold_ttl_max_secs: config.hold_ttl_max_secs,
        },
    });
    let app = app(state, &config.cors_origins);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(scheduler::run(
        store,
        clock,
        SchedulerConfig {
            interval: Duration::from_secs(config.sweep_interval_secs.max(1)),
            idempotency_retention_secs: config.idempotency_retention_secs,
        },
        stop_rx,
    ));
    // Only now, with the store open: scripts wait for this line, and a
    // database that cannot be opened must not look like a server that is up.
    println!("reckon listening on http://{}", listener.local_addr()?);
    tracing::info!(listen = %listener.local_addr()?, database = ?config.database, "reckon is serving");
    crate::serve(listener, app, shutdown).await?;
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    tracing::info!("reckon stopped; every acknowledged write is on disk");
    Ok(())
}
