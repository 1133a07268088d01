//! The routes that carry the load, matched before axum's router.
//!
//! axum's router cost a `usage` request ~4,400 of the ~31,400 instructions
//! it spent in the HTTP workers (`scripts/server-instructions`): the route
//! lookup, a map of URL parameters put into the request's extensions (two
//! allocations and a hash insert), and a boxed route service cloned and
//! driven through two more futures. So `POST` to the hot paths (`usage`,
//! `check`, a hold's lock, settle and release, `/v1/batch`, and the
//! nilauth-credit locks and unlocks) is recognised here by its literal
//! shape and its handler called directly. Everything
//! else, including any other method on the same paths, goes to the router,
//! which registers the same handlers: a hot handler reads its id from the
//! URI (`wire::PathId`), so it answers the same whichever matched it.

use crate::compat::nilauth;
use crate::native::{batch, holds, usage};
use crate::AppState;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::Method;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::Router;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The server's one service: the hot routes, then axum's router.
#[derive(Clone)]
pub struct Dispatch {
    router: Router,
    state: AppState,
    /// Off when requests are traced or CORS is on: those layers wrap the
    /// router, and the hot routes would bypass them.
    hot: bool,
}

impl Dispatch {
    pub fn new(router: Router, state: AppState, hot: bool) -> Dispatch {
        Dispatch { router, state, hot }
    }
}

/// A hot route, by the literal shape of its path.
#[derive(Debug, PartialEq)]
enum Hot {
    Usage,
    Check,
    Lock,
    Settle,
    Release,
    Batch,
    NilLockPrivate,
    NilLockPublic,
    NilFundsLock,
    NilUnlock,
}

/// `None` for every path the router should see; a path is hot only if the
/// router would have matched it to the same handler (a trailing slash or an
/// extra segment matches no route there, so none here either).
fn hot_route(path: &str) -> Option<Hot> {
    match path {
        "/v1/holds" => return Some(Hot::Lock),
        "/v1/batch" => return Some(Hot::Batch),
        "/v1/balance/lock/private" => return Some(Hot::NilLockPrivate),
        "/v1/balance/lock/public" => return Some(Hot::NilLockPublic),
        "/v1/funds/lock" => return Some(Hot::NilFundsLock),
        "/v1/balance/unlock" | "/v1/funds/unlock" => return Some(Hot::NilUnlock),
        _ => {}
    }
    let (accounts, rest) = if let Some(rest) = path.strip_prefix("/v1/accounts/") {
        (true, rest)
    } else {
        (false, path.strip_prefix("/v1/holds/")?)
    };
    // An empty id is matched, as the router matches it (and refused by the
    // handler either way).
    let (_id, action) = rest.split_once('/')?;
    match (accounts, action) {
        (true, "usage") => Some(Hot::Usage),
        (true, "check") => Some(Hot::Check),
        (false, "settle") => Some(Hot::Settle),
        (false, "release") => Some(Hot::Release),
        _ => None,
    }
}

impl tower::Service<Request> for Dispatch {
    type Response = Response;
    type Error = Infallible;
    type Future = DispatchFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> DispatchFuture {
        let hot = if self.hot && request.method() == Method::POST {
            hot_route(request.uri().path())
        } else {
            None
        };
        let Some(hot) = hot else {
            return DispatchFuture::Routed {
                future: self.router.call(request),
            };
        };
        let state = self.state.clone();
        let future = match hot {
            Hot::Usage => Handler::call(usage::record_usage, request, state),
            Hot::Check => Handler::call(usage::check, request, state),
            Hot::Lock => Handler::call(holds::lock, request, state),
            Hot::Settle => Handler::call(holds::settle, request, state),
            Hot::Release => Handler::call(holds::release, request, state),
            Hot::Batch => Handler::call(batch::batch, request, state),
            Hot::NilLockPrivate => Handler::call(nilauth::lock_by_kind::<false>, request, state),
            Hot::NilLockPublic => Handler::call(nilauth::lock_by_kind::<true>, request, state),
            Hot::NilFundsLock => Handler::call(nilauth::funds_lock, request, state),
            Hot::NilUnlock => Handler::call(nilauth::unlock, request, state),
        };
        DispatchFuture::Hot { future }
    }
}

pin_project_lite::pin_project! {
    /// A hot handler's future (already boxed by axum) or the router's.
    #[project = Projection]
    pub enum DispatchFuture {
        Hot { future: Pin<Box<dyn Future<Output = Response> + Send>> },
        Routed { #[pin] future: RouteFuture<Infallible> },
    }
}

impl Future for DispatchFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projection::Hot { future } => future.as_mut().poll(cx).map(Ok),
            Projection::Routed { future } => future.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{hot_route, Hot};

    #[test]
    fn only_the_shapes_the_router_gives_the_same_handlers_are_hot() {
        assert_eq!(hot_route("/v1/accounts/a-1/usage"), Some(Hot::Usage));
        assert_eq!(hot_route("/v1/accounts/a%2F1/check"), Some(Hot::Check));
        assert_eq!(hot_route("/v1/holds"), Some(Hot::Lock));
        assert_eq!(hot_route("/v1/holds/h/settle"), Some(Hot::Settle));
        assert_eq!(hot_route("/v1/holds/h/release"), Some(Hot::Release));
        assert_eq!(hot_route("/v1/batch"), Some(Hot::Batch));
        assert_eq!(hot_route("/v1/accounts//usage"), Some(Hot::Usage));
        assert_eq!(
            hot_route("/v1/balance/lock/private"),
            Some(Hot::NilLockPrivate)
        );
        assert_eq!(
            hot_route("/v1/balance/lock/public"),
            Some(Hot::NilLockPublic)
        );
        assert_eq!(hot_route("/v1/funds/lock"), Some(Hot::NilFundsLock));
        assert_eq!(hot_route("/v1/balance/unlock"), Some(Hot::NilUnlock));
        assert_eq!(hot_route("/v1/funds/unlock"), Some(Hot::NilUnlock));
        for cold in [
            "/v1/accounts/a/usage/",
            "/v1/accounts/a/b/usage",
            "/v1/accounts/a/settle",
            "/v1/holds/h/usage",
            "/v1/holds/h",
            "/v1/holds/",
            "/v1/batch/",
            "/v1/accounts/a",
            "/v1/accounts/a/grants",
            "/healthz",
            "/v1/balance/lock/other",
            "/v1/balance/lock/public/",
            "/v1/credential/validate",
        ] {
            assert_eq!(hot_route(cold), None, "{cold}");
        }
    }
}
