//! The nilauth-credit protocol, as spoken by the Python client
//! `nilauth-credit-middleware` 0.1.3 (`CreditLockingClient`).
//!
//! | route | core command |
//! |---|---|
//! | `POST /v1/balance/lock/{private,public}` `{credential, amount}` | credential -> account, `Lock` |
//! | `POST /v1/funds/lock` `{user_id, amount}` (older form) | `Lock` |
//! | `POST /v1/balance/unlock`, `/v1/funds/unlock` `{lock_id, real_cost}` | `Settle`, or `Release` when the cost is 0 |
//! | `POST /v1/credential/validate` `{credential_key, is_public}` | credential lookup |
//! | `GET /v1/summary`, `GET /v1/health` | reads |
//!
//! `user_id` is the account id. Errors are `{"error": "<text>"}` with the
//! statuses the client maps: lock 404 (unknown credential or user), 400
//! (insufficient balance); unlock 404 (unknown lock), 400 (invalid).
//!
//! Three choices the protocol leaves open:
//! - Its clients send amounts as floats (`0.5 + 1.7 * 0.1`). Locks round up
//!   to the next micro-unit (a reservation never covers less than asked),
//!   costs round half up. The native API refuses such amounts instead.
//! - An unlock is idempotent: it carries a key derived from the lock and the
//!   cost, so a retried unlock with the same cost answers 200 again instead of
//!   failing; a second unlock with another cost is 400.
//! - A cost above the lock is charged under the account's `allow` policy;
//!   under `reject` (the default) or `cap` it is capped at the lock, because
//!   the protocol has no error a client could act on after the work is done.

use crate::auth::ServiceAuth;
use crate::error::ApiError;
use crate::native::holds::{hold_owner, ttl_secs};
use crate::wire::IdempotencyHeader;
use crate::wire::Json;
use crate::AppState;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use reckon_core::{
    AccountId, Amount, Command, LockCmd, Rejection, ReleaseCmd, Rounding, SettleCmd, SettleOverage,
};
use reckon_store::{CredentialKey, ExecError, IdempotencyKey, Request as LedgerRequest};
use serde::Deserialize;
use serde_json::{json, Value};

/// Most accounts and most locks `GET /v1/summary` lists. The protocol has no
/// paging; the cap keeps one call from reading a million accounts.
pub const SUMMARY_ITEMS_MAX: usize = 1_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/summary", get(summary))
        .route("/v1/balance/lock/private", post(lock_by_kind::<false>))
        .route("/v1/balance/lock/public", post(lock_by_kind::<true>))
        .route("/v1/balance/lock/{kind}", post(no_such_lock))
        .route("/v1/balance/unlock", post(unlock))
        .route("/v1/funds/lock", post(funds_lock))
        .route("/v1/funds/unlock", post(unlock))
        .route("/v1/credential/validate", post(validate_credential))
}

/// `{"error": "<text>"}` with a status.
pub struct NilError(StatusCode, String);

impl NilError {
    fn new(status: StatusCode, text: impl Into<String>) -> NilError {
        NilError(status, text.into())
    }
}

impl IntoResponse for NilError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// Anything else (auth, bad JSON, store failures) keeps its status and
/// message, in this protocol's error shape.
impl From<ApiError> for NilError {
    fn from(e: ApiError) -> NilError {
        NilError(e.status, e.message)
    }
}

type NilResult<T> = Result<T, NilError>;

/// JSON body extractor with this protocol's error shape.
pub struct NilJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for NilJson<T> {
    type Rejection = NilError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        crate::wire::JsonBody::<T>::from_request(req, state)
            .await
            .map(|b| NilJson(b.0))
            .map_err(NilError::from)
    }
}

fn authorised(auth: Result<ServiceAuth, ApiError>) -> NilResult<()> {
    auth.map(|_| ()).map_err(NilError::from)
}

/// An amount sent as a JSON number (a Python float) or a string.
fn amount(value: &Value, field: &str, rounding: Rounding) -> NilResult<Amount> {
    let text = match value {
        Value::Number(n) => n.as_str(),
        Value::String(s) => s.as_str(),
        _ => {
            return Err(NilError::new(
                StatusCode::BAD_REQUEST,
                format!("{field} must be a number"),
            ))
        }
    };
    Amount::parse_rounded(text, rounding)
        .map_err(|e| NilError::new(StatusCode::BAD_REQUEST, format!("invalid {field}: {e}")))
}

