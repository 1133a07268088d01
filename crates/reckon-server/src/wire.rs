//! The boundary: wire values in, validated core values out, and back.
//!
//! Amounts arrive as JSON numbers or decimal strings and are parsed from
//! their exact text (serde_json keeps number text with `arbitrary_precision`),
//! so `0.1` is one tenth, never a float's approximation. Amounts leave as
//! decimal strings for the same reason.

use crate::error::{ApiError, ApiResult};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use chrono::{DateTime, SecondsFormat, Utc};
use reckon_core::{AccountId, Amount, OveragePolicy, Timestamp};
use reckon_store::IdempotencyKey;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Largest request body on ordinary routes.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest `metadata` or `attributes` object, serialised.
pub const JSON_OBJECT_BYTES_MAX: usize = 4 * 1024;
/// Longest free-text field (grant source, timezone).
pub const TEXT_BYTES_MAX: usize = 64;
/// Default page size of listings.
pub const PAGE_SIZE_DEFAULT: usize = 100;

/// `axum::Json`, but a body that does not parse becomes our error shape.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::invalid(
                "invalid_json",
                "send the body as JSON with Content-Type: application/json",
            )),
            Err(JsonRejection::BytesRejection(_)) => Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than the limit of {BODY_BYTES_MAX} bytes"),
            )),
            Err(e) => Err(ApiError::invalid("invalid_json", e.body_text())),
        }
    }
}

/// `axum::extract::Query`, with our error shape.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(ApiError::invalid("invalid_query", e.body_text())),
        }
    }
}

pub fn account_id(text: &str) -> ApiResult<AccountId> {
    AccountId::parse(text).map_err(|e| ApiError::invalid("invalid_id", format!("account id {e}")))
}

/// An amount field: a JSON number or a decimal string, parsed exactly.
pub fn amount(value: &Value, field: &str) -> ApiResult<Amount> {
    let parsed = match value {
        Value::Number(n) => Amount::parse(&n.to_string()),
        Value::String(s) => Amount::parse(s),
        _ => {
            return Err(ApiError::invalid(
                "invalid_amount",
                format!("{field} must be a number or a decimal string"),
            ))
        }
    };
    parsed.map_err(|e| ApiError::invalid("invalid_amount", format!("{field}: {e}")))
}

/// A positive amount (grants, usage, locks): zero is refused at the edge.
pub fn positive_amount(value: &Value, field: &str) -> ApiResult<Amount> {
    let a = amount(value, field)?;
    if a.is_zero() {
        return Err(ApiError::invalid(
            "invalid_amount",
            format!("{field} must be greater than zero"),
        ));
    }
    Ok(a)
}

/// An instant: an RFC 3339 string (`2026-01-31T00:00:00Z`, any offset) or
/// integer Unix seconds.
pub fn timestamp(value: &Value, field: &str) -> ApiResult<Timestamp> {
    let bad = || {
        ApiError::invalid(
            "invalid_timestamp",
            format!("{field} must be an RFC 3339 time or Unix seconds"),
        )
    };
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp::from_millis(t.timestamp_millis()))
            .map_err(|_| bad()),
        Value::Number(n) => n
            .as_i64()
            .and_then(|s| s.checked_mul(1000))
            .map(Timestamp::from_millis)
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// RFC 3339 in UTC with milliseconds.
pub fn render_time(t: Timestamp) -> String {
    DateTime::<Utc>::from_timestamp_millis(t.millis())
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| t.millis().to_string())
}

/// A JSON object field bounded in size, kept as its compact text.
pub fn json_object(value: &Value, field: &str) -> ApiResult<String> {
    if !value.is_object() {
        return Err(ApiError::invalid(
            "invalid_field",
            format!("{field} must be a JSON object"),
        ));
    }
    let text = value.to_string();
    if text.len() > JSON_OBJECT_BYTES_MAX {
        return Err(ApiError::invalid(
            "invalid_field",
            format!("{field} must be at most {JSON_OBJECT_BYTES_MAX} bytes"),
        ));
    }
    Ok(text)
}

/// An optional `attributes` object: kept with the events, bounded in size.
pub fn attributes(value: Option<&Value>) -> ApiResult<Option<String>> {
    value.map(|a| json_object(a, "attributes")).transpose()
}

/// An optional overage policy named by `field`: reject, cap or allow.
pub fn overage_policy(text: Option<&str>, field: &str) -> ApiResult<Option<OveragePolicy>> {
    text.map(|t| {
        OveragePolicy::parse(t).ok_or_else(|| {
            ApiError::invalid(
                "invalid_field",
                format!("{field} must be reject, cap or allow"),
            )
        })
    })
    .transpose()
}

pub fn short_text(text: &str, field: &str) -> ApiResult<String> {
    if text.is_empty() || text.len() > TEXT_BYTES_MAX || text.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid_field",
            format!("{field} must be 1 to {TEXT_BYTES_MAX} bytes of text"),
        ));
    }
    Ok(text.to_owned())
}

/// Stored JSON text back to a value for rendering.
pub fn stored_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Extractor: the raw `Idempotency-Key` header, checked by
/// [`idempotency_key`]. It copies that one header where axum's `HeaderMap`
/// extractor would clone every header of every request (~0.5–1 % of the HTTP
/// workers' samples in `usage`).
#[derive(Default)]
pub struct IdempotencyHeader(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(IdempotencyHeader(
            parts.headers.get("idempotency-key").cloned(),
        ))
    }
}

/// The idempotency key from the `Idempotency-Key` header or the body field;
/// both given and different is an error.
pub fn idempotency_key(
    header: &IdempotencyHeader,
    body: Option<&str>,
) -> ApiResult<Option<IdempotencyKey>> {
    let header = match &header.0 {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::invalid("invalid_idempotency_key", "Idempotency-Key must be ASCII")
        })?),
        None => None,
    };
    let text = match (header, body) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::invalid(
                "invalid_idempotency_key",
                "Idempotency-Key header and idempotency_key differ",
            ))
        }
        (Some(h), _) => h,
        (None, Some(b)) => b,
        (None, None) => return Ok(None),
    };
    IdempotencyKey::parse(text)
        .map(Some)
        .map_err(|e| ApiError::invalid("invalid_idempotency_key", e))
}

/// Page size from a `limit` parameter: default, and at most the store's maximum.
pub fn page_size(limit: Option<usize>) -> ApiResult<usize> {
    match limit {
        None => Ok(PAGE_SIZE_DEFAULT),
        Some(0) => Err(ApiError::invalid(
            "invalid_query",
            "limit must be at least 1",
        )),
        Some(n) if n > reckon_store::PAGE_SIZE_MAX => Err(ApiError::invalid(
            "invalid_query",
            format!("limit must be at most {}", reckon_store::PAGE_SIZE_MAX),
        )),
        Some(n) => Ok(n),
    }
}
