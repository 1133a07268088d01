//! `POST /v1/batch`: many operations in one request, applied in order in one
//! commit. Each operation gets its own result; a bad one fails alone.

use crate::auth::{Scope, ServiceAuth};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorDetail};
use crate::native::holds::ttl_secs;
use crate::render::{self, Render};
use crate::views::{BalanceView, GrantView, HoldView};
use crate::wire::{self, JsonBody, Rendered};
use crate::AppState;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use reckon_core::{
    Command, CreateAccount, GrantCmd, GrantExpiry, LockCmd, OveragePolicy, ReleaseCmd, SettleCmd,
    Unit, UsageCmd,
};
use reckon_store::{ExecError, Executed, IdempotencyKey, Request};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::ToSchema;

/// Most operations one batch may carry.
pub const BATCH_OPERATIONS_MAX: usize = 1_000;
/// Largest batch body.
pub const BATCH_BODY_BYTES_MAX: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/batch", post(batch))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// Up to 1,000 operations, applied in order. Each is an object with an
    /// `op` of usage, check, grant, lock, settle, release or create_account
    /// and that operation's fields (as in its own endpoint), e.g.
    /// `{"op": "usage", "account_id": "a", "amount": "1", "idempotency_key": "k1"}`,
    /// `{"op": "settle", "hold_id": "...", "amount": 2}`.
    ///
    /// Kept as raw text until each is parsed on its own, so that a bad one
    /// fails alone (and without building a map per operation first).
    #[schema(value_type = Vec<Object>)]
    pub operations: Vec<Box<RawValue>>,
}

/// One operation's result: `ok` and its data, or `error`.
#[derive(Serialize, ToSchema)]
pub struct OpResult {
    pub ok: bool,
    /// The status the operation would have had as its own request.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldView>,
    /// For check: may the account spend the amount?
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

impl OpResult {
    /// A result with only `ok` and `status`, for the others to fill.
    pub(crate) fn bare(ok: bool, status: u16) -> OpResult {
        OpResult {
            ok,
            status,
            error: None,
            balance: None,
            grant: None,
            hold: None,
            allowed: None,
            reason: None,
            replayed: false,
        }
    }

    fn failed(e: ApiError) -> OpResult {
        OpResult {
            error: Some(ErrorDetail {
                code: e.code,
                message: e.message,
            }),
            ..OpResult::bare(false, e.status.as_u16())
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<OpResult>,
}

impl Render for OpResult {
    fn render(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ok\":");
        render::boolean(out, self.ok);
        out.extend_from_slice(b",\"status\":");
        render::integer(out, self.status.into());
        if let Some(error) = &self.error {
            out.extend_from_slice(b",\"error\":");
            error.render(out);
        }
        if let Some(balance) = &self.balance {
            out.extend_from_slice(b",\"balance\":");
            balance.render(out);
        }
        if let Some(grant) = &self.grant {
            out.extend_from_slice(b",\"grant\":");
            render::serialized(out, grant);
        }
        if let Some(hold) = &self.hold {
            out.extend_from_slice(b",\"hold\":");
            hold.render(out);
        }
        if let Some(allowed) = self.allowed {
            out.extend_from_slice(b",\"allowed\":");
            render::boolean(out, allowed);
        }
        if let Some(reason) = self.reason {
            out.extend_from_slice(b",\"reason\":");
            render::text(out, reason);
        }
        if self.replayed {
            out.extend_from_slice(b",\"replayed\":true");
        }
        out.push(b'}');
    }
}

/// Bytes a result with a balance takes, about: what a batch reserves per
/// operation before rendering.
const RESULT_BYTES_TYPICAL: usize = 160;

impl Render for BatchResponse {
    fn render(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"results\":[");
        for (i, r) in self.results.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            r.render(out);
        }
        out.extend_from_slice(b"]}");
    }

    fn size_hint(&self) -> usize {
        16 + self.results.len() * RESULT_BYTES_TYPICAL
    }
}

