//! The embedded backend.
//!
//! One OS thread owns the only writing connection. It takes every queued
//! request it can (up to [`BATCH_REQUESTS_MAX`]), runs the shared executor
//! step on them, writes the result and commits once: group commit. It does
//! not answer yet. The commit only writes the WAL (`synchronous = NORMAL` on
//! this connection); the answers go to the durability threads
//! (`durable.rs`), which fsync the WAL and only then answer a batch, once
//! an fsync that began after its commit has ended. So an acknowledged write
//! survives a power cut, exactly as with `synchronous = FULL`, but the
//! writer builds the next batch while the previous one's fsync runs, and a
//! batch committed while one fsync is in flight starts a second at once
//! (at most two in flight); each fsync covers every batch committed before
//! it began.
//!
//! Reads use a small pool of separate connections; WAL lets them run while
//! the writer writes, and they see only committed batches.

mod account_log;
mod cache;
mod compact;
mod credentials;
mod durable;
mod idempotency;
mod report;
mod rows;
mod schema;
#[cfg(test)]
mod tests;
mod warm;

pub use account_log::LOG_SLACK_ROWS;
pub use cache::DECODED_ACCOUNTS_MAX;
pub use compact::COMPACT_BYTES_MAX;
pub use warm::WARM_BYTES_MAX;

use crate::clock::Clock;
use crate::credential::{Credential, CredentialKey, CredentialRefusal};
use crate::error::{ExecError, StoreError};
use crate::executor::{apply_batch, plan, BATCH_REQUESTS_MAX};
use crate::owners::HoldOwners;
use crate::request::{Executed, Request, StoredEvent};
use crate::{BoxFuture, Store, PAGE_SIZE_MAX};
use account_log::AccountLog;
use reckon_core::{AccountId, AccountState, Hold, HoldStatus, Timestamp};
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Requests that may wait for the writer before submitters are slowed down.
pub const QUEUE_REQUESTS_MAX: usize = 16_384;
/// Read connections kept open.
pub const READ_CONNECTIONS: usize = 4;
/// How long a connection waits on a lock held by another process (the CLI).
const BUSY_TIMEOUT_MS: u64 = 5_000;
/// WAL frames (pages) after which the writer finishes a checkpoint itself so
/// the WAL can start over: 16 MiB at 1 KiB pages. Bounds disk use and the
/// time a restart spends reading the WAL.
const WAL_FRAMES_MAX: i64 = 16 * 1024;
/// Size the WAL file is cut back to after it is reset.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;
/// Database page size for new files; see `open`.
const PAGE_SIZE_BYTES: i64 = 1024;
/// Page cache of the writer's connection, in KiB: the hot part of the
/// indexes and tables (the writer keeps accounts in its own cache). Small on
/// purpose: whenever a B-tree split reorders pages, SQLite parks a page at
/// the pending-byte page number, and the commit then scans the whole page
/// cache to drop pages past the end of the file (`pcache1TruncateUnsafe`).
/// With 16 MiB that scan was ~19 % of the writer's time in `lock-settle`;
/// 4 MiB measured ~9 % less writer CPU there, and no loss at 1M accounts.
/// 1 MiB took the scan from ~8.5 % to ~2.4 % of the writer's samples
/// (`lock-settle`), with `batch` higher in four of four alternating pairs
/// and the million-account `usage` within noise: the hot pages besides
/// accounts are few, and missed ones come from the OS page cache.
const WRITER_CACHE_KIB: i64 = 1024;
/// Pages the writer's cache may grow to within a transaction before SQLite
/// spills dirty pages to the WAL mid-batch (`PRAGMA cache_spill`): more than
/// a batch of `BATCH_REQUESTS_MAX` requests dirties (a lock on a random
/// account dirties about five pages), so batches do not spill however small
/// the cache. The cache shrinks back to `WRITER_CACHE_KIB` as pages go clean.
const WRITER_SPILL_PAGES: i64 = 32 * 1024;
/// Page cache of each read connection, in KiB.
const READER_CACHE_KIB: i64 = 8 * 1024;
/// Prepared statements each connection keeps (`prepare_cached`). More than
/// the writer uses in one batch: at rusqlite's default of 16 the writer's
/// ~21 statements evicted each other, and re-preparing them was ~13 % of its
/// time (and, through freeing and allocating, most of its `madvise` calls).
const STATEMENTS_CACHED: usize = 64;
/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

