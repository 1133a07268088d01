//! Adapters that speak the seed systems' own HTTP protocols, each a thin
//! translation into the same core commands the native API uses. A fix in
//! the core fixes every surface; no adapter owns balance logic.

pub mod nilauth;

use crate::AppState;
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new().merge(nilauth::router())
}
