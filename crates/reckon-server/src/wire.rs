//! The boundary: wire values in, validated core values out, and back.
//!
//! Amounts arrive as JSON numbers or decimal strings and are parsed from
//! their exact text (serde_json keeps number text with `arbitrary_precision`),
//! so `0.1` is one tenth, never a float's approximation. Amounts leave as
//! decimal strings for the same reason.

use crate::error::{ApiError, ApiResult};
use crate::render::Render;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
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

/// A JSON request body of at most `LIMIT` bytes, parsed into `T`; anything
/// else becomes our error shape. Read here rather than through `axum::Json`
/// because that one parses the `Content-Type` as a full MIME type, gathers
/// the body through a list of chunks and needs a `DefaultBodyLimit` layer
/// that adds an extension (a map allocation) to every request: doing it
/// here took ~1,900 of the ~42,400 instructions a `usage` request cost the
/// HTTP workers (docs/performance-log.md). Messages are axum's, so clients see
/// the same texts as before.
pub struct JsonBody<T, const LIMIT: usize = BODY_BYTES_MAX>(pub T);

impl<S: Send + Sync, T: DeserializeOwned, const LIMIT: usize> FromRequest<S>
    for JsonBody<T, LIMIT>
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::invalid(
                "invalid_json",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = read_body(req.into_body(), LIMIT).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], for a route whose body may be left out: an empty (or
/// all-whitespace) body is `T::default()`, and with no body a client sends
/// no `Content-Type`, so none is asked for.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req.into_body(), BODY_BYTES_MAX).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

/// Parsed plainly first: tracking the path of every field for an error
/// message cost a `/v1/batch` of 1,000 operations about a tenth of its
/// handler's instructions. Only a body that fails is parsed again, with the
/// path, to say where.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|_| json_error::<T>(bytes))
}

/// The error for a body that `serde_json` refused, with the path of the
/// field at fault in axum's words (clients saw those texts before).
fn json_error<T: DeserializeOwned>(bytes: &[u8]) -> ApiError {
    let mut input = serde_json::Deserializer::from_slice(bytes);
    let error = match serde_path_to_error::deserialize::<_, T>(&mut input) {
        Err(e) => {
            let prefix = match e.inner().classify() {
                serde_json::error::Category::Data => {
                    "Failed to deserialize the JSON body into the target type"
                }
                _ => "Failed to parse the request body as JSON",
            };
            format!("{prefix}: {e}")
        }
        // What is left: trailing characters after the value.
        Ok(_) => match input.end() {
            Err(e) => format!("Failed to parse the request body as JSON: {e}"),
            Ok(()) => "Failed to parse the request body as JSON".to_owned(),
        },
    };
    ApiError::invalid("invalid_json", error)
}

/// `application/json`, or any `application/...+json`, with or without
/// parameters (`; charset=utf-8`), in any case: what `axum::Json` accepts.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return false;
    };
    // What nearly every client sends, compared before any parsing.
    if value.as_bytes() == b"application/json" {
        return true;
    }
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let subtype = subtype.as_bytes();
    let suffix = b"+json";
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case(b"json")
            || (subtype.len() > suffix.len()
                && subtype[subtype.len() - suffix.len()..].eq_ignore_ascii_case(suffix)))
}

/// The whole body, refused with 413 once it passes `limit` bytes (or
/// announces more). A body that arrives in one piece, as small ones do, is
/// passed on without a copy.
async fn read_body(mut body: axum::body::Body, limit: usize) -> ApiResult<Bytes> {
    use axum::body::HttpBody;
    let too_large = || {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        )
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut length = 0;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame
            .map_err(|_| ApiError::invalid("invalid_json", "the request body could not be read"))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        length += data.len();
        if length > limit {
            return Err(too_large());
        }
        if first.is_none() && joined.is_empty() {
            first = Some(data);
            continue;
        }
        // A second piece: both go into one buffer from here on.
        if let Some(earlier) = first.take() {
            joined.extend_from_slice(&earlier);
        }
        joined.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// A JSON response through `serde_json`, into a `Vec` sized for our usual
/// answers: `axum::Json`'s `BytesMut` writer starts at 128 bytes and
/// copies each piece through `BufMut`.
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(RESPONSE_BYTES_RESERVED);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => json_response(body),
            Err(e) => ApiError::internal(e).into_response(),
        }
    }
}