/// Fields any operation may carry; `deny_unknown_fields` catches typos.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Op {
    op: String,
    account_id: Option<String>,
    hold_id: Option<String>,
    amount: Option<Value>,
    idempotency_key: Option<String>,
    attributes: Option<Value>,
    ttl_secs: Option<u64>,
    overage: Option<String>,
    expires_at: Option<Value>,
    valid_for_secs: Option<u64>,
    source: Option<String>,
    unit: Option<String>,
}

fn required<'a, T>(v: &'a Option<T>, field: &str) -> ApiResult<&'a T> {
    v.as_ref()
        .ok_or_else(|| ApiError::invalid("invalid_field", format!("{field} is required")))
}

/// Builds a settle or release once the hold's account is known.
type HoldCommand = Box<dyn FnOnce(reckon_core::AccountId) -> Command + Send>;

/// What an operation parses into before hold ids are resolved.
enum Parsed {
    Ready(Request),
    /// Settle or release: the account comes from the hold.
    NeedsHold {
        hold_id: String,
        make: HoldCommand,
        idempotency_key: Option<IdempotencyKey>,
        attributes: Option<String>,
    },
}

fn parse(state: &AppState, scope: Scope, raw: &RawValue) -> ApiResult<Parsed> {
    let op: Op = serde_json::from_str(raw.get()).map_err(|e| {
        // The position is within this operation's text, which says nothing
        // to the caller: the result's place in the list says which one.
        let message = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        ApiError::invalid(
            "invalid_json",
            message.strip_suffix(&position).unwrap_or(&message),
        )
    })?;
    let key = op
        .idempotency_key
        .as_deref()
        .map(|k| wire::idempotency_key(&wire::IdempotencyHeader::default(), Some(k)))
        .transpose()?
        .flatten();
    let attributes = wire::attributes(op.attributes.as_ref())?;
    let account = || wire::account_id(required(&op.account_id, "account_id")?);
    let admin_only = || {
        if scope == Scope::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    };
    let command = match op.op.as_str() {
        "usage" => Command::Usage(UsageCmd {
            account: account()?,
            amount: wire::positive_amount(required(&op.amount, "amount")?, "amount")?,
        }),
        "check" => Command::Check {
            account: account()?,
            amount: wire::amount(required(&op.amount, "amount")?, "amount")?,
        },
        "lock" => Command::Lock(LockCmd {
            account: account()?,
            hold_id: crate::new_id(),
            amount: wire::positive_amount(required(&op.amount, "amount")?, "amount")?,
            ttl_secs: ttl_secs(state, op.ttl_secs)?,
        }),
        "grant" => {
            admin_only()?;
            let expiry = match (&op.expires_at, op.valid_for_secs) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::invalid(
                        "invalid_field",
                        "give expires_at or valid_for_secs, not both",
                    ))
                }
                (Some(v), None) => GrantExpiry::At(wire::timestamp(v, "expires_at")?),
                (None, Some(s)) if s > 0 => GrantExpiry::AfterSecs(s),
                (None, Some(_)) => {
                    return Err(ApiError::invalid(
                        "invalid_field",
                        "valid_for_secs must be at least 1",
                    ))
                }
                (None, None) => GrantExpiry::Never,
            };
            Command::Grant(GrantCmd {
                account: account()?,
                grant_id: crate::new_id(),
                amount: wire::positive_amount(required(&op.amount, "amount")?, "amount")?,
                expiry,
                source: op
                    .source
                    .as_deref()
                    .map(|s| wire::short_text(s, "source"))
                    .transpose()?
                    .unwrap_or_else(|| "manual".into()),
            })
        }
        "create_account" => {
            admin_only()?;
            Command::CreateAccount(CreateAccount {
                id: account()?,
                unit: match &op.unit {
                    Some(u) => Unit::parse(u)
                        .map_err(|e| ApiError::invalid("invalid_field", format!("unit {e}")))?,
                    None => Unit::default(),
                },
                expires_at: op
                    .expires_at
                    .as_ref()
                    .map(|v| wire::timestamp(v, "expires_at"))
                    .transpose()?,
                timezone: None,
                metadata: "{}".into(),
                overage: OveragePolicy::default(),
            })
        }
        "settle" | "release" => {
            let hold_id = required(&op.hold_id, "hold_id")?.clone();
            let make: HoldCommand = if op.op == "settle" {
                let amount = wire::amount(required(&op.amount, "amount")?, "amount")?;
                let overage = wire::overage_policy(op.overage.as_deref(), "overage")?;
                let id = hold_id.clone();
                Box::new(move |account| {
                    Command::Settle(SettleCmd {
                        account,
                        hold_id: id,
                        amount,
                        overage: overage.into(),
                    })
                })
            } else {
                let id = hold_id.clone();
                Box::new(move |account| {
                    Command::Release(ReleaseCmd {
                        account,
                        hold_id: id,
                    })
                })
            };
            return Ok(Parsed::NeedsHold {
                hold_id,
                make,
                idempotency_key: key,
                attributes,
            });
        }
        other => {
            return Err(ApiError::invalid(
                "invalid_op",
                format!("unknown op {other:?}"),
            ))
        }
    };
    Ok(Parsed::Ready(Request {
        command,
        idempotency_key: key,
        attributes,
    }))
}

