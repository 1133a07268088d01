//! Per-route metering for axum: what the seed's `@metered` decorator does,
//! as a tower layer.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use reckon_client::{amount, Client};
//! use reckon_client::metering::{Cost, Meter, Metering, UserId};
//!
//! let metering = Metering::new(Client::new("http://127.0.0.1:8080", "service-key"));
//! let app: Router = Router::new().route(
//!     "/api/data",
//!     get(|| async { "..." }).layer(metering.layer(
//!         Meter::new(UserId::header("x-user-id"), amount("5"))
//!             .cost(Cost::ResponseSize { base: amount("0.5"), per_kib: amount("0.1") }),
//!     )),
//! );
//! ```
//!
//! For each request the layer
//! 1. finds the user id (header, query, path, JSON body field, JWT `sub`, or
//!    a closure); none: **401**, the handler does not run;
//! 2. locks the estimate; insufficient balance, expired or suspended
//!    account: **402**; unknown account: **401**; Reckon unreachable: **503**
//!    when fail-closed (the default), or the handler runs unmetered when
//!    fail-open;
//! 3. runs the handler; on a 5xx response or a panic it **releases** the hold
//!    (the panic then continues);
//! 4. otherwise computes the cost, clamps it to the estimate unless the
//!    route allows overage, and **settles**. A failed settle is logged and the
//!    response is still returned (the hold then expires on its own, which
//!    refunds it: the user is never charged twice).

use crate::{Amount, Client, Overage};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::{HeaderMap, HeaderName, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::FutureExt;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Largest request body the layer reads to find a user id in JSON.
pub const USER_ID_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Largest response body the layer buffers to measure its size when the
/// response names no `Content-Length`.
pub const RESPONSE_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A closure that names the user from the request line and headers.
pub type UserIdFn = Arc<dyn Fn(&Method, &Uri, &HeaderMap) -> Option<String> + Send + Sync>;
/// A closure that prices a finished request.
pub type CostFn = Arc<dyn Fn(&CostInput) -> Amount + Send + Sync>;

/// Where the user (account) id comes from.
#[derive(Clone)]
pub enum UserId {
    Header(HeaderName),
    Query(String),
    /// A path parameter of the route, e.g. `{user_id}`.
    Path(String),
    /// A top-level string field of a JSON request body.
    JsonField(String),
    /// The `sub` claim of an `Authorization: Bearer` JWT. The signature is
    /// NOT checked here: put the layer behind the layer that authenticates.
    JwtSub,
    Custom(UserIdFn),
}

impl UserId {
    pub fn header(name: &'static str) -> UserId {
        UserId::Header(HeaderName::from_static(name))
    }
}

/// What a request is charged after it succeeds.
#[derive(Clone)]
pub enum Cost {
    /// The same amount every time.
    Fixed(Amount),
    /// `base + per_kib * response KiB`.
    ResponseSize {
        base: Amount,
        per_kib: Amount,
    },
    /// `base + per_second * seconds the handler took`.
    ProcessingTime {
        base: Amount,
        per_second: Amount,
    },
    Custom(CostFn),
}

/// What a cost calculator can look at.
pub struct CostInput<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub request_headers: &'a HeaderMap,
    pub status: StatusCode,
    pub response_headers: &'a HeaderMap,
    pub response_bytes: u64,
    pub elapsed: Duration,
}

/// `base + rate * numerator / denominator`, in micro-units, rounded half up.
fn linear(base: Amount, rate: Amount, numerator: u128, denominator: u128) -> Amount {
    let extra = (rate.micros() as u128 * numerator + denominator / 2) / denominator;
    let total = (base.micros() as u128)
        .saturating_add(extra)
        .min(Amount::MAX.micros() as u128);
    Amount::from_micros(total as i64).unwrap_or(Amount::MAX)
}

impl Cost {
    pub fn compute(&self, input: &CostInput) -> Amount {
        match self {
            Cost::Fixed(a) => *a,
            Cost::ResponseSize { base, per_kib } => {
                linear(*base, *per_kib, input.response_bytes as u128, 1024)
            }
            Cost::ProcessingTime { base, per_second } => {
                linear(*base, *per_second, input.elapsed.as_micros(), 1_000_000)
            }
            Cost::Custom(f) => f(input),
        }
    }

    fn needs_response_size(&self) -> bool {
        matches!(self, Cost::ResponseSize { .. } | Cost::Custom(_))
    }
}