/// `Amount` as a JSON number with its exact decimal text.
fn number(a: Amount) -> Value {
    serde_json::from_str(&a.to_string()).unwrap_or(Value::Null)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn summary(
    auth: Result<ServiceAuth, ApiError>,
    State(state): State<AppState>,
) -> NilResult<Json<Value>> {
    authorised(auth)?;
    let now = state.now();
    let mut users = Vec::new();
    let mut after: Option<AccountId> = None;
    while users.len() < SUMMARY_ITEMS_MAX {
        let page = state
            .store
            .accounts(after.as_ref(), SUMMARY_ITEMS_MAX - users.len())
            .await
            .map_err(ApiError::from)?;
        let Some(last) = page.last() else { break };
        after = Some(last.account.id.clone());
        users.extend(page.iter().map(|s| json!({"user_id": s.account.id.as_str(), "balance": number(s.balance_at(now).available)})));
    }
    let locks = state
        .store
        .open_holds(now, SUMMARY_ITEMS_MAX)
        .await
        .map_err(ApiError::from)?;
    let locks: Vec<Value> = locks.iter().map(|h| json!({ "lock_id": h.id })).collect();
    Ok(Json(json!({ "users": users, "locks": locks })))
}

#[derive(Deserialize)]
pub(crate) struct LockBody {
    credential: String,
    amount: Value,
}

#[derive(Deserialize)]
pub(crate) struct FundsLockBody {
    user_id: String,
    amount: Value,
}

/// `/v1/balance/lock/private` (`PUBLIC` false: a secret key) and
/// `/v1/balance/lock/public` (a public identifier). Each kind is its own
/// literal route so `dispatch.rs` can call it without axum's router.
pub(crate) async fn lock_by_kind<const PUBLIC: bool>(
    auth: Result<ServiceAuth, ApiError>,
    State(state): State<AppState>,
    idempotency: IdempotencyHeader,
    NilJson(body): NilJson<LockBody>,
) -> NilResult<Json<Value>> {
    authorised(auth)?;
    let account = account_of_credential(&state, &body.credential, PUBLIC).await?;
    lock(&state, account, &body.amount, &idempotency).await
}

/// Any other `/v1/balance/lock/{kind}`.
async fn no_such_lock(auth: Result<ServiceAuth, ApiError>) -> NilResult<Json<Value>> {
    authorised(auth)?;
    Err(NilError::new(
        StatusCode::NOT_FOUND,
        "no such lock endpoint",
    ))
}

pub(crate) async fn funds_lock(
    auth: Result<ServiceAuth, ApiError>,
    State(state): State<AppState>,
    idempotency: IdempotencyHeader,
    NilJson(body): NilJson<FundsLockBody>,
) -> NilResult<Json<Value>> {
    authorised(auth)?;
    let account = AccountId::parse(&body.user_id)
        .map_err(|_| NilError::new(StatusCode::NOT_FOUND, "user not found"))?;
    lock(&state, account, &body.amount, &idempotency).await
}

async fn account_of_credential(
    state: &AppState,
    credential: &str,
    public: bool,
) -> NilResult<AccountId> {
    let not_found = || NilError::new(StatusCode::NOT_FOUND, "credential not found");
    let key = CredentialKey::parse(credential, public).map_err(|_| not_found())?;
    let found = state
        .store
        .find_credential(&key)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(not_found)?;
    if !found.active {
        return Err(NilError::new(
            StatusCode::UNAUTHORIZED,
            "credential is inactive",
        ));
    }
    Ok(found.account_id)
}

async fn lock(
    state: &AppState,
    account: AccountId,
    amount_value: &Value,
    idempotency: &IdempotencyHeader,
) -> NilResult<Json<Value>> {
    let amount = amount(amount_value, "amount", Rounding::Up)?;
    let command = Command::Lock(LockCmd {
        account,
        hold_id: crate::new_id(),
        amount,
        ttl_secs: ttl_secs(state, None)?,
    });
    let idempotency_key = crate::wire::idempotency_key(idempotency, None)?;
    let executed = state
        .store
        .submit(LedgerRequest {
            command,
            idempotency_key,
            attributes: None,
        })
        .await
        .map_err(lock_error)?;
    let hold = executed
        .outcome
        .hold
        .ok_or_else(|| NilError::from(ApiError::internal("lock without a hold")))?;
    Ok(Json(json!({ "lock_id": hold.id })))
}

fn lock_error(e: ExecError) -> NilError {
    match e {
        ExecError::Rejected(Rejection::AccountNotFound) => {
            NilError::new(StatusCode::NOT_FOUND, "user not found")
        }
        ExecError::Rejected(Rejection::InsufficientBalance) => {
            NilError::new(StatusCode::BAD_REQUEST, "insufficient balance")
        }
        ExecError::Rejected(r @ (Rejection::AccountExpired | Rejection::AccountSuspended)) => {
            NilError::new(StatusCode::FORBIDDEN, r.message())
        }
        ExecError::Rejected(r) => NilError::new(StatusCode::BAD_REQUEST, r.message()),
        other => ApiError::from(other).into(),
    }
}

#[derive(Deserialize)]
pub(crate) struct UnlockBody {
    lock_id: String,
    real_cost: Value,
}

pub(crate) async fn unlock(
    auth: Result<ServiceAuth, ApiError>,
    State(state): State<AppState>,
    NilJson(body): NilJson<UnlockBody>,
) -> NilResult<Response> {
    authorised(auth)?;
    let cost = amount(&body.real_cost, "real_cost", Rounding::HalfUp)?;
    let not_found = || NilError::new(StatusCode::NOT_FOUND, "lock not found");
    // The lock's account, usually from memory (reckon_store::owners); the
    // overage rule is left to the writer, which has the account's policy
    // at hand (`SettleOverage::AccountOrCap`): no read of the hold or the
    // account here (they made an unlock cost ~2.3 native settles).
    let account = hold_owner(&state, &body.lock_id)
        .await?
        .ok_or_else(not_found)?;
    let hold_id = body.lock_id;
    let key = IdempotencyKey::parse(&format!("nilauth-unlock:{hold_id}:{}", cost.micros()))
        .map_err(|e| NilError::from(ApiError::internal(e)))?;
    let command = if cost.is_zero() {
        Command::Release(ReleaseCmd { account, hold_id })
    } else {
        Command::Settle(SettleCmd {
            account,
            hold_id,
            amount: cost,
            overage: SettleOverage::AccountOrCap,
        })
    };
    let request = LedgerRequest {
        command,
        idempotency_key: Some(key),
        attributes: None,
    };
    match state.store.submit(request).await {
        Ok(_) => Ok(StatusCode::OK.into_response()),
        Err(ExecError::Rejected(Rejection::HoldNotFound)) => Err(not_found()),
        Err(ExecError::Rejected(r)) => Err(NilError::new(StatusCode::BAD_REQUEST, r.message())),
        Err(ExecError::IdempotencyConflict) => Err(NilError::new(
            StatusCode::BAD_REQUEST,
            "the lock was already unlocked",
        )),
        Err(other) => Err(ApiError::from(other).into()),
    }
}

#[derive(Deserialize)]
struct ValidateBody {
    credential_key: String,
    is_public: bool,
}

async fn validate_credential(
    auth: Result<ServiceAuth, ApiError>,
    State(state): State<AppState>,
    NilJson(body): NilJson<ValidateBody>,
) -> NilResult<Json<Value>> {
    authorised(auth)?;
    let not_found = || NilError::new(StatusCode::NOT_FOUND, "credential not found");
    let key =
        CredentialKey::parse(&body.credential_key, body.is_public).map_err(|_| not_found())?;
    let found = state
        .store
        .find_credential(&key)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(not_found)?;
    if !found.active {
        return Err(NilError::new(
            StatusCode::UNAUTHORIZED,
            "credential is inactive",
        ));
    }
    Ok(Json(
        json!({ "user_id": found.account_id.as_str(), "is_valid": true, "is_public": found.public }),
    ))
}
