//! `/v1/holds`: reserve before work (lock), then settle with the real cost
//! or release. A hold resolves exactly once and expires after its TTL.

use crate::auth::ServiceAuth;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::render::Render;
use crate::views::{BalanceView, HoldView};
use crate::wire::Json;
use crate::wire::{
    self, IdempotencyHeader, JsonBody, OptionalJsonBody, PathId, PathSegment, QueryParams, Rendered,
};
use crate::{with_replay_flag, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use reckon_core::{AccountId, Command, HoldStatus, LockCmd, Rejection, ReleaseCmd, SettleCmd};
use reckon_store::{Executed, Request};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/holds", post(lock))
        .route("/v1/holds/{id}", get(get_hold))
        .route("/v1/holds/{id}/settle", post(settle))
        .route("/v1/holds/{id}/release", post(release))
        .route("/v1/accounts/{id}/holds", get(list_holds))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockBody {
    #[schema(example = "user123")]
    pub account_id: String,
    /// The estimate to reserve: a number or decimal string, greater than zero.
    #[schema(value_type = String, example = "5")]
    pub amount: Value,
    /// Seconds until the hold expires and its amount returns (default 300).
    pub ttl_secs: Option<u64>,
    pub idempotency_key: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

/// The hold, and the account's balance right after the call.
#[derive(Serialize, ToSchema)]
pub struct HoldResponse {
    #[serde(flatten)]
    pub hold: HoldView,
    pub balance: BalanceView,
}

impl Render for HoldResponse {
    fn render(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        self.hold.render_fields(out);
        out.extend_from_slice(b",\"balance\":");
        self.balance.render(out);
        out.push(b'}');
    }
}

fn render(state: &AppState, executed: &Executed, status: StatusCode) -> ApiResult<Response> {
    let hold = executed
        .outcome
        .hold
        .as_ref()
        .ok_or_else(|| ApiError::internal("hold outcome without a hold"))?;
    let body = HoldResponse {
        hold: HoldView::at(hold, state.now()),
        balance: executed.outcome.balance.into(),
    };
    Ok(with_replay_flag(executed, (status, Rendered(body))))
}

/// The TTL a request asks for, checked against the configured bounds.
pub fn ttl_secs(state: &AppState, asked: Option<u64>) -> ApiResult<u64> {
    let max = state
        .limits
        .hold_ttl_max_secs
        .min(reckon_core::HOLD_TTL_SECS_MAX);
    match asked.unwrap_or(state.limits.hold_ttl_default_secs) {
        ttl @ 1.. if ttl <= max => Ok(ttl),
        _ => Err(ApiError::invalid(
            "invalid_ttl",
            format!("ttl_secs must be between 1 and {max}"),
        )),
    }
}

/// Lock: reserve an estimate before work starts.
#[utoipa::path(post, path = "/v1/holds", tag = "holds", request_body = LockBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes the call safe to retry")),
    responses((status = 201, body = HoldResponse), (status = 400, body = ErrorBody),
        (status = 402, description = "insufficient_balance", body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn lock(
    _: ServiceAuth,
    State(state): State<AppState>,
    idempotency: IdempotencyHeader,
    JsonBody(body): JsonBody<LockBody>,
) -> ApiResult<Response> {
    let command = LockCmd {
        account: wire::account_id(&body.account_id)?,
        hold_id: crate::new_id(),
        amount: wire::positive_amount(&body.amount, "amount")?,
        ttl_secs: ttl_secs(&state, body.ttl_secs)?,
    };
    let request = Request {
        command: Command::Lock(command),
        idempotency_key: wire::idempotency_key(&idempotency, body.idempotency_key.as_deref())?,
        attributes: wire::attributes(body.attributes.as_ref())?,
    };
    let executed = state.execute(request).await?;
    render(&state, &executed, StatusCode::CREATED)
}

/// The account a hold belongs to: a hold id is global, its account is
/// needed to route the command and scope its idempotency key.
pub async fn hold_account(state: &AppState, hold_id: &str) -> ApiResult<AccountId> {
    Ok(hold_owner(state, hold_id)
        .await?
        .ok_or(Rejection::HoldNotFound)?)
}

/// [`hold_account`], with an unknown hold as `None` for adapters that word
/// "not found" their own way.
pub async fn hold_owner(state: &AppState, hold_id: &str) -> ApiResult<Option<AccountId>> {
    if hold_id.is_empty() || hold_id.len() > reckon_core::account::ID_BYTES_MAX {
        return Ok(None);
    }
    // Usually answered from memory (see reckon_store::owners).
    let mut owners = state.store.hold_accounts(vec![hold_id.to_owned()]).await?;
    Ok(owners.remove(hold_id))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettleBody {
    /// The real cost: 0 up to the held amount; above it, `overage` decides.
    #[schema(value_type = String, example = "3.2")]
    pub amount: Value,
    /// reject, cap or allow; default: the account's policy.
    pub overage: Option<String>,
    pub idempotency_key: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

/// Settle: charge the real cost; the rest of the hold returns to the balance.
#[utoipa::path(post, path = "/v1/holds/{id}/settle", tag = "holds", params(("id" = String, Path)),
    request_body = SettleBody,
    responses((status = 200, body = HoldResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "exceeds_hold, hold_already_settled, hold_already_released, hold_expired", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn settle(
    _: ServiceAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    idempotency: IdempotencyHeader,
    JsonBody(body): JsonBody<SettleBody>,
) -> ApiResult<Response> {
    let amount = wire::amount(&body.amount, "amount")?;
    let overage = wire::overage_policy(body.overage.as_deref(), "overage")?;
    let key = wire::idempotency_key(&idempotency, body.idempotency_key.as_deref())?;
    let attributes = wire::attributes(body.attributes.as_ref())?;
    let account = hold_account(&state, &id).await?;
    let command = Command::Settle(SettleCmd {
        account,
        hold_id: id,
        amount,
        overage: overage.into(),
    });
    let executed = state
        .execute(Request {
            command,
            idempotency_key: key,
            attributes,
        })
        .await?;
    render(&state, &executed, StatusCode::OK)
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    pub idempotency_key: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

/// Release: return the whole hold (the work did not happen). The body is optional.
#[utoipa::path(post, path = "/v1/holds/{id}/release", tag = "holds", params(("id" = String, Path)),
    request_body(content = Option<ReleaseBody>),
    responses((status = 200, body = HoldResponse), (status = 404, body = ErrorBody),
        (status = 409, description = "hold_already_settled, hold_already_released, hold_expired", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn release(
    _: ServiceAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    idempotency: IdempotencyHeader,
    OptionalJsonBody(body): OptionalJsonBody<ReleaseBody>,
) -> ApiResult<Response> {
    let key = wire::idempotency_key(&idempotency, body.idempotency_key.as_deref())?;
    let attributes = wire::attributes(body.attributes.as_ref())?;
    let account = hold_account(&state, &id).await?;
    let command = Command::Release(ReleaseCmd {
        account,
        hold_id: id,
    });
    let executed = state
        .execute(Request {
            command,
            idempotency_key: key,
            attributes,
        })
        .await?;
    render(&state, &executed, StatusCode::OK)
}

/// A hold, with its status as of now.
#[utoipa::path(get, path = "/v1/holds/{id}", tag = "holds", params(("id" = String, Path)),
    responses((status = 200, body = HoldView), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_hold(
    _: ServiceAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
) -> ApiResult<Json<HoldView>> {
    let hold = state
        .store
        .hold(&id)
        .await?
        .ok_or(Rejection::HoldNotFound)?;
    Ok(Json(HoldView::at(&hold, state.now())))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HoldParams {
    /// held, settled, released or expired (as of now).
    pub status: Option<String>,
    /// Page size, 1-500 (default 100).
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct HoldList {
    pub holds: Vec<HoldView>,
}

/// An account's holds, newest first.
#[utoipa::path(get, path = "/v1/accounts/{id}/holds", tag = "holds", params(("id" = String, Path), HoldParams),
    responses((status = 200, body = HoldList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_holds(
    _: ServiceAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    QueryParams(q): QueryParams<HoldParams>,
) -> ApiResult<Json<HoldList>> {
    let id = wire::account_id(&id)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(HoldStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "invalid_query",
                "status must be held, settled, released or expired",
            )
        })?),
    };
    let limit = wire::page_size(q.limit)?;
    if state.store.account(&id).await?.is_none() {
        return Err(Rejection::AccountNotFound.into());
    }
    let now = state.now();
    let holds = state.store.holds(&id, status, now, limit).await?;
    Ok(Json(HoldList {
        holds: holds.iter().map(|h| HoldView::at(h, now)).collect(),
    }))
}
