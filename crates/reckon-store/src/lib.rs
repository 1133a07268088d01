//! # reckon-store: where the ledger lives
//!
//! - [`Store`]: the one abstraction the server talks to. Writes go through
//!   [`Store::submit`], which hands them to the backend's single writer;
//!   reads go straight to the database.
//! - [`executor`]: the batch step all backends share (prefetch plan,
//!   pure apply, list of writes). Idempotency is decided here.
//! - [`sqlite`]: the embedded backend: one writer thread owning one
//!   connection, group commit in WAL mode, a small pool of read connections.
//! - [`clock`]: the injected clock ([`SystemClock`], [`ManualClock`]).
//! - [`codec`]: how core values sit in columns (shared by every backend).
//!
//! - [`postgres`]: the shared backend: several nodes on one database, one
//!   transaction per batch locking the touched accounts in id order.

pub mod clock;
pub mod codec;
pub mod credential;
pub mod error;
pub mod executor;
pub mod owners;
pub mod postgres;
pub mod request;
pub mod sqlite;

pub use clock::{Clock, ManualClock, SystemClock};
pub use credential::{Credential, CredentialKey, CredentialRefusal};
pub use error::{ExecError, StoreError};
pub use postgres::PostgresStore;
pub use request::{Executed, IdempotencyKey, Request, StoredEvent, IDEMPOTENCY_KEY_BYTES_MAX};
pub use sqlite::SqliteStore;

use reckon_core::{AccountId, AccountState, Command, Hold, HoldStatus, Timestamp};
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The answer to `n` requests when the executor is gone.
fn unavailable(n: usize) -> Vec<Result<Executed, ExecError>> {
    (0..n)
        .map(|_| Err(ExecError::Store(StoreError::Unavailable)))
        .collect()
}

/// Largest page any listing returns.
pub const PAGE_SIZE_MAX: usize = 500;

/// The storage contract. Every backend passes the same contract test suite
/// (`tests/contract.rs`).
pub trait Store: Send + Sync + 'static {
    /// Executes one request; answers only after it is durable.
    fn submit(&self, request: Request) -> BoxFuture<'_, Result<Executed, ExecError>> {
        Box::pin(async move {
            let mut results = self.submit_many(vec![request]).await;
            results.pop().expect("one request, one result")
        })
    }

    /// Executes requests in order, committed together; one answer each.
    fn submit_many(
        &self,
        requests: Vec<Request>,
    ) -> BoxFuture<'_, Vec<Result<Executed, ExecError>>>;

    /// The account's stored state (expiries not yet materialised: use
    /// `AccountState::balance_at` to read a balance).
    fn account(&self, id: &AccountId) -> BoxFuture<'_, Result<Option<AccountState>, StoreError>>;

    /// Accounts ordered by id, after `after`, at most `limit`.
    fn accounts(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AccountState>, StoreError>>;

    /// Events of one account, newest first, with `seq < before`.
    fn events(
        &self,
        id: &AccountId,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, StoreError>>;

    /// The accounts the given holds belong to; unknown ids are absent.
    fn hold_accounts(
        &self,
        hold_ids: Vec<String>,
    ) -> BoxFuture<'_, Result<std::collections::HashMap<String, AccountId>, StoreError>>;

    /// One hold, in whatever status it is.
    fn hold(&self, hold_id: &str) -> BoxFuture<'_, Result<Option<Hold>, StoreError>>;

    /// Holds of one account, newest first, optionally of one status as seen
    /// at `now` (see `Hold::status_at`); returned statuses are as of `now`.
    fn holds(
        &self,
        id: &AccountId,
        status: Option<HoldStatus>,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Hold>, StoreError>>;

    /// Accounts with an expiry due at or before `now`, for the sweeper.
    fn due_accounts(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<AccountId>, StoreError>>;

    /// Sweeps accounts with an expiry due at or before `now` (at most
    /// `limit`); returns how many it swept. A backend shared by several
    /// nodes claims the accounts, so no two nodes sweep one at once.
    fn sweep_due(&self, now: Timestamp, limit: usize) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let due = self.due_accounts(now, limit).await?;
            let n = due.len();
            let requests = due
                .into_iter()
                .map(|account| Request::new(Command::Sweep { account }))
                .collect();
            for result in self.submit_many(requests).await {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "sweep of an account failed; the next pass retries");
                }
            }
            Ok(n)
        })
    }

    /// Deletes idempotency records created before `before`; returns how many.
    fn purge_idempotency(&self, before: Timestamp) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Open holds of all accounts (status held, not yet expired at `now`),
    /// oldest first, at most `limit`.
    fn open_holds(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Hold>, StoreError>>;

    /// Adds a credential to an account. Adding the same key to the same
    /// account again returns the existing credential (idempotent).
    fn add_credential(
        &self,
        account: &AccountId,
        key: CredentialKey,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Result<Credential, CredentialRefusal>, StoreError>>;

    /// Credentials of one account, oldest first.
    fn credentials(
        &self,
        account: &AccountId,
    ) -> BoxFuture<'_, Result<Vec<Credential>, StoreError>>;

    /// Sets a credential active or inactive; `None` when the account has no
    /// credential with that id. Setting the state it already has changes nothing.
    fn set_credential_active(
        &self,
        account: &AccountId,
        credential_id: &str,
        active: bool,
        now: Timestamp,
    ) -> BoxFuture<'_, Result<Option<Credential>, StoreError>>;

    /// The credential a key names, active or not.
    fn find_credential(
        &self,
        key: &CredentialKey,
    ) -> BoxFuture<'_, Result<Option<Credential>, StoreError>>;

    /// Server settings kept in the database (e.g. the generated admin key's hash).
    fn setting(&self, key: &str) -> BoxFuture<'_, Result<Option<String>, StoreError>>;
    fn set_setting(&self, key: &str, value: &str) -> BoxFuture<'_, Result<(), StoreError>>;
}