type Reply = oneshot::Sender<Vec<Result<Executed, ExecError>>>;
/// Runs on the writer's connection; returns how to answer once durable.
type Maintenance = Box<dyn FnOnce(&mut Connection) -> durable::Answer + Send>;

enum Job {
    /// Requests from one caller, with when they were queued (for the
    /// writer's debug report).
    Execute(Vec<Request>, Reply, Instant),
    /// A non-ledger write (settings, purges) run on the writer's connection
    /// between batches, so the writer stays the only writer.
    Maintain(Maintenance, Touches),
    /// Start reading accounts into the cache whenever no job waits
    /// ([`SqliteStore::fill_cache`]).
    Fill,
}

/// What a maintenance job may write, which decides whether the writer's
/// cache survives it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Touches {
    /// Account rows or events (credential changes append events, which
    /// moves chain heads the cache holds): the cache is cleared.
    Accounts,
    /// Neither (the idempotency purge, settings): the cache is kept. The
    /// purge runs every few seconds, and clearing the cache each time
    /// emptied its compact tier long before it could fill.
    Elsewhere,
}

/// Handle to an open SQLite ledger. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::Sender<Job>,
    owners: Arc<HoldOwners>,
    /// Whether idempotency records from before `idempotency_log` remain.
    legacy: Arc<idempotency::Legacy>,
    /// Where each account's newest row is (see `account_log.rs`).
    log: Arc<AccountLog>,
    /// Always holds a connection for each available permit of `read_permits`.
    readers: Mutex<Vec<Connection>>,
    read_permits: tokio::sync::Semaphore,
    path: PathBuf,
    /// The database file, open for the store's lifetime (see `open`).
    database: Arc<std::fs::File>,
    /// Dropped with the store (see `drop`): tells the checkpoint thread to stop.
    stop_checkpoints: Option<std::sync::mpsc::Sender<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// When the last handle goes, close the queue and wait for the writer to
