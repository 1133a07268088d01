//! # reckon-server: Reckon over HTTP
//!
//! - [`native`]: the native `/v1` API, one file per area (accounts, grants,
//!   usage, holds, credentials, events), each owning its routes.
//! - [`compat`]: the seed systems' own protocols (nilauth-credit), as thin
//!   adapters over the same commands.
//! - [`auth`]: API keys, scopes and the extractors that enforce them.
//! - [`wire`]: parsing at the boundary (exact amounts, times, ids, limits)
//!   and the JSON body extractor; [`views`]: what responses look like.
//! - [`dispatch`]: the hot routes, matched before axum's router.
//! - [`error`]: the one error type and its status codes.
//! - [`openapi`]: the OpenAPI document, generated from the handlers, and `/docs`.
//! - [`scheduler`]: wakes up to sweep expiries and old idempotency keys;
//!   it only submits ordinary commands.
//! - [`config`]: typed settings from flags and environment.
//!
//! Start a server with [`serve`] on any listener (tests bind port 0).

pub mod auth;
pub mod compat;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod native;
pub mod openapi;
pub mod render;
pub mod scheduler;
pub mod startup;
pub mod views;
pub mod wire;

use crate::dispatch::Dispatch;
use crate::error::ApiResult;
use crate::wire::Json;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, ServiceExt};
use reckon_core::Timestamp;
use reckon_store::{Clock, Executed, Request, Store};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::Layer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

pub use auth::Keys;
pub use config::Config;

/// Settings handlers need at request time.
#[derive(Clone, Debug)]
pub struct Limits {
    /// TTL of a hold that names none.
    pub hold_ttl_default_secs: u64,
    /// Longest TTL a hold may ask for.
    pub hold_ttl_max_secs: u64,
}

/// What every handler can reach, behind one `Arc`: axum clones the state
/// for every request (the route's service and each `State` extractor), and
/// with one `Arc` per field each clone and drop was four atomic operations
/// instead of one (cloning and dropping the state with tower's `clone_box`
/// went from ~3.3 % to ~2.4 % of the HTTP workers' samples in `usage`).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields of [`AppState`].
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub keys: Keys,
    pub limits: Limits,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Submits one request to the executor and waits until it is durable.
    pub async fn execute(&self, request: Request) -> ApiResult<Executed> {
        Ok(self.store.submit(request).await?)
    }
}

/// Header set on a response that replays an earlier request's answer.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Adds the replay header where it applies.
pub fn with_replay_flag(executed: &Executed, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    if executed.replayed {
        response.headers_mut().insert(
            HeaderName::from_static(REPLAYED_HEADER),
            HeaderValue::from_static("true"),
        );
    }
    response
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
    version: &'static str,
}

/// Liveness; needs no key.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// The whole HTTP surface as one service for [`serve`]: the hot routes,
/// then axum's router (see [`dispatch`]).
pub fn app(state: AppState, cors_origins: &[String]) -> Dispatch {
    let mut routes = Router::new()
        .route("/healthz", get(healthz))
        .merge(native::router())
        .merge(compat::router())
        .with_state(state.clone())
        .merge(openapi::router());
    // Outermost first: CORS (off unless configured), then request tracing
    // (only when logged, see `request_tracing`), each around the whole
    // router once, not around every route: `Router::layer` wraps each route
    // in a boxed service that is cloned for every request, which was ~6 of
    // a `usage` request's ~62 allocations (and of a `healthz`'s ~28). Body
    // limits are `wire::JsonBody`'s, per extractor.
    let traced = request_tracing();
    if traced {
        routes = Router::new().fallback_service(TraceLayer::new_for_http().layer(routes));
    }
    let cors = cors(cors_origins);
    // The hot routes would bypass both layers, so with either of them every
    // request goes through the router. (Wrapping the dispatcher in an
    // optional layer instead, `tower::util::Either`, cost every request
    // ~360 instructions even with the layer off.)
    let hot = !traced && cors.is_none();
    if let Some(layer) = cors {
        routes = Router::new().fallback_service(layer.layer(routes));
    }
    Dispatch::new(routes, state, hot)
}

/// Whether a span and a log line per request would be written
/// (`RECKON_LOG=tower_http=debug`). Otherwise the trace layer is left out:
/// it cost ~3,300 instructions of a `usage` request's ~34,700 in the HTTP
/// workers (`scripts/server-instructions`) to emit nothing, as internal
/// errors are logged where they happen (`error.rs`). Decided once, when
/// the router is built, so the log filter must be installed before.
fn request_tracing() -> bool {
    tracing::enabled!(target: "tower_http::trace::on_response", tracing::Level::DEBUG)
}

/// CORS for browser dashboards: `*` allows any origin, otherwise the list.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers(tower_http::cors::Any),
    )
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops taking
/// connections and lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Dispatch,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(shutdown)
        .await
}

/// A fresh id for grants and holds: a UUID v7, time-ordered so that rows
/// made together sit together in the database's indexes (fewer pages dirtied
/// per commit), and still a UUID for protocols that require one.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::request_tracing;

    #[test]
    fn requests_are_traced_only_when_the_log_filter_shows_them() {
        let shown = tracing_subscriber::fmt()
            .with_env_filter("info,tower_http=debug")
            .finish();
        assert!(tracing::subscriber::with_default(shown, request_tracing));
        let hidden = tracing_subscriber::fmt().with_env_filter("info").finish();
        assert!(!tracing::subscriber::with_default(hidden, request_tracing));
    }
}
