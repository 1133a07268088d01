//! The shared backend: several Reckon nodes on one PostgreSQL.
//!
//! Each node queues requests and runs them in batches, like the SQLite
//! writer, but several batches may be in flight at once (from this node and
//! from others), so nothing in memory is trusted: every batch is one
//! transaction that
//! 1. locks the accounts it touches with `SELECT ... ORDER BY id FOR UPDATE
//!    SKIP LOCKED`: a request whose account another node's batch holds is
//!    not waited for but put off, with the rest of its job, to this node's
//!    next batch, which waits for that lock (in one global order on every
//!    node, so no deadlocks); see [`writer`],
//! 2. reads their open and targeted holds and the idempotency records it
//!    needs, after the locks are granted, so it sees everything the previous
//!    lock holder committed,
//! 3. runs the shared executor step (`executor::apply_batch`), and
//! 4. writes the result and commits; only then are callers answered.
//!
//! Accounts that do not exist yet cannot be locked. If another node creates
//! one between our read and our insert, the insert finds it and the whole
//! batch runs again from the start (as do serialization failures and
//! deadlocks reported by the server, which the lock order should prevent).
//!
//! Time-driven work is claimed with `FOR UPDATE SKIP LOCKED` (sweeps) and a
//! transaction-level advisory lock (purges), so every node may run the
//! scheduler and nothing is done twice.

mod rows;
mod schema;
pub mod scratch;

use crate::clock::Clock;
use crate::credential::{Credential, CredentialKey, CredentialRefusal};
use crate::error::{ExecError, StoreError};
use crate::executor::{apply_batch, plan, EventWrite, IdSet, Prefetched, BATCH_REQUESTS_MAX};
use crate::owners::HoldOwners;
use crate::request::{Executed, Request, StoredEvent};
use crate::{BoxFuture, Store, PAGE_SIZE_MAX};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use reckon_core::{
    AccountId, AccountState, Amount, Command, Event, EventKind, Hold, HoldStatus, Timestamp,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// Batches one node runs at once. One: larger batches spread PostgreSQL's
/// per-statement and per-transaction costs over more requests, and while a
/// node's only batch is in flight everything that arrives queues for the
/// next one, so batches are as large as the load makes them. Measured with
/// three nodes and 64 connections (`scripts/bench-postgres`, alternating
/// runs): against two writers per
/// node, one gave batches of ~12 requests instead of ~6, ~30 % less
/// PostgreSQL CPU per request, and +15-30 % usage/s, lock-settle pairs/s
/// and hot-account usage/s. The price, a batch waiting on another node's
/// row lock holding up this node's queue, is paid only by the passes that
/// run put-off jobs (see [`writer`]); the others never wait for a lock.
pub const WRITERS: usize = 1;
/// Connections for reads, besides the writers'.
pub const READ_CONNECTIONS: usize = 8;
/// Requests that may wait for a writer before submitters are slowed down.
pub const QUEUE_REQUESTS_MAX: usize = 16_384;
/// Times a batch runs again after a race (see the module comment) before
/// its requests fail.
const BATCH_ATTEMPTS_MAX: u32 = 16;
/// How long opening a connection may take when the URL does not say.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A writer gathering a batch stops after this many yields to the runtime
/// in a row that brought no new job (see [`gather`]).
const GATHER_IDLE_YIELDS_MAX: u32 = 2;
/// ... and after this many yields in all, so a steady trickle of requests
/// cannot hold a batch back.
const GATHER_YIELDS_MAX: u32 = 64;
/// Advisory lock a node holds while it purges idempotency records.
const PURGE_LOCK: i64 = 0x7265_636b_6f70; // "reckop"

type Reply = oneshot::Sender<Vec<Result<Executed, ExecError>>>;
type Job = (Vec<Request>, Reply);

/// A job in a writer's hands: its requests, where the answers go, and
/// whether a pass has put it off because another node held an account.
struct Pending {
    requests: Vec<Request>,
    reply: Reply,
    put_off: bool,
}

/// What a batch needs to know of each job in it (the jobs' requests are
/// consecutive in the batch).
#[derive(Clone, Copy)]
struct Span {
    len: usize,
    /// Put off once already: wait for its accounts' locks this time.
    put_off: bool,
}

/// What one pass did: an answer for each request it ran (`None` for the
/// requests of jobs it put off), and which jobs it put off.
struct Ran {
    results: Vec<Option<Result<Executed, ExecError>>>,
    put_off: Vec<bool>,
}

/// Handle to a PostgreSQL ledger. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    jobs: mpsc::Sender<Job>,
    owners: Arc<HoldOwners>,
}

