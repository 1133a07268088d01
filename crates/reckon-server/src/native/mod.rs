//! The native `/v1` API. Each file owns its routes, request bodies and handlers.

pub mod accounts;
pub mod batch;
pub mod credentials;
pub mod events;
pub mod grants;
pub mod holds;
pub mod usage;

use crate::AppState;
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(accounts::router())
        .merge(grants::router())
        .merge(usage::router())
        .merge(events::router())
        .merge(holds::router())
        .merge(credentials::router())
        .merge(batch::router())
}
