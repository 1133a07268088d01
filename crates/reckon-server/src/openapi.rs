//! The OpenAPI document, assembled from the handlers' annotations (never
//! written by hand), served at `/openapi.json`, with Swagger UI at `/docs`.
//! The UI's files are compiled into the binary (the `vendored` feature), so
//! `/docs` works without internet access.

use crate::native::{accounts, batch, credentials, events, grants, holds, usage};
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Reckon", description = "Usage metering, budgets, credit holds and quotas: one ledger."),
    paths(
        crate::healthz,
        accounts::create_account, accounts::get_account, accounts::update_account, accounts::list_accounts,
        grants::create_grant,
        usage::record_usage, usage::check,
        events::list_events,
        holds::lock, holds::settle, holds::release, holds::get_hold, holds::list_holds,
        batch::batch,
        credentials::add_credential, credentials::list_credentials, credentials::deactivate, credentials::activate,
    ),
    modifiers(&Security),
    tags(
        (name = "accounts", description = "Accounts and their balances"),
        (name = "grants", description = "Value in: budgets, bundles, top-ups"),
        (name = "usage", description = "Value out, and the question before it"),
        (name = "events", description = "The audit trail"),
        (name = "holds", description = "Lock an estimate, then settle the real cost or release"),
        (name = "batch", description = "Many operations, one request, one commit"),
        (name = "credentials", description = "Keys that name an account (nilauth-credit)"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Admin-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn router() -> Router {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
