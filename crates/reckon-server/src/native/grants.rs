//! `/v1/accounts/{id}/grants`: put value into an account.

use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::views::{BalanceView, GrantView};
use crate::wire::Json;
use crate::wire::{self, IdempotencyHeader, JsonBody, PathId, PathSegment};
use crate::{with_replay_flag, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use reckon_core::{Command, GrantCmd, GrantExpiry};
use reckon_store::Request;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/accounts/{id}/grants", post(create_grant))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// A number or a decimal string, up to 6 decimals, greater than zero.
    #[schema(value_type = String, example = "1024")]
    pub amount: Value,
    /// When the grant stops counting: RFC 3339 or Unix seconds. Give this or `valid_for_secs`, not both.
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Value>,
    /// The grant stops counting this many seconds after it is applied.
    pub valid_for_secs: Option<u64>,
    /// Where the value came from, e.g. "bundle", "monthly", "top-up" (default "manual").
    pub source: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct GrantResponse {
    pub account_id: String,
    pub grant: GrantView,
    pub balance: BalanceView,
}

/// Grant value (a budget, bundle or top-up), optionally expiring.
#[utoipa::path(post, path = "/v1/accounts/{id}/grants", tag = "grants", params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "makes the call safe to retry")),
    request_body = GrantBody,
    responses((status = 201, body = GrantResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("admin_key" = [])))]
pub async fn create_grant(
    _: AdminAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    idempotency: IdempotencyHeader,
    JsonBody(body): JsonBody<GrantBody>,
) -> ApiResult<Response> {
    let expiry = match (&body.expires_at, body.valid_for_secs) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_field",
                "give expires_at or valid_for_secs, not both",
            ))
        }
        (Some(v), None) => GrantExpiry::At(wire::timestamp(v, "expires_at")?),
        (None, Some(0)) => {
            return Err(ApiError::invalid(
                "invalid_field",
                "valid_for_secs must be at least 1",
            ))
        }
        (None, Some(secs)) => GrantExpiry::AfterSecs(secs),
        (None, None) => GrantExpiry::Never,
    };
    let command = GrantCmd {
        account: wire::account_id(&id)?,
        grant_id: crate::new_id(),
        amount: wire::positive_amount(&body.amount, "amount")?,
        expiry,
        source: body
            .source
            .as_deref()
            .map(|s| wire::short_text(s, "source"))
            .transpose()?
            .unwrap_or_else(|| "manual".into()),
    };
    let request = Request {
        command: Command::Grant(command),
        idempotency_key: wire::idempotency_key(&idempotency, body.idempotency_key.as_deref())?,
        attributes: None,
    };
    let executed = state.execute(request).await?;
    let o = &executed.outcome;
    let grant = o
        .grant
        .as_ref()
        .ok_or_else(|| ApiError::internal("grant outcome without a grant"))?;
    let response = GrantResponse {
        account_id: o.account.id.to_string(),
        grant: grant.into(),
        balance: o.balance.into(),
    };
    Ok(with_replay_flag(
        &executed,
        (StatusCode::CREATED, Json(response)),
    ))
}
