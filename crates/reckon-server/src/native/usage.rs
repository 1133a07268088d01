//! `/v1/accounts/{id}/usage` (spend) and `/v1/accounts/{id}/check` (may I spend?).

use crate::auth::ServiceAuth;
use crate::error::{ApiResult, ErrorBody};
use crate::render::{self, Render};
use crate::views::{AmountText, BalanceView};
use crate::wire::{self, IdempotencyHeader, JsonBody, PathId, PathSegment, Rendered};
use crate::{with_replay_flag, AppState};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use reckon_core::{Command, Rejection, UsageCmd};
use reckon_store::Request;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts/{id}/usage", post(record_usage))
        .route("/v1/accounts/{id}/check", post(check))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBody {
    /// A number or a decimal string, up to 6 decimals, greater than zero.
    #[schema(value_type = String, example = "0.05")]
    pub amount: Value,
    pub idempotency_key: Option<String>,
    /// Free-form JSON object kept with the event (model, request id, tokens...).
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageResponse {
    pub account_id: String,
    #[schema(value_type = String)]
    pub amount: AmountText,
    pub balance: BalanceView,
}

impl Render for UsageResponse {
    fn render(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"account_id\":");
        render::text(out, &self.account_id);
        out.extend_from_slice(b",\"amount\":");
        self.amount.render(out);
        out.extend_from_slice(b",\"balance\":");
        self.balance.render(out);
        out.push(b'}');
    }
}

/// Record usage: spend from the balance, or refuse with 402 and change nothing.
#[utoipa::path(post, path = "/v1/accounts/{id}/usage", tag = "usage", params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "makes the call safe to retry")),
    request_body = UsageBody,
    responses((status = 200, body = UsageResponse), (status = 400, body = ErrorBody),
        (status = 402, description = "insufficient_balance", body = ErrorBody),
        (status = 403, description = "account_expired or account_suspended", body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "idempotency_conflict", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn record_usage(
    _: ServiceAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    idempotency: IdempotencyHeader,
    JsonBody(body): JsonBody<UsageBody>,
) -> ApiResult<Response> {
    let amount = wire::positive_amount(&body.amount, "amount")?;
    let request = Request {
        command: Command::Usage(UsageCmd {
            account: wire::account_id(&id)?,
            amount,
        }),
        idempotency_key: wire::idempotency_key(&idempotency, body.idempotency_key.as_deref())?,
        attributes: wire::attributes(body.attributes.as_ref())?,
    };
    let executed = state.execute(request).await?;
    let response = UsageResponse {
        account_id: executed.outcome.account.id.to_string(),
        amount: AmountText(amount),
        balance: executed.outcome.balance.into(),
    };
    Ok(with_replay_flag(&executed, Rendered(response)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    #[schema(value_type = String, example = "0.05")]
    pub amount: Value,
}

#[derive(Serialize, ToSchema)]
pub struct CheckResponse {
    pub allowed: bool,
    #[schema(value_type = String)]
    pub available: AmountText,
    /// Why not, when not allowed: insufficient_balance, account_expired,
    /// account_suspended or invalid_amount. Null when allowed.
    pub reason: Option<&'static str>,
}

impl Render for CheckResponse {
    fn render(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"allowed\":");
        render::boolean(out, self.allowed);
        out.extend_from_slice(b",\"available\":");
        self.available.render(out);
        out.extend_from_slice(b",\"reason\":");
        render::optional_text(out, self.reason);
        out.push(b'}');
    }
}

/// May this account spend `amount` now? Read-only.
#[utoipa::path(post, path = "/v1/accounts/{id}/check", tag = "usage", params(("id" = String, Path)),
    request_body = CheckBody,
    responses((status = 200, body = CheckResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn check(
    _: ServiceAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    JsonBody(body): JsonBody<CheckBody>,
) -> ApiResult<Rendered<CheckResponse>> {
    let amount = wire::amount(&body.amount, "amount")?;
    let account = wire::account_id(&id)?;
    // Through the writer, like a spend: it answers from the account it holds
    // in memory, and only once every write the answer may rest on is
    // durable (a read connection could see a commit before its fsync).
    let executed = state
        .execute(Request::new(Command::Check { account, amount }))
        .await?;
    let c = executed
        .outcome
        .check
        .expect("a check command answers with a check");
    Ok(Rendered(CheckResponse {
        allowed: c.allowed,
        available: AmountText(c.available),
        reason: c.reason.map(Rejection::code),
    }))
}