/// finish what it has and close its connection, then for the checkpoint
/// thread: the last connection to close checkpoints the WAL into the
/// database file and removes it, so the next start has nothing to recover.
/// The read connections close next (fields drop in order), and only then
/// the handle on the file (`database`), so it never closes under an open
/// connection (see `SqliteStore::open`).
impl Drop for Inner {
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = writer.join();
        }
        drop(self.stop_checkpoints.take());
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
    }
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    // NO_MUTEX: a `Connection` is used by one thread at a time (it is not
    // `Sync`), so SQLite's per-call connection mutex only cost time: with
    // it, locking was ~7 % of the writer's instructions.
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
    // Only takes effect on a new, empty database (before WAL mode and the
    // first table). Small pages: a commit writes every page it dirtied to the
    // WAL, and changes to accounts spread over the file land on different
    // pages, so bytes per commit scale with the page size.
    conn.pragma_update(None, "page_size", PAGE_SIZE_BYTES)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // After a checkpoint lets the WAL start over, shrink the file to this.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
    // FULL: the WAL is fsynced at every commit, so nothing acknowledged is
    // lost on power failure. The writer's connection switches to NORMAL and
    // fsyncs through its durability threads instead (see the module docs).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies
    /// migrations and starts the writer thread.
    pub fn open(path: impl AsRef<Path>, clock: Arc<dyn Clock>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with_compact_cache(path, clock, COMPACT_BYTES_MAX)
    }

    /// [`SqliteStore::open`] with at most `compact_cache_bytes` for the
    /// writer cache's compact tier ([`COMPACT_BYTES_MAX`] by default; 0
    /// keeps none). Its index takes up to ~34 MB more as it fills.
    pub fn open_with_compact_cache(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
        compact_cache_bytes: usize,
    ) -> Result<SqliteStore, StoreError> {
        let cache = cache::Cache::new(DECODED_ACCOUNTS_MAX, compact_cache_bytes);
        SqliteStore::open_with_cache(path, clock, cache)
    }

    /// [`SqliteStore::open`] with the writer's cache given (tests shrink it).
    fn open_with_cache(
        path: impl AsRef<Path>,
        clock: Arc<dyn Clock>,
        cache: cache::Cache,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut writer = open(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        schema::migrate(&mut writer)?;
        let log = Arc::new(AccountLog::open(&writer)?);
        let legacy = Arc::new(idempotency::Legacy::open(&writer)?);
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        writer.pragma_update(None, "cache_spill", WRITER_SPILL_PAGES)?;
        // Commits write the WAL without fsync; nothing is answered until the
        // durability threads have fsynced it. (NORMAL still fsyncs the WAL
        // before a checkpoint copies it, and the database after.)
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        let durability = durable::start(&path)?;
        let checkpointer = open(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        // A handle on the file itself, for the checkpoint thread to flush it
        // and the server to warm it (`warm.rs`). Kept open as long as the
        // store, never closed while SQLite's connections are open: closing
        // any descriptor of the file cancels every POSIX lock this process
        // holds on it, SQLite's included (sqlite.org/howtocorrupt.html, 2.2),
        // and another process could then take the database as its own,
        // e.g. delete the WAL when it closes.
        let database = Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?,
        );
        let checkpointed = database.clone();
        let (stop_checkpoints, stop) = std::sync::mpsc::channel();
        let wal_too_big = Arc::new(AtomicBool::new(false));
        let flag = wal_too_big.clone();
        let checkpointer = std::thread::Builder::new()
            .name("reckon-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, checkpointed, stop, flag))?;
        let readers = (0..READ_CONNECTIONS)
            .map(|_| {
                let c = open(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
                c.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
                Ok(c)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (tx, rx) = mpsc::channel(QUEUE_REQUESTS_MAX);
        let owners = Arc::new(HoldOwners::default());
        let writer = std::thread::Builder::new()
            .name("reckon-writer".into())
            .spawn({
                let (owners, log, legacy) = (owners.clone(), log.clone(), legacy.clone());
                move || {
                    let parts = WriterParts {
                        clock,
                        wal_too_big,
                        owners,
                        log,
                        legacy,
                        cache,
                        durability,
                    };
                    writer_loop(writer, rx, parts)
                }
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                jobs: tx,
                owners,
                log,
                legacy,
                readers: Mutex::new(readers),
                read_permits: tokio::sync::Semaphore::new(READ_CONNECTIONS),
                path,
                database,
                stop_checkpoints: Some(stop_checkpoints),
                checkpointer: Some(checkpointer),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Reads the database file into the OS page cache on a background
    /// thread (see `warm.rs`). The server calls it once at start; one-shot
    /// commands (the CLI) do not.
    pub fn warm_page_cache(&self) -> std::io::Result<()> {
        warm::start(self.inner.database.clone())
    }

    /// Has the writer read every account into its cache, one short step
    /// at a time whenever no job waits (see `fill`). The server calls it
    /// once at start; one-shot commands (the CLI) do not.
    pub fn fill_cache(&self) -> Result<(), StoreError> {
        self.inner
            .jobs
            .try_send(Job::Fill)
            .map_err(|_| StoreError::Unavailable)
    }

    /// Applies pending migrations without starting a server.
    pub fn migrate(path: impl AsRef<Path>) -> Result<usize, StoreError> {
        let mut conn = open(
            path.as_ref(),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        schema::migrate(&mut conn)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a pooled read connection off the async runtime. Callers
    /// beyond the pool's size wait for a connection instead of opening one.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = self
            .inner
            .read_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable)?;
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || {
            let conn = inner
                .readers
                .lock()
                .expect("reader pool lock")
                .pop()
                .expect("a permit guarantees a connection");
            let result = f(&conn);
            inner.readers.lock().expect("reader pool lock").push(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Unavailable)?;
        drop(permit);
        result
    }

    async fn maintain<T: Send + 'static>(
        &self,
        touches: Touches,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Maintain(
            Box::new(move |conn| {
                let result = f(conn);
                Box::new(move || {
                    let _ = tx.send(result);
                })
            }),
            touches,
        );
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable)?;
        rx.await.map_err(|_| StoreError::Unavailable)?
    }
}

/// What the writer thread owns besides its connection and its queue.
struct WriterParts {
    clock: Arc<dyn Clock>,
    wal_too_big: Arc<AtomicBool>,
    owners: Arc<HoldOwners>,
    log: Arc<AccountLog>,
    legacy: Arc<idempotency::Legacy>,
    cache: cache::Cache,
    durability: durable::Durability,
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>, parts: WriterParts) {
    let WriterParts {
        clock,
        wal_too_big,
        owners,
        log,
        legacy,
        mut cache,
        durability,
    } = parts;
    let mut last_now = Timestamp::EPOCH;
    let mut pending: Option<Job> = None;
    let mut report = report::Report::new(Instant::now());
    // Reading accounts into the cache while no job waits (`fill`): from
    // `Job::Fill` until done.
    let mut filling: Option<Filling> = None;
    loop {
        let first = match pending.take() {
            Some(job) => job,
            None if filling.is_some() => match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let f = filling.as_mut().expect("filling");
                    match fill(&conn, &mut cache, &log, std::mem::take(&mut f.cursor)) {
                        Ok(Some(cursor)) => {
                            f.cursor = cursor;
                            f.steps += 1;
                        }
                        Ok(None) => {
                            tracing::debug!(
                                steps = f.steps,
                                elapsed_ms = f.began.elapsed().as_millis() as u64,
                                "writer cache filled"
                            );
                            filling = None;
                        }
                        // Only a head start is lost: batches read what they miss.
                        Err(e) => {
                            tracing::warn!(error = %e, "reading accounts into the writer cache failed; stopped");
                            filling = None;
                        }
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            },
            None => match rx.blocking_recv() {
                Some(job) => job,
                None => break, // every handle dropped: shut down
            },
        };
        let (requests, replies, started) = match first {
            Job::Fill => {
                filling = Some(Filling {
                    cursor: rows::FillCursor::default(),
                    began: Instant::now(),
                    steps: 0,
                });
                continue;
            }
            Job::Maintain(f, touches) => {
                let answer = f(&mut conn);
                if touches == Touches::Accounts {
                    cache.clear();
                }
                durability.answer_when_durable(answer, true);
                continue;
            }
            Job::Execute(requests, reply, queued) => {
                let started = Instant::now();
                let mut all = Vec::new();
                report.waits.add(started.saturating_duration_since(queued));
                let mut replies = vec![(requests.len(), reply)];
                all.extend(requests);
                // Take whatever else is queued, up to the batch limit.
                while all.len() < BATCH_REQUESTS_MAX {
                    match rx.try_recv() {
                        Ok(Job::Execute(more, reply, queued)) => {
                            report.waits.add(started.saturating_duration_since(queued));
                            replies.push((more.len(), reply));
                            all.extend(more);
                        }
                        Ok(job @ (Job::Maintain(..) | Job::Fill)) => {
                            pending = Some(job);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                (all, replies, started)
            }
        };
        // Time never runs backwards inside the ledger, even if the wall clock does.
        last_now = last_now.max(clock.now());
        let (results, committed) = match run_batch(
            &mut conn, &mut cache, &owners, &log, &legacy, &requests, last_now,
        ) {
            Ok(done) => done,
            Err(e) => {
                cache.clear();
                tracing::error!(error = %e, requests = requests.len(), "batch failed to commit; nothing in it was applied");
                let msg = e.to_string();
                let failed = requests
                    .iter()
                    .map(|_| Err(ExecError::Store(StoreError::BatchFailed(msg.clone()))))
                    .collect();
                (failed, false)
            }
        };
        report.work.add(started.elapsed());
        if let Some((seconds, batches, waits)) = report.take_if_due(Instant::now()) {
            tracing::debug!(
                seconds,
                batches = batches.count(),
                batch_mean_us = batches.mean_us(),
                batch_max_us = batches.max_us(),
                jobs = waits.count(),
                queue_wait_mean_us = waits.mean_us(),
                queue_wait_max_us = waits.max_us(),
                "writer batches"
            );
        }
        // Even a batch that wrote nothing waits its turn: its answers (a
        // replay, a balance) may rest on an earlier batch not yet fsynced.
        durability.answer_when_durable(
            Box::new(move || {
                let mut results = results.into_iter();
                for (n, reply) in replies {
                    let _ = reply.send(results.by_ref().take(n).collect());
                }
            }),
            committed,
        );
        if wal_too_big.swap(false, Ordering::Relaxed) {
            catch_up_wal(&conn);
        }
    }
    // Answer everything committed before closing the connection.
    durability.finish();
}

/// Where the writer's [`fill`] stands, and since when it runs (for its
/// debug log).
struct Filling {
    cursor: rows::FillCursor,
    began: Instant,
    steps: u64,
}

/// One step of reading accounts ahead of need into the cache, so a server
/// restarted on many accounts does not read each one from SQLite at its
/// first request: a miss costs a random read of the account log and one of
/// the open holds, and after a restart on a million accounts ~90 % of the
/// first 5 s's requests missed, still ~25 % after 35 s. Filling them all
/// takes ~4.6 s on an idle server (~4.6 µs an account). It runs only when no
/// job is queued, and a step is short ([`rows::FILL_STEP_ROWS`]), so a
/// request that arrives meanwhile waits little. Inside the write lock,
/// like a batch, so what it keeps is what is committed; then rolled back.
fn fill(
    conn: &Connection,
    cache: &mut cache::Cache,
    log: &AccountLog,
    cursor: rows::FillCursor,
) -> Result<Option<rows::FillCursor>, StoreError> {
    let tx = begin_reading_accounts(conn, cache, log)?;
    rows::fill(&tx, cache, log, cursor)
}

/// The write transaction a batch or a fill step reads accounts in, with
/// the cache and the account log's map made current inside it.
fn begin_reading_accounts<'c>(
    conn: &'c Connection,
    cache: &mut cache::Cache,
    log: &AccountLog,
) -> Result<WriteTx<'c>, StoreError> {
    let tx = WriteTx::begin(conn)?;
    // Inside the write lock: has another process committed since our last batch?
    cache.validate(
        tx.prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?,
    );
    // Also inside it: every account row appended so far, by this writer's
    // last batch, a maintenance job or another process, is in the map
    // before any account is read.
    log.catch_up(&tx)?;
    Ok(tx)
}

/// `BEGIN IMMEDIATE` .. `COMMIT` with both statements cached: rusqlite's
/// `Transaction` parses them anew every time, a measurable cost at thousands
/// of batches a second. Rolls back when dropped before a commit.
struct WriteTx<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> WriteTx<'c> {
    fn begin(conn: &'c Connection) -> Result<WriteTx<'c>, StoreError> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(WriteTx { conn, open: true })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

fn run_batch(
    conn: &mut Connection,
    cache: &mut cache::Cache,
    owners: &HoldOwners,
    log: &AccountLog,
    legacy: &idempotency::Legacy,
    requests: &[Request],
    now: Timestamp,
) -> Result<(Vec<Result<Executed, ExecError>>, bool), StoreError> {
    let tx = begin_reading_accounts(conn, cache, log)?;
    let (prefetched, mut heads) = rows::prefetch(&tx, &plan(requests), cache, log, legacy)?;
    let out = apply_batch(prefetched, requests, now);
    let writes = &out.writes;
    let committed = !writes.is_empty();
    if !committed {
        // Only reads, rejections and replays: nothing to make durable
        // (dropping the transaction rolls it back).
        drop(tx);
    } else {
        let placed = rows::write_batch(&tx, log, writes, &mut heads)?;
        tx.commit()?;
        // The map learns the batch's log rows from it, not by reading them
        // back at the next batch's catch-up.
        log.learn(placed);
    }
    owners.learn(&out.writes);
    // Committed (or unchanged): the cache may keep it.
    let head = |id: &AccountId| heads.get(id).copied().unwrap_or_default();
    for state in out.unchanged.into_values() {
        let h = head(&state.account.id);
        cache.put(state, h);
    }
    for w in out.writes.accounts {
        let h = head(&w.after.account.id);
        cache.put(w.after, h);
    }
    Ok((out.results, committed))
}

/// Copies committed WAL frames into the database file off the writer's
/// thread, so the writer never stalls on it (`wal_autocheckpoint` is off on
/// the writer). PASSIVE never waits for readers or the writer. Stops when
/// the store is dropped.
///
/// SQLite fsyncs the database file only after a checkpoint that copied the
/// whole WAL, which under a steady stream of commits none of these does: the
/// pages they copy stay dirty in the OS until the writer's catch-up (below)
/// flushes them all at once. With accounts spread over a large file that was
/// a 16k-frame WAL's worth of random pages, and the writer, and every
/// request waiting on it, stalled 80-150 ms each time. So before asking for a
/// catch-up this thread flushes the database file itself, copies what came
/// in meanwhile and flushes again; the writer is then left with a few
/// milliseconds of frames. The extra flushes only make copied pages durable
/// sooner: the WAL still holds every frame until SQLite's own fsync has
/// succeeded and the WAL starts over.
fn checkpoint_loop(
    conn: Connection,
    database: Arc<std::fs::File>,
    stop: std::sync::mpsc::Receiver<()>,
    wal_too_big: Arc<AtomicBool>,
) {
    let checkpoint = || {
        // (busy, frames in the WAL, frames copied into the database)
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
    };
    loop {
        match stop.recv_timeout(CHECKPOINT_INTERVAL) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => match checkpoint() {
                Ok(frames) if frames > WAL_FRAMES_MAX => {
                    let started = std::time::Instant::now();
                    flush_database(&database);
                    if let Err(e) = checkpoint() {
                        tracing::warn!(error = %e, "checkpoint failed; retrying");
                    }
                    flush_database(&database);
                    tracing::debug!(
                        frames,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "database file flushed; asking the writer to catch the WAL up"
                    );
                    wal_too_big.store(true, Ordering::Relaxed)
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "checkpoint failed; retrying"),
            },
            _ => return,
        }
    }
}

/// Writes the database file's dirty pages to disk. A failure aborts the
/// process, as for the WAL (see `durable`): after a failed fsync the kernel
/// may have dropped pages it could not write, and only a restart, which
/// copies the whole WAL again, is safe.
fn flush_database(database: &std::fs::File) {
    if let Err(e) = database.sync_data() {
        tracing::error!(error = %e, "fsync of the database file failed; stopping so the WAL is copied again on restart");
        std::process::abort()
    }
}

/// Run by the writer between batches when the checkpoint thread saw the WAL
/// pass [`WAL_FRAMES_MAX`] and flushed what it had copied. Under a steady
/// stream of commits the background checkpoints never find the WAL fully
/// copied at the moment a write begins, and only then may SQLite start the
/// WAL over, so it would grow without bound. This copies the few frames
/// committed since the background thread's last pass and fsyncs them, so the
/// next write transaction restarts the WAL (and `journal_size_limit` cuts
/// the file back).
fn catch_up_wal(conn: &Connection) {
    let started = std::time::Instant::now();
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        // The writer, and every request behind it, waited this long.
        Ok(()) => tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "WAL caught up"
        ),
        Err(e) => tracing::warn!(error = %e, "writer-side checkpoint failed; retrying later"),
    }
}

impl Store for SqliteStore {
    fn submit_many(
        &self,
        requests: Vec<Request>,
    ) -> BoxFuture<'_, Vec<Result<Executed, ExecError>>> {
        Box::pin(async move {
            let n = requests.len();
            let (tx, rx) = oneshot::channel();
            if self
                .inner
                .jobs
                .send(Job::Execute(requests, tx, Instant::now()))
                .await
                .is_err()
            {
                return crate::unavailable(n);
            }
            rx.await.unwrap_or_else(|_| crate::unavailable(n))
        })
    }

    fn account(&self, id: &AccountId) -> BoxFuture<'_, Result<Option<AccountState>, StoreError>> {
        let (id, log) = (id.clone(), self.inner.log.clone());
        Box::pin(self.read(move |c| rows::load_account(c, &log, &id, &BTreeSet::new())))
    }

    fn accounts(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AccountState>, StoreError>> {
        let (after, log) = (after.cloned(), self.inner.log.clone());
        Box::pin(
            self.read(move |c| {
                rows::load_accounts(c, &log, after.as_ref(), limit.min(PAGE_SIZE_MAX))
            }),
        )
    }

    fn events(
        &self,
        id: &AccountId,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let (id, log) = (id.clone(), self.inner.log.clone());
        Box::pin(
            self.read(move |c| rows::load_events(c, &log, &id, before, limit.min(PAGE_SIZE_MAX))),
        )
    }

    fn hold_accounts(
        &self,
        hold_ids: Vec<String>,
    ) -> BoxFuture<'_, Result<std::collections::HashMap<String, AccountId>, StoreError>> {
        Box::pin(async move {
            let (mut known, missing) = self.inner.owners.lookup(hold_ids);
            if !missing.is_empty() {
                known.extend(self.read(move |c| rows::hold_accounts(c, &missing)).await?);
            }
            Ok(known)
        })
    }

    fn hold(&self, hold_id: &str) -> BoxFuture<'_, Result<Option<Hold>, StoreError>> {
        let hold_id = hold_id.to_owned();
        Box::pin(self.read(move |c| rows::load_hold(c, &hold_id)))
    }

    fn holds(
        &self,
        id: &AccountId,
        status: Option<HoldStatus>,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Hold>, StoreError>> {
        let id = id.clone();
        let log = self.inner.log.clone();
        Box::pin(
            self.read(move |c| {
                rows::load_holds(c, &log, &id, status, now, limit.min(PAGE_SIZE_MAX))
            }),
        )
    }

    fn due_accounts(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AccountId>, StoreError>> {
        Box::pin(self.read(move |c| rows::due_accounts(c, now, limit)))
    }

    fn purge_idempotency(&self, before: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        // In bounded steps, each its own writer job: requests queued
        // meanwhile are served between them (100,000 records took the
        // writer ~0.3 s at once).
        Box::pin(async move {
            let mut purged = 0;
            loop {
                let legacy = self.inner.legacy.clone();
                let step = self
                    .maintain(Touches::Elsewhere, move |c| {
                        idempotency::purge(c, before, idempotency::PURGE_STEP_RECORDS, &legacy)
                    })
                    .await?;
                if step == 0 {
                    return Ok(purged);
                }
                purged += step;
            }
        })
    }

    fn open_holds(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Hold>, StoreError>> {
        Box::pin(self.read(move |c| rows::open_holds(c, now, limit)))
    }

    fn add_credential(
        &self,
        account: &AccountId,
        key: CredentialKey,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Result<Credential, CredentialRefusal>, StoreError>> {
        let (account, log) = (account.clone(), self.inner.log.clone());
        let id = crate::credential::credential_id(&key);
        Box::pin(self.maintain(Touches::Accounts, move |c| {
            credentials::add(c, &log, &account, &key, id, now)
        }))
    }

    fn credentials(
        &self,
        account: &AccountId,
    ) -> BoxFuture<'_, Result<Vec<Credential>, StoreError>> {
        let account = account.clone();
        Box::pin(self.read(move |c| credentials::list(c, &account)))
    }

    fn set_credential_active(
        &self,
        account: &AccountId,
        credential_id: &str,
        active: bool,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Option<Credential>, StoreError>> {
        let (account, credential_id) = (account.clone(), credential_id.to_owned());
        let log = self.inner.log.clone();
        Box::pin(self.maintain(Touches::Accounts, move |c| {
            credentials::set_active(c, &log, &account, &credential_id, active, now)
        }))
    }

    fn find_credential(
        &self,
        key: &CredentialKey,
    ) -> BoxFuture<'_, Result<Option<Credential>, StoreError>> {
        let key = key.clone();
        Box::pin(self.read(move |c| credentials::find(c, &key)))
    }

    fn setting(&self, key: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let key = key.to_owned();
        Box::pin(self.read(move |c| rows::setting(c, &key)))
    }

    fn set_setting(&self, key: &str, value: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let (key, value) = (key.to_owned(), value.to_owned());
        Box::pin(self.maintain(Touches::Elsewhere, move |c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [&key, &value],
            )?;
            Ok(())
        }))
    }
}