/// Whether `url` is a PostgreSQL URL this backend can use (without connecting).
pub fn check_url(url: &str) -> Result<(), String> {
    url.parse::<tokio_postgres::Config>()
        .map(|_| ())
        .map_err(|e| format!("bad PostgreSQL URL: {e}"))
}

fn pool(url: &str, size: usize) -> Result<Pool, StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Connect(format!("bad PostgreSQL URL: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    // Our statements are prepared once per connection and run thousands of
    // times with arrays whose sizes the planner cannot know; by default it
    // keeps planning them afresh (most of the server's CPU in profiles), so
    // plan them once. Every one of them is meant to be an index lookup: a
    // plan made while a table was still small must not stay a sequential
    // scan once it has grown (that was the rest of the CPU).
    const SESSION: &str = "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off";
    let options = match config.get_options() {
        Some(o) => format!("{o} {SESSION}"),
        None => SESSION.to_owned(),
    };
    config.options(&options);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| StoreError::Connect(e.to_string()))
}

async fn connection(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(e),
        e => StoreError::Connect(e.to_string()),
    })
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`; tables go into the
    /// first schema of the `search_path`), applies migrations and starts
    /// this node's writers. Must be called inside a tokio runtime.
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<PostgresStore, StoreError> {
        let pool = pool(url, WRITERS + READ_CONNECTIONS)?;
        schema::migrate(&mut *connection(&pool).await?).await?;
        let (tx, rx) = mpsc::channel(QUEUE_REQUESTS_MAX);
        let rx = Arc::new(Mutex::new(rx));
        let owners = Arc::new(HoldOwners::default());
        for _ in 0..WRITERS {
            tokio::spawn(writer(
                pool.clone(),
                rx.clone(),
                clock.clone(),
                owners.clone(),
            ));
        }
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                jobs: tx,
                owners,
            }),
        })
    }

    /// Applies pending migrations without starting a server.
    pub async fn migrate(url: &str) -> Result<usize, StoreError> {
        let pool = pool(url, 1)?;
        let n = schema::migrate(&mut *connection(&pool).await?).await?;
        Ok(n)
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        connection(&self.inner.pool).await
    }
}

/// One of a node's writers: takes the jobs it put off last pass and
/// whatever else is queued (up to the batch limit), runs them as one
/// transaction, answers. Stops when every store handle is gone.
///
/// Why put jobs off: a batch that waited for a row lock another node's
/// batch holds would wait for that batch's commit to be flushed, and this
/// node's whole queue with it. Put off instead, the job joins the next
/// pass together with everything that queued meanwhile, so that pass
/// applies many requests under the one lock turn it waits for. With three
/// nodes on one hot account this made 40-48 % more `usage` requests per
/// second than waiting, in alternating runs (`scripts/bench-postgres`
/// setup); over 1,000 accounts, where locks rarely collide, it measured
/// the same as waiting. A job is put off at most once in a row: the next
/// pass waits for its locks, so an account every node wants costs one
/// extra round trip, not a busy loop.
async fn writer(
    pool: Pool,
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    clock: Arc<dyn Clock>,
    owners: Arc<HoldOwners>,
) {
    let mut last_now = Timestamp::EPOCH;
    let mut carried: Vec<Pending> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut carried);
        let mut queued: usize = batch.iter().map(|p| p.requests.len()).sum();
        {
            let mut rx = jobs.lock().await;
            if batch.is_empty() {
                let Some(job) = rx.recv().await else {
                    return;
                };
                take(&mut batch, &mut queued, job);
            }
            gather(&mut rx, &mut batch, &mut queued).await;
        }
        let spans: Vec<Span> = batch
            .iter()
            .map(|p| Span {
                len: p.requests.len(),
                put_off: p.put_off,
            })
            .collect();
        let mut requests = Vec::with_capacity(queued);
        let mut replies = Vec::with_capacity(batch.len());
        for p in batch {
            requests.extend(p.requests);
            replies.push(p.reply);
        }
        last_now = last_now.max(clock.now());
        let ran = match run_with_retries(&pool, &requests, &spans, last_now, None, &owners).await {
            Ok(ran) => ran,
            Err(e) => {
                tracing::error!(error = %e, requests = requests.len(), "batch failed to commit; nothing in it was applied");
                let msg = e.to_string();
                Ran {
                    results: requests
                        .iter()
                        .map(|_| Some(Err(ExecError::Store(StoreError::BatchFailed(msg.clone())))))
                        .collect(),
                    put_off: vec![false; spans.len()],
                }
            }
        };
        let mut requests = requests.into_iter();
        let mut results = ran.results.into_iter();
        for ((span, reply), put_off) in spans.iter().zip(replies).zip(ran.put_off) {
            let mine = requests.by_ref().take(span.len);
            let answers = results.by_ref().take(span.len);
            if put_off {
                answers.for_each(drop);
                carried.push(Pending {
                    requests: mine.collect(),
                    reply,
                    put_off: true,
                });
            } else {
                // `answers` are all `Some` for a job that ran.
                let _ = reply.send(answers.flatten().collect());
                mine.for_each(drop);
            }
        }
    }
}

/// Adds one job from the queue to the batch being gathered.
fn take(batch: &mut Vec<Pending>, queued: &mut usize, (requests, reply): Job) {
    *queued += requests.len();
    batch.push(Pending {
        requests,
        reply,
        put_off: false,
    });
}

/// Adds to `batch` the jobs queued now, then those that arrive while the
/// runtime serves the HTTP requests it has in hand: the writer yields, the
/// node's handlers parse what their sockets hold and submit it, and the
/// writer takes it, until `GATHER_IDLE_YIELDS_MAX` yields in a row bring
/// nothing (or `GATHER_YIELDS_MAX` in all). The writer shares the
/// runtime's threads with the handlers (one thread per node when several
/// share a machine), so without the yield a woken writer ran its batch
/// before the handlers had parsed what was already on their sockets: ~9.5
/// requests of the ~21 a node holds at 64 connections over three nodes,
/// the rest waiting a whole round trip for the next batch. Gathering made
/// ~12.5, and PostgreSQL's CPU per request fell ~15 % (a batch's statements,
/// commit and round trips are shared by more requests): `usage` +4-22 %
/// in four of four alternating pairs, `lock-settle` +9-14 % and one hot
/// account +3-12 % in two of two (`scripts/cpu-per-request-postgres`,
/// docs/performance-log.md). Under light load the first yield finds
/// nothing new and the second ends it: an open loop at 500 requests/s kept
/// its latency (p50 0.85-0.97 ms, within noise of 0.87-1.04).
async fn gather(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Pending>, queued: &mut usize) {
    let mut yields = 0;
    let mut idle = 0;
    loop {
        while *queued < BATCH_REQUESTS_MAX {
            match rx.try_recv() {
                Ok(job) => {
                    take(batch, queued, job);
                    idle = 0;
                }
                Err(_) => break,
            }
        }
        if *queued >= BATCH_REQUESTS_MAX
            || idle == GATHER_IDLE_YIELDS_MAX
            || yields == GATHER_YIELDS_MAX
        {
            return;
        }
        tokio::task::yield_now().await;
        yields += 1;
        idle += 1;
    }
}

/// What went wrong with one attempt at a batch.
enum Attempt {
    /// Another transaction got in the way; run the batch again.
    Raced(String),
    Failed(StoreError),
}

impl From<StoreError> for Attempt {
    fn from(e: StoreError) -> Attempt {
        let retry = match &e {
            StoreError::Postgres(pg) => matches!(
                pg.code(),
                Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::UNIQUE_VIOLATION
            ),
            _ => false,
        };
        if retry {
            Attempt::Raced(e.to_string())
        } else {
            Attempt::Failed(e)
        }
    }
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(e: tokio_postgres::Error) -> Attempt {
        Attempt::from(StoreError::Postgres(e))
    }
}

/// Runs a batch, again from the start after each race. `sweep` makes it a
/// scheduler pass instead: the batch is the sweeps of the accounts claimed
/// inside the transaction.
async fn run_with_retries(
    pool: &Pool,
    requests: &[Request],
    spans: &[Span],
    now: Timestamp,
    sweep: Option<usize>,
    owners: &HoldOwners,
) -> Result<Ran, StoreError> {
    let client = connection(pool).await?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match run_batch(&client, requests, spans, now, sweep, owners).await {
            Ok(results) => return Ok(results),
            Err(Attempt::Raced(why)) if attempt < BATCH_ATTEMPTS_MAX => {
                tracing::debug!(attempt, why, "batch raced another node; running it again");
                // A short, growing, jittered pause lets the other side finish.
                use std::hash::{BuildHasher, Hasher};
                // Different on every call and node, so racers fall out of step.
                let jitter = std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
                    % 5;
                tokio::time::sleep(std::time::Duration::from_millis(
                    u64::from(attempt) + jitter,
                ))
                .await;
            }
            Err(Attempt::Raced(why)) => return Err(StoreError::BatchFailed(why)),
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
}

/// One attempt at a batch, as an explicit `BEGIN ... COMMIT` on one
/// connection in two round trips (see `rows::begin_lock_and_load` and
/// `rows::write_and_commit`). Whatever fails, the transaction is rolled
/// back before the connection goes back to the pool.
async fn run_batch(
    client: &deadpool_postgres::Object,
    requests: &[Request],
    spans: &[Span],
    now: Timestamp,
    sweep: Option<usize>,
    owners: &HoldOwners,
) -> Result<Ran, Attempt> {
    let result = run_batch_open(client, requests, spans, now, sweep, owners).await;
    if result.is_err() {
        // Harmless when nothing is open; if even this fails the connection
        // is broken and the pool drops it.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// `spans` cut `requests` into jobs; a sweep pass (`sweep`) has none and
/// waits for every lock.
async fn run_batch_open(
    client: &deadpool_postgres::Object,
    requests: &[Request],
    spans: &[Span],
    now: Timestamp,
    sweep: Option<usize>,
    owners: &HoldOwners,
) -> Result<Ran, Attempt> {
    let claimed;
    let (requests, begun) = match sweep {
        None => (requests, false),
        Some(limit) => {
            client.batch_execute("BEGIN").await?;
            claimed = rows::claim_due_accounts(client, now, limit)
                .await?
                .into_iter()
                .map(|account| Request::new(Command::Sweep { account }))
                .collect::<Vec<_>>();
            (&claimed[..], true)
        }
    };
    if requests.is_empty() {
        if begun {
            client.batch_execute("ROLLBACK").await?;
        }
        return Ok(Ran {
            results: Vec::new(),
            put_off: vec![false; spans.len()],
        });
    }
    let plan = plan(requests);
    // Accounts of jobs put off before are waited for; all others skipped
    // when another transaction holds them. A sweep's accounts are claimed
    // (locked) already.
    let mut wait_for: IdSet<&AccountId> = IdSet::default();
    let mut at = 0;
    for span in spans {
        if span.put_off {
            wait_for.extend(requests[at..at + span.len].iter().map(Request::account_id));
        }
        at += span.len;
    }
    let (wait, skip): (Vec<&str>, Vec<&str>) = if begun {
        (
            plan.accounts.iter().map(AccountId::as_str).collect(),
            Vec::new(),
        )
    } else {
        let (wait, skip): (Vec<&AccountId>, Vec<&AccountId>) =
            plan.accounts.iter().partition(|id| wait_for.contains(id));
        (
            wait.into_iter().map(AccountId::as_str).collect(),
            skip.into_iter().map(AccountId::as_str).collect(),
        )
    };
    let targets: Vec<&str> = plan
        .target_holds
        .values()
        .flatten()
        .map(String::as_str)
        .collect();
    let keys: Vec<(&str, &str)> = plan
        .idempotency_keys
        .iter()
        .map(|(a, k)| (a.as_str(), k.as_str()))
        .collect();
    let (accounts, idempotency) =
        rows::begin_lock_and_load(client, !begun, &wait, &skip, &targets, &keys).await?;
    // Left out by `SKIP LOCKED`: missing, or held by another transaction.
    let unlocked: Vec<&str> = if accounts.len() == wait.len() + skip.len() {
        Vec::new()
    } else {
        let locked: IdSet<&str> = accounts.keys().map(AccountId::as_str).collect();
        skip.iter()
            .copied()
            .filter(|id| !locked.contains(id))
            .collect()
    };
    let held_elsewhere: IdSet<String> = if unlocked.is_empty() {
        IdSet::default()
    } else {
        rows::existing_accounts(client, &unlocked)
            .await?
            .into_iter()
            .collect()
    };
    // Jobs that touch an account held elsewhere wait for the next pass,
    // whole, so a job's operations still apply together and in order.
    let mut put_off = vec![false; spans.len()];
    let mut kept: Option<Vec<Request>> = None;
    if !held_elsewhere.is_empty() {
        let mut keep = Vec::with_capacity(requests.len());
        let mut at = 0;
        for (i, span) in spans.iter().enumerate() {
            let job = &requests[at..at + span.len];
            at += span.len;
            if job
                .iter()
                .any(|r| held_elsewhere.contains(r.account_id().as_str()))
            {
                put_off[i] = true;
            } else {
                keep.extend(job.iter().cloned());
            }
        }
        kept = Some(keep);
    }
    let run = kept.as_deref().unwrap_or(requests);
    if run.is_empty() {
        client.batch_execute("ROLLBACK").await?;
        return Ok(Ran {
            results: requests.iter().map(|_| None).collect(),
            put_off,
        });
    }
    let out = apply_batch(
        Prefetched {
            accounts,
            idempotency,
        },
        run,
        now,
    );
    if out.writes.is_empty() {
        client.batch_execute("ROLLBACK").await?;
    } else {
        rows::write_and_commit(client, &out.writes).await?;
        owners.learn(&out.writes);
    }
    let mut answers = out.results.into_iter();
    let mut results = Vec::with_capacity(requests.len());
    if begun {
        results.extend(answers.map(Some));
    } else {
        for (span, off) in spans.iter().zip(&put_off) {
            for _ in 0..span.len {
                results.push(if *off { None } else { answers.next() });
            }
        }
    }
    Ok(Ran { results, put_off })
}

/// The audit event of a credential change; `available_after` is the
/// account's balance at `now`, which the change leaves as it was.
fn credential_event(
    state: &AccountState,
    kind: EventKind,
    now: Timestamp,
    attrs: String,
) -> EventWrite {
    EventWrite {
        account_id: state.account.id.clone(),
        event: Event {
            kind,
            amount: Amount::ZERO,
            available_after: state.balance_at(now).available,
            at: now,
            grant_id: None,
            hold_id: None,
        },
        idempotency_key: None,
        attributes: Some(attrs),
    }
}

/// Locks one account for a change outside the executor (credentials), so
/// the change and its event are ordered with the account's batches.
async fn lock_account(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &AccountId,
) -> Result<Option<AccountState>, StoreError> {
    let (mut accounts, _) =
        rows::begin_lock_and_load(tx, false, &[id.as_str()], &[], &[], &[]).await?;
    Ok(accounts.remove(id))
}

impl Store for PostgresStore {
    fn submit_many(
        &self,
        requests: Vec<Request>,
    ) -> BoxFuture<'_, Vec<Result<Executed, ExecError>>> {
        Box::pin(async move {
            let n = requests.len();
            let (tx, rx) = oneshot::channel();
            if self.inner.jobs.send((requests, tx)).await.is_err() {
                return crate::unavailable(n);
            }
            rx.await.unwrap_or_else(|_| crate::unavailable(n))
        })
    }

    fn sweep_due(&self, now: Timestamp, limit: usize) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let ran = run_with_retries(
                &self.inner.pool,
                &[],
                &[],
                now,
                Some(limit),
                &self.inner.owners,
            )
            .await?;
            let results: Vec<_> = ran.results.into_iter().flatten().collect();
            for r in &results {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "sweep of an account failed; the next pass retries");
                }
            }
            Ok(results.len())
        })
    }

    fn account(&self, id: &AccountId) -> BoxFuture<'_, Result<Option<AccountState>, StoreError>> {
        let id = id.clone();
        Box::pin(async move { rows::load_account(&self.conn().await?, &id).await })
    }

    fn accounts(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AccountState>, StoreError>> {
        let after = after.cloned();
        Box::pin(async move {
            rows::load_accounts(
                &self.conn().await?,
                after.as_ref(),
                limit.min(PAGE_SIZE_MAX),
            )
            .await
        })
    }

    fn events(
        &self,
        id: &AccountId,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>> {
        let id = id.clone();
        Box::pin(async move {
            rows::load_events(&self.conn().await?, &id, before, limit.min(PAGE_SIZE_MAX)).await
        })
    }

    fn hold_accounts(
        &self,
        hold_ids: Vec<String>,
    ) -> BoxFuture<'_, Result<HashMap<String, AccountId>, StoreError>> {
        Box::pin(async move {
            let (mut known, missing) = self.inner.owners.lookup(hold_ids);
            if !missing.is_empty() {
                known.extend(rows::hold_accounts(&self.conn().await?, &missing).await?);
            }
            Ok(known)
        })
    }

    fn hold(&self, hold_id: &str) -> BoxFuture<'_, Result<Option<Hold>, StoreError>> {
        let hold_id = hold_id.to_owned();
        Box::pin(async move { rows::load_hold(&self.conn().await?, &hold_id).await })
    }

    fn holds(
        &self,
        id: &AccountId,
        status: Option<HoldStatus>,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Hold>, StoreError>> {
        let id = id.clone();
        Box::pin(async move {
            rows::load_holds(
                &self.conn().await?,
                &id,
                status,
                now,
                limit.min(PAGE_SIZE_MAX),
            )
            .await
        })
    }

    fn due_accounts(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AccountId>, StoreError>> {
        Box::pin(async move { rows::due_accounts(&self.conn().await?, now, limit).await })
    }

    fn purge_idempotency(&self, before: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            // One node purges at a time; the others skip this pass.
            let claimed: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PURGE_LOCK])
                .await?
                .get(0);
            if !claimed {
                return Ok(0);
            }
            let n = tx
                .execute(
                    "DELETE FROM idempotency WHERE created_at < $1",
                    &[&before.millis()],
                )
                .await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    fn open_holds(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Hold>, StoreError>> {
        Box::pin(async move { rows::open_holds(&self.conn().await?, now, limit).await })
    }

    fn add_credential(
        &self,
        account: &AccountId,
        key: CredentialKey,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Result<Credential, CredentialRefusal>, StoreError>> {
        let account = account.clone();
        let id = crate::credential::credential_id(&key);
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            let Some(state) = lock_account(&tx, &account).await? else {
                return Ok(Err(CredentialRefusal::AccountNotFound));
            };
            // Two accounts may race for one key: the unique index decides,
            // and the loser sees the winner's row.
            let inserted = tx
                .execute(
                    "INSERT INTO credentials (id, account_id, lookup, public, display, active, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, TRUE, $6, $6) ON CONFLICT DO NOTHING",
                    &[&id, &account.as_str(), &key.lookup, &key.public, &key.display, &now.millis()],
                )
                .await?;
            if inserted == 0 {
                drop(tx);
                let existing = rows::find_credential(&client, &key).await?.ok_or_else(|| {
                    StoreError::Corrupt("credential conflict without a credential".into())
                })?;
                return Ok(if existing.account_id == account {
                    Ok(existing)
                } else {
                    Err(CredentialRefusal::KeyInUse)
                });
            }
            let attrs = serde_json::json!({"credential_id": id, "public": key.public}).to_string();
            let event = credential_event(&state, EventKind::CredentialAdded, now, attrs);
            rows::write_events(&tx, &[event]).await?;
            let created = rows::find_credential(&tx, &key)
                .await?
                .ok_or_else(|| StoreError::Corrupt("credential vanished after insert".into()))?;
            tx.commit().await?;
            Ok(Ok(created))
        })
    }

    fn credentials(
        &self,
        account: &AccountId,
    ) -> BoxFuture<'_, Result<Vec<Credential>, StoreError>> {
        let account = account.clone();
        Box::pin(async move { rows::credentials(&self.conn().await?, &account).await })
    }

    fn set_credential_active(
        &self,
        account: &AccountId,
        credential_id: &str,
        active: bool,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Option<Credential>, StoreError>> {
        let (account, credential_id) = (account.clone(), credential_id.to_owned());
        Box::pin(async move {
            let mut client = self.conn().await?;
            let tx = client.transaction().await?;
            let Some(state) = lock_account(&tx, &account).await? else {
                return Ok(None);
            };
            let Some(current) = rows::credential_by_id(&tx, &account, &credential_id).await? else {
                return Ok(None);
            };
            if current.active == active {
                return Ok(Some(current));
            }
            tx.execute(
                "UPDATE credentials SET active = $1, updated_at = $2 WHERE id = $3",
                &[&active, &now.millis(), &credential_id],
            )
            .await?;
            let kind = if active {
                EventKind::CredentialActivated
            } else {
                EventKind::CredentialDeactivated
            };
            let attrs = serde_json::json!({"credential_id": credential_id}).to_string();
            rows::write_events(&tx, &[credential_event(&state, kind, now, attrs)]).await?;
            tx.commit().await?;
            Ok(Some(Credential {
                active,
                updated_at: now,
                ..current
            }))
        })
    }

    fn find_credential(
        &self,
        key: &CredentialKey,
    ) -> BoxFuture<'_, Result<Option<Credential>, StoreError>> {
        let key = key.clone();
        Box::pin(async move { rows::find_credential(&self.conn().await?, &key).await })
    }

    fn setting(&self, key: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        let key = key.to_owned();
        Box::pin(async move { rows::setting(&self.conn().await?, &key).await })
    }

    fn set_setting(&self, key: &str, value: &str) -> BoxFuture<'_, Result<(), StoreError>> {
        let (key, value) = (key.to_owned(), value.to_owned());
        Box::pin(async move {
            self.conn()
                .await?
                .execute(
                    "INSERT INTO settings (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&key, &value],
                )
                .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> (Job, oneshot::Receiver<Vec<Result<Executed, ExecError>>>) {
        let (reply, answer) = oneshot::channel();
        let check = Command::Check {
            account: AccountId::parse("a").unwrap(),
            amount: Amount::ZERO,
        };
        ((vec![Request::new(check)], reply), answer)
    }

    /// Jobs a handler submits between the writer's yields join the batch.
    #[tokio::test(flavor = "current_thread")]
    async fn gather_takes_jobs_submitted_while_it_yields() {
        let (tx, mut rx) = mpsc::channel(16);
        let submitter = tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..3 {
                let (j, answer) = job();
                tx.send(j).await.unwrap();
                answers.push(answer);
                tokio::task::yield_now().await;
            }
            answers
        });
        let (mut batch, mut queued) = (Vec::new(), 0);
        gather(&mut rx, &mut batch, &mut queued).await;
        assert_eq!((batch.len(), queued), (3, 3));
        submitter.await.unwrap();
    }

    /// With nothing arriving it stops after the idle yields, and never
    /// takes more than a batch's worth.
    #[tokio::test(flavor = "current_thread")]
    async fn gather_stops_when_idle_or_full() {
        let (tx, mut rx) = mpsc::channel(16);
        let (mut batch, mut queued) = (Vec::new(), 0);
        gather(&mut rx, &mut batch, &mut queued).await;
        assert_eq!(queued, 0);
        let (j, _answer) = job();
        tx.send(j).await.unwrap();
        let (j, _answer2) = job();
        tx.send(j).await.unwrap();
        let mut queued = BATCH_REQUESTS_MAX - 1;
        gather(&mut rx, &mut batch, &mut queued).await;
        assert_eq!(batch.len(), 1, "stopped once the batch was full");
    }
}
