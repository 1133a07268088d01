//! `/v1/accounts/{id}/events`: the audit trail, newest first.

use crate::auth::ServiceAuth;
use crate::error::{ApiResult, ErrorBody};
use crate::views::EventView;
use crate::wire::Json;
use crate::wire::{self, PathId, PathSegment, QueryParams};
use crate::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::Router;
use reckon_core::Rejection;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/accounts/{id}/events", get(list_events))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Page size, 1-500 (default 100).
    pub limit: Option<usize>,
    /// Only events with `seq` below this (the previous page's `next_before`).
    pub before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `before` for the next page; null on the last page.
    pub next_before: Option<i64>,
}

/// The account's events, newest first.
#[utoipa::path(get, path = "/v1/accounts/{id}/events", tag = "events", params(("id" = String, Path), EventParams),
    responses((status = 200, body = EventPage), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_events(
    _: ServiceAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    QueryParams(q): QueryParams<EventParams>,
) -> ApiResult<Json<EventPage>> {
    let id = wire::account_id(&id)?;
    let limit = wire::page_size(q.limit)?;
    let events = state.store.events(&id, q.before, limit).await?;
    if events.is_empty() && state.store.account(&id).await?.is_none() {
        return Err(Rejection::AccountNotFound.into());
    }
    let next_before = if events.len() == limit {
        events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(EventPage {
        events: events.iter().map(EventView::from).collect(),
        next_before,
    }))
}
