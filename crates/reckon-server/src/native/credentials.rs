//! `/v1/accounts/{id}/credentials`: keys that name an account in protocols
//! that carry a key instead of an account id (nilauth-credit).

use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::wire::Json;
use crate::wire::{self, render_time, JsonBody, PathId, PathSegment};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use reckon_core::Rejection;
use reckon_store::{Credential, CredentialKey, CredentialRefusal};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/accounts/{id}/credentials",
            get(list_credentials).post(add_credential),
        )
        .route(
            "/v1/accounts/{id}/credentials/{credential_id}/deactivate",
            post(deactivate),
        )
        .route(
            "/v1/accounts/{id}/credentials/{credential_id}/activate",
            post(activate),
        )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    /// A secret API key (private, at least 16 bytes; stored hashed) or a
    /// public identifier such as a public key (stored as given).
    pub key: String,
    #[serde(default)]
    pub public: bool,
}

#[derive(Serialize, ToSchema)]
pub struct CredentialView {
    pub id: String,
    pub account_id: String,
    pub public: bool,
    /// A public identifier in full; a private key by its first characters only.
    #[schema(example = "sk_live_...")]
    pub key: String,
    pub active: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Credential> for CredentialView {
    fn from(c: &Credential) -> CredentialView {
        CredentialView {
            id: c.id.clone(),
            account_id: c.account_id.to_string(),
            public: c.public,
            key: c.display.clone(),
            active: c.active,
            created_at: render_time(c.created_at),
            updated_at: render_time(c.updated_at),
        }
    }
}

/// Add a credential. Adding the same key to the same account again returns it unchanged.
#[utoipa::path(post, path = "/v1/accounts/{id}/credentials", tag = "credentials", params(("id" = String, Path)),
    request_body = CredentialBody,
    responses((status = 201, body = CredentialView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "credential_in_use: the key names another account", body = ErrorBody)),
    security(("admin_key" = [])))]
pub async fn add_credential(
    _: AdminAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    JsonBody(body): JsonBody<CredentialBody>,
) -> ApiResult<(StatusCode, Json<CredentialView>)> {
    let id = wire::account_id(&id)?;
    let key = CredentialKey::parse(&body.key, body.public)
        .map_err(|e| ApiError::invalid("invalid_credential", e))?;
    match state.store.add_credential(&id, key, state.now()).await? {
        Ok(c) => Ok((StatusCode::CREATED, Json(CredentialView::from(&c)))),
        Err(CredentialRefusal::AccountNotFound) => Err(Rejection::AccountNotFound.into()),
        Err(CredentialRefusal::KeyInUse) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "credential_in_use",
            "this key already names another account",
        )),
    }
}

#[derive(Serialize, ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialView>,
}

/// An account's credentials (private keys shown by prefix only).
#[utoipa::path(get, path = "/v1/accounts/{id}/credentials", tag = "credentials", params(("id" = String, Path)),
    responses((status = 200, body = CredentialList), (status = 404, body = ErrorBody)),
    security(("admin_key" = [])))]
pub async fn list_credentials(
    _: AdminAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
) -> ApiResult<Json<CredentialList>> {
    let id = wire::account_id(&id)?;
    if state.store.account(&id).await?.is_none() {
        return Err(Rejection::AccountNotFound.into());
    }
    let list = state.store.credentials(&id).await?;
    Ok(Json(CredentialList {
        credentials: list.iter().map(CredentialView::from).collect(),
    }))
}

async fn set_active(
    state: &AppState,
    id: &str,
    credential_id: &str,
    active: bool,
) -> ApiResult<Json<CredentialView>> {
    let id = wire::account_id(id)?;
    match state
        .store
        .set_credential_active(&id, credential_id, active, state.now())
        .await?
    {
        Some(c) => Ok(Json(CredentialView::from(&c))),
        None => Err(ApiError::not_found(
            "credential_not_found",
            "the account has no credential with this id",
        )),
    }
}

/// Deactivate a credential: it stops naming the account until activated again.
#[utoipa::path(post, path = "/v1/accounts/{id}/credentials/{credential_id}/deactivate", tag = "credentials",
    params(("id" = String, Path), ("credential_id" = String, Path)),
    responses((status = 200, body = CredentialView), (status = 404, body = ErrorBody)),
    security(("admin_key" = [])))]
pub async fn deactivate(
    _: AdminAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    PathSegment(credential_id): PathSegment<5>,
) -> ApiResult<Json<CredentialView>> {
    set_active(&state, &id, &credential_id, false).await
}

/// Activate a credential again.
#[utoipa::path(post, path = "/v1/accounts/{id}/credentials/{credential_id}/activate", tag = "credentials",
    params(("id" = String, Path), ("credential_id" = String, Path)),
    responses((status = 200, body = CredentialView), (status = 404, body = ErrorBody)),
    security(("admin_key" = [])))]
pub async fn activate(
    _: AdminAuth,
    State(state): State<AppState>,
    PathSegment(id): PathId,
    PathSegment(credential_id): PathSegment<5>,
) -> ApiResult<Json<CredentialView>> {
    set_active(&state, &id, &credential_id, true).await
}
