//! Fresh, throw-away schemas on a PostgreSQL server, for tests and
//! benchmarks: each gets its own, so nothing is shared between them, and
//! the schema is dropped when the handle is.
//!
//! Which server: `RECKON_TEST_POSTGRES_URL`, or the local one
//! (`postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached,
//! [`ScratchSchema::for_tests`] prints why the test is skipped, except
//! under `CI=true`, where a missing server fails the test: CI must run them.

use crate::error::StoreError;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_postgres::NoTls;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema that exists until this handle is dropped.
#[derive(Debug)]
pub struct ScratchSchema {
    /// Connects with the schema first on the `search_path`.
    pub url: String,
    base: String,
    name: String,
}

impl ScratchSchema {
    pub async fn create(base: &str) -> Result<ScratchSchema, StoreError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "reckon_t_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (client, connection) = tokio_postgres::connect(base, NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await?;
        let sep = if base.contains('?') { '&' } else { '?' };
        Ok(ScratchSchema {
            url: format!("{base}{sep}options=-c%20search_path%3D{name}"),
            base: base.to_owned(),
            name,
        })
    }

    /// A fresh schema on the test server, or `None` (with the reason
    /// printed) when there is no server and this is not CI.
    pub async fn for_tests(test: &str) -> Option<ScratchSchema> {
        let base = std::env::var("RECKON_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        match ScratchSchema::create(&base).await {
            Ok(s) => Some(s),
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but PostgreSQL at {base} is unusable ({e}); PostgreSQL tests must run in CI")
            }
            Err(e) => {
                // Written to the process's stderr, not through `eprintln!`,
                // which the test harness captures and hides on success.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: PostgreSQL at {base} is unusable ({e}). \
                     Start it or set RECKON_TEST_POSTGRES_URL to run the PostgreSQL tests."
                );
                None
            }
        }
    }
}

impl Drop for ScratchSchema {
    fn drop(&mut self) {
        // Drop may run inside a runtime, which cannot block: use a thread
        // with its own.
        let (base, name) = (self.base.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, connection) = tokio_postgres::connect(&base, NoTls).await.ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test schema {}", self.name);
        }
    }
}