fn op_result(state: &AppState, result: Result<Executed, ExecError>) -> OpResult {
    match result {
        Err(e) => OpResult::failed(e.into()),
        Ok(executed) => {
            let o = executed.outcome;
            OpResult {
                balance: Some(o.balance.into()),
                grant: o.grant.as_ref().map(GrantView::from),
                hold: o.hold.as_ref().map(|h| HoldView::at(h, state.now())),
                allowed: o.check.map(|c| c.allowed),
                reason: o
                    .check
                    .and_then(|c| c.reason.map(reckon_core::Rejection::code)),
                replayed: executed.replayed,
                ..OpResult::bare(true, 200)
            }
        }
    }
}

/// Apply many operations in order, committed together.
#[utoipa::path(post, path = "/v1/batch", tag = "batch", request_body = BatchBody,
    responses((status = 200, description = "one result per operation, in order", body = BatchResponse),
        (status = 400, description = "the batch itself is malformed or too long", body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn batch(
    ServiceAuth(scope): ServiceAuth,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<BatchBody, BATCH_BODY_BYTES_MAX>,
) -> ApiResult<Rendered<BatchResponse>> {
    if body.operations.is_empty() || body.operations.len() > BATCH_OPERATIONS_MAX {
        return Err(ApiError::invalid(
            "invalid_batch",
            format!("a batch carries 1 to {BATCH_OPERATIONS_MAX} operations"),
        ));
    }
    let parsed: Vec<ApiResult<Parsed>> = body
        .operations
        .iter()
        .map(|raw| parse(&state, scope, raw))
        .collect();
    let hold_ids: Vec<String> = parsed
        .iter()
        .filter_map(|p| match p {
            Ok(Parsed::NeedsHold { hold_id, .. }) => Some(hold_id.clone()),
            _ => None,
        })
        .collect();
    let accounts = if hold_ids.is_empty() {
        Default::default()
    } else {
        state.store.hold_accounts(hold_ids).await?
    };
    // Requests to run, and for each operation either its index among them or its error.
    let mut requests = Vec::with_capacity(parsed.len());
    let mut slots: Vec<Result<usize, ApiError>> = Vec::with_capacity(parsed.len());
    for p in parsed {
        let request = match p {
            Err(e) => Err(e),
            Ok(Parsed::Ready(r)) => Ok(r),
            Ok(Parsed::NeedsHold {
                hold_id,
                make,
                idempotency_key,
                attributes,
            }) => match accounts.get(&hold_id) {
                Some(account) => Ok(Request {
                    command: make(account.clone()),
                    idempotency_key,
                    attributes,
                }),
                None => Err(reckon_core::Rejection::HoldNotFound.into()),
            },
        };
        slots.push(request.map(|r| {
            requests.push(r);
            requests.len() - 1
        }));
    }
    let mut executed: Vec<Option<Result<Executed, ExecError>>> = state
        .store
        .submit_many(requests)
        .await
        .into_iter()
        .map(Some)
        .collect();
    let results = slots
        .into_iter()
        .map(|slot| match slot {
            Err(e) => OpResult::failed(e),
            Ok(i) => op_result(
                &state,
                executed[i].take().expect("each request answers once"),
            ),
        })
        .collect();
    Ok(Rendered(BatchResponse { results }))
}