/// A JSON response written by hand (`render.rs`): the answers on the hot
/// path.
pub struct Rendered<T>(pub T);

impl<T: Render> IntoResponse for Rendered<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(self.0.size_hint());
        self.0.render(&mut body);
        json_response(body)
    }
}

/// Room reserved for a response body before serialising.
const RESPONSE_BYTES_RESERVED: usize = 256;

fn json_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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
        // With `arbitrary_precision` a number keeps its text: no copy.
        Value::Number(n) => Amount::parse(n.as_str()),
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

/// Extractor: segment `N` of the path (counting from 0 before the leading
/// slash, so the id in `/v1/accounts/{id}/usage` is segment 3),
/// percent-decoded as axum's `Path` would, refused in our error shape when
/// it is not UTF-8 (axum's `Path` answered that in plain text). Read from
/// the URI rather than from axum's path parameters so that a handler
/// answers the same whether axum's router matched it or `dispatch` did
/// (which skips the router on the hot routes).
pub struct PathSegment<const N: usize>(pub String);

/// The id in `/v1/{area}/{id}/...`: every route's first parameter.
pub type PathId = PathSegment<3>;

impl<S: Send + Sync, const N: usize> FromRequestParts<S> for PathSegment<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let segment = parts.uri.path().split('/').nth(N).unwrap_or_default();
        match percent_encoding::percent_decode_str(segment).decode_utf8() {
            Ok(text) => Ok(PathSegment(text.into_owned())),
            Err(_) => Err(ApiError::invalid(
                "invalid_path",
                "the path is not UTF-8 once percent-decoded",
            )),
        }
    }
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
        // A `HeaderName`, not a string: a lookup by string parses the name.
        const NAME: axum::http::HeaderName = axum::http::HeaderName::from_static("idempotency-key");
        Ok(IdempotencyHeader(parts.headers.get(NAME).cloned()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, HttpBody};
    use axum::http::{header, HeaderMap};
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    fn content_type(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/vnd.api+json",
            "application/problem+JSON; x=y",
        ] {
            assert!(is_json(&content_type(ok)), "{ok}");
        }
        for not in [
            "text/json",
            "application/jsonx",
            "application/+json",
            "application",
            "json",
            "",
            "text/plain; x=application/json",
        ] {
            assert!(!is_json(&content_type(not)), "{not}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    /// A body that arrives in the given pieces, its length unannounced
    /// (as with chunked transfer encoding).
    struct Pieces(VecDeque<Bytes>);

    impl HttpBody for Pieces {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    fn pieces(parts: &[&str]) -> Body {
        Body::new(Pieces(
            parts
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        ))
    }

    #[tokio::test]
    async fn bodies_in_pieces_are_joined_and_limited() {
        let whole = read_body(pieces(&["{\"a\":", "1", "}"]), 7).await.unwrap();
        assert_eq!(&whole[..], b"{\"a\":1}");
        let one = read_body(pieces(&["{}"]), 2).await.unwrap();
        assert_eq!(&one[..], b"{}");
        assert!(read_body(pieces(&[]), 0).await.unwrap().is_empty());
        let over = read_body(pieces(&["{\"a\":", "12", "}"]), 7)
            .await
            .unwrap_err();
        assert_eq!(
            (over.status.as_u16(), over.code),
            (413, "payload_too_large")
        );
        // Announced too long: refused before anything is read.
        let announced = read_body(Body::from("0123456789"), 9).await.unwrap_err();
        assert_eq!(announced.code, "payload_too_large");
    }
}