/// One route's metering: who pays, what to lock, what to charge.
#[derive(Clone)]
pub struct Meter {
    user_id: UserId,
    estimate: Amount,
    cost: Cost,
    allow_overage: bool,
    ttl_secs: Option<u64>,
}

impl Meter {
    /// Locks `estimate`; charges it in full unless [`Meter::cost`] says otherwise.
    pub fn new(user_id: UserId, estimate: Amount) -> Meter {
        Meter {
            user_id,
            estimate,
            cost: Cost::Fixed(estimate),
            allow_overage: false,
            ttl_secs: None,
        }
    }

    pub fn cost(mut self, cost: Cost) -> Meter {
        self.cost = cost;
        self
    }

    /// Charge costs above the estimate (when the balance covers them)
    /// instead of capping them at the estimate.
    pub fn allow_overage(mut self) -> Meter {
        self.allow_overage = true;
        self
    }

    /// How long the lock lives if the settle never arrives.
    pub fn ttl_secs(mut self, ttl: u64) -> Meter {
        self.ttl_secs = Some(ttl);
        self
    }
}

/// What to do when Reckon cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Refuse the request with 503 (the default: never give away paid work).
    #[default]
    Closed,
    /// Serve the request unmetered and log a warning.
    Open,
}

/// Shared settings; makes one [`MeterLayer`] per route.
#[derive(Clone)]
pub struct Metering {
    client: Client,
    fail_mode: FailMode,
}

impl Metering {
    pub fn new(client: Client) -> Metering {
        Metering {
            client,
            fail_mode: FailMode::Closed,
        }
    }

    pub fn fail_mode(mut self, mode: FailMode) -> Metering {
        self.fail_mode = mode;
        self
    }

    pub fn layer(&self, meter: Meter) -> MeterLayer {
        MeterLayer {
            client: self.client.clone(),
            fail_mode: self.fail_mode,
            meter: Arc::new(meter),
        }
    }
}

#[derive(Clone)]
pub struct MeterLayer {
    client: Client,
    fail_mode: FailMode,
    meter: Arc<Meter>,
}

impl<S> tower::Layer<S> for MeterLayer {
    type Service = MeterService<S>;

    fn layer(&self, inner: S) -> MeterService<S> {
        MeterService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MeterService<S> {
    inner: S,
    layer: MeterLayer,
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

impl<S> tower::Service<Request<Body>> for MeterService<S>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let layer = self.layer.clone();
        Box::pin(async move { Ok(meter(layer, inner, req).await) })
    }
}

async fn meter<S>(layer: MeterLayer, mut inner: S, req: Request<Body>) -> Response
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible> + Send,
    S::Future: Send,
{
    let meter = &layer.meter;
    let (req, user) = match find_user_id(&meter.user_id, req).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(user) = user else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "no_user_id",
            "the request names no user",
        );
    };
    let hold = match layer
        .client
        .lock(&user, meter.estimate, meter.ttl_secs, None)
        .await
    {
        Ok(hold) => Some(hold),
        Err(e) => match e.code() {
            Some("insufficient_balance" | "account_expired" | "account_suspended") => {
                return refuse(
                    StatusCode::PAYMENT_REQUIRED,
                    e.code().unwrap_or_default(),
                    "the account cannot pay for this request",
                );
            }
            Some("account_not_found" | "invalid_id") => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "unknown_user",
                    "the request's user has no account",
                );
            }
            _ if e.is_unavailable() && layer.fail_mode == FailMode::Open => {
                tracing::warn!(error = %e, user = %user, "reckon unavailable; serving unmetered (fail-open)");
                None
            }
            _ => {
                tracing::error!(error = %e, user = %user, "could not lock credits");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "metering_unavailable",
                    "the metering service is unavailable",
                );
            }
        },
    };
    let (method, uri, request_headers) = (
        req.method().clone(),
        req.uri().clone(),
        req.headers().clone(),
    );
    let started = Instant::now();
    let outcome = AssertUnwindSafe(inner.call(req)).catch_unwind().await;
    let elapsed = started.elapsed();
    let Some(hold) = hold else {
        return match outcome {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(panic) => std::panic::resume_unwind(panic),
        };
    };
    let response = match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(panic) => {
            release(&layer.client, &hold.id, "the handler panicked").await;
            std::panic::resume_unwind(panic);
        }
    };
    if response.status().is_server_error() {
        release(&layer.client, &hold.id, "the handler failed").await;
        return response;
    }
    let (response, response_bytes) = measure(response, meter.cost.needs_response_size()).await;
    let input = CostInput {
        method: &method,
        uri: &uri,
        request_headers: &request_headers,
        status: response.status(),
        response_headers: response.headers(),
        response_bytes,
        elapsed,
    };
    let cost = meter.cost.compute(&input);
    let (cost, overage) = if meter.allow_overage {
        (cost, Some(Overage::Allow))
    } else {
        (cost.min(meter.estimate), None)
    };
    if let Err(e) = layer.client.settle(&hold.id, cost, overage, None).await {
        tracing::error!(error = %e, hold = %hold.id, %cost, "settle failed; the hold will expire and refund itself");
    }
    response
}

