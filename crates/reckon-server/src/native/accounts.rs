//! `/v1/accounts`: create, read, change and list accounts.

use crate::auth::{AdminAuth, ServiceAuth};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::views::AccountView;
use crate::wire::Json;
use crate::wire::{self, IdempotencyHeader, JsonBody, PathId, PathSegment, QueryParams};
use crate::{with_replay_flag, AppState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use reckon_core::{AccountStatus, Command, CreateAccount, Unit, UpdateAccount};
use reckon_store::Request;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts", get(list_accounts).post(create_account))
        .route("/v1/accounts/{id}", get(get_account).patch(update_account))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountBody {
    /// 1-128 characters of letters, digits and `. _ - : @ +`.
    #[schema(example = "user123")]
    pub id: String,
    /// What the balance counts: "credits" (default), "MB", "USD", "calls".
    #[schema(example = "credits")]
    pub unit: Option<String>,
    /// After this instant spending is refused (`account_expired`). RFC 3339 or Unix seconds.
    #[schema(value_type = Option<String>, example = "2026-12-31T00:00:00Z")]
    pub expires_at: Option<Value>,
    /// IANA zone for calendar resets, e.g. "Europe/Amsterdam".
    pub timezone: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// What a settle above its hold does: reject (default), cap or allow.
    pub overage_policy: Option<String>,
    pub idempotency_key: Option<String>,
}

fn timezone(text: &str) -> ApiResult<String> {
    // Full IANA validation arrives with calendar resets; until then accept
    // the shape of a zone name so nothing absurd is stored.
    let ok = !text.is_empty()
        && text.len() <= wire::TEXT_BYTES_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(ApiError::invalid(
            "invalid_field",
            "timezone must be an IANA zone name such as Europe/Amsterdam",
        ))
    }
}

/// Create an account.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = CreateAccountBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes the call safe to retry")),
    responses((status = 201, body = AccountView), (status = 400, body = ErrorBody),
        (status = 409, description = "account_exists or idempotency_conflict", body = ErrorBody)),
    security(("admin_key" = [])))]
pub async fn create_account(
    _: AdminAuth,
    State(state): State<AppState>,
    idempotency: IdempotencyHeader,
    JsonBody(body): JsonBody<CreateAccountBody>,
) -> ApiResult<Response> {
    let command = CreateAccount {
        id: wire::account_id(&body.id)?,
        unit: match &body.unit {
            Some(u) => Unit::parse(u)
                .map_err(|e| ApiError::invalid("invalid_field", format!("unit {e}")))?,
            None => Unit::default(),
        },
        expires_at: body
            .expires_at
            .as_ref()
            .map(|v| wire::timestamp(v, "expires_at"))
            .transpose()?,
        timezone: body.timezone.as_deref().map(timezone).transpose()?,
        metadata: body
            .metadata
            .as_ref()
            .map(|m| wire::json_object(m, "metadata"))
            .transpose()?
            .unwrap_or_else(|| "{}".into()),
        overage: wire::overage_policy(body.overage_policy.as_deref(), "overage_policy")?
            .unwrap_or_default(),
    };
    let request = Request {
        command: Command::CreateAccount(command),
        idempotency_key: wire::idempotency_key(&idempotency, body.idempotency_key.as_deref())?,
        attributes: None,
    };
    let executed = state.execute(request).await?;
    let now = state.now();
    let created = state
        .store
        .account(&executed.outcome.account.id)
        .await?
        .ok_or_else(|| ApiError::internal("created account not found"))?;
    Ok(with_replay_flag(
        &executed,
        (StatusCode::CREATED, Json(AccountView::at(&created, now))),
    ))
}

/// Read an account with its balance and active grants.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path)),
    responses((status = 200, body = AccountView), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_account(
    _: ServiceAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
) -> ApiResult<Json<AccountView>> {
    let id = wire::account_id(&id)?;
    let account = state
        .store
        .account(&id)
        .await?
        .ok_or(reckon_core::Rejection::AccountNotFound)?;
    Ok(Json(AccountView::at(&account, state.now())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccountBody {
    /// A new expiry; null removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Value>,
    /// active or suspended.
    pub status: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub overage_policy: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Tells "absent" (None) from "null" (Some(Null)) for fields that can be cleared.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Change an account's expiry, status, metadata or overage policy.
#[utoipa::path(patch, path = "/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path)),
    request_body = UpdateAccountBody,
    responses((status = 200, body = AccountView), (status = 404, body = ErrorBody)),
    security(("admin_key" = [])))]
pub async fn update_account(
    _: AdminAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    idempotency: IdempotencyHeader,
    JsonBody(body): JsonBody<UpdateAccountBody>,
) -> ApiResult<Response> {
    let id = wire::account_id(&id)?;
    let expires_at = match &body.expires_at {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(wire::timestamp(v, "expires_at")?)),
    };
    let status = match body.status.as_deref() {
        None => None,
        Some(s) => Some(AccountStatus::parse(s).ok_or_else(|| {
            ApiError::invalid("invalid_field", "status must be active or suspended")
        })?),
    };
    let command = UpdateAccount {
        id: id.clone(),
        expires_at,
        status,
        metadata: body
            .metadata
            .as_ref()
            .map(|m| wire::json_object(m, "metadata"))
            .transpose()?,
        overage: wire::overage_policy(body.overage_policy.as_deref(), "overage_policy")?,
    };
    let request = Request {
        command: Command::UpdateAccount(command),
        idempotency_key: wire::idempotency_key(&idempotency, body.idempotency_key.as_deref())?,
        attributes: None,
    };
    let executed = state.execute(request).await?;
    let account = state
        .store
        .account(&id)
        .await?
        .ok_or(reckon_core::Rejection::AccountNotFound)?;
    Ok(with_replay_flag(
        &executed,
        Json(AccountView::at(&account, state.now())),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1-500 (default 100).
    pub limit: Option<usize>,
    /// Return accounts whose id sorts after this one (the previous page's `next_after`).
    pub after: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AccountPage {
    pub accounts: Vec<AccountView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<String>,
}

/// List accounts in id order.
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", params(ListParams),
    responses((status = 200, body = AccountPage), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_accounts(
    _: ServiceAuth,
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListParams>,
) -> ApiResult<Json<AccountPage>> {
    let limit = wire::page_size(q.limit)?;
    let after = q.after.as_deref().map(wire::account_id).transpose()?;
    let page = state.store.accounts(after.as_ref(), limit).await?;
    let now = state.now();
    let next_after = if page.len() == limit {
        page.last().map(|s| s.account.id.to_string())
    } else {
        None
    };
    Ok(Json(AccountPage {
        accounts: page.iter().map(|s| AccountView::at(s, now)).collect(),
        next_after,
    }))
}