async fn release(client: &Client, hold_id: &str, why: &str) {
    if let Err(e) = client.release(hold_id, None).await {
        tracing::error!(error = %e, hold = %hold_id, "release failed ({why}); the hold will expire and refund itself");
    }
}

/// The response's size in bytes: from `Content-Length`, else by buffering
/// the body (only when the cost needs it).
async fn measure(response: Response, needed: bool) -> (Response, u64) {
    let declared = response
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) => (response, n),
        None if !needed => (response, 0),
        None => {
            let (parts, body) = response.into_parts();
            match axum::body::to_bytes(body, RESPONSE_BODY_BYTES_MAX).await {
                Ok(bytes) => {
                    let n = bytes.len() as u64;
                    (Response::from_parts(parts, Body::from(bytes)), n)
                }
                Err(_) => (
                    refuse(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "response_too_large",
                        "response too large to meter",
                    ),
                    0,
                ),
            }
        }
    }
}

/// Finds the user id; may read (and put back) the body.
async fn find_user_id(
    source: &UserId,
    req: Request<Body>,
) -> Result<(Request<Body>, Option<String>), Response> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let found = match source {
        UserId::Header(name) => req
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(non_empty),
        UserId::Query(name) => req.uri().query().and_then(|q| query_value(q, name)),
        UserId::Path(name) => {
            let (mut parts, body) = req.into_parts();
            let found = RawPathParams::from_request_parts(&mut parts, &())
                .await
                .ok()
                .and_then(|params| {
                    params
                        .iter()
                        .find(|(k, _)| k == name)
                        .and_then(|(_, v)| non_empty(v))
                });
            return Ok((Request::from_parts(parts, body), found));
        }
        UserId::JsonField(field) => {
            let (parts, body) = req.into_parts();
            let bytes: Bytes = axum::body::to_bytes(body, USER_ID_BODY_BYTES_MAX)
                .await
                .map_err(|_| {
                    refuse(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "request body too large",
                    )
                })?;
            let found = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get(field).and_then(|f| f.as_str()).and_then(non_empty));
            return Ok((Request::from_parts(parts, Body::from(bytes)), found));
        }
        UserId::JwtSub => req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(jwt_sub),
        UserId::Custom(f) => f(req.method(), req.uri(), req.headers()),
    };
    Ok((req, found))
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// The `sub` claim of a JWT's payload, without checking its signature.
fn jwt_sub(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match &claims["sub"] {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount;

    #[test]
    fn calculators_are_exact() {
        let (m, u, h) = (Method::GET, Uri::from_static("/"), HeaderMap::new());
        let at = |bytes: u64, elapsed: Duration| CostInput {
            method: &m,
            uri: &u,
            request_headers: &h,
            status: StatusCode::OK,
            response_headers: &h,
            response_bytes: bytes,
            elapsed,
        };
        let size = Cost::ResponseSize {
            base: amount("0.5"),
            per_kib: amount("0.1"),
        };
        assert_eq!(size.compute(&at(2048, Duration::ZERO)), amount("0.7"));
        assert_eq!(size.compute(&at(512, Duration::ZERO)), amount("0.55"));
        let time = Cost::ProcessingTime {
            base: amount("1"),
            per_second: amount("2"),
        };
        assert_eq!(
            time.compute(&at(0, Duration::from_millis(1500))),
            amount("4")
        );
        assert_eq!(
            Cost::Fixed(amount("2.5")).compute(&at(0, Duration::ZERO)),
            amount("2.5")
        );
    }

    #[test]
    fn jwt_sub_and_query() {
        // {"alg":"none"}.{"sub":"user-42"}.
        let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyLTQyIn0.";
        assert_eq!(jwt_sub(token).as_deref(), Some("user-42"));
        assert_eq!(jwt_sub("not-a-jwt"), None);
        assert_eq!(
            query_value("a=1&user_id=bob", "user_id").as_deref(),
            Some("bob")
        );
        assert_eq!(query_value("user_id=", "user_id"), None);
    }
}
