//! API keys and the two scopes.
//!
//! A *service* key may read, check and spend; an *admin* key may also create
//! accounts, grant value and change settings. Keys arrive as `X-API-Key`,
//! `X-Admin-Key` or `Authorization: Bearer`; whichever header carries it, a
//! key's scope is the scope it was configured with.
//!
//! Only SHA-256 hashes of keys are kept in memory or in the database, and a
//! presented key is compared against every known hash in constant time, so
//! neither timing nor a memory dump gives a key away. Keys are never logged.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::{HeaderName, AUTHORIZATION};
use axum::http::request::Parts;
use reckon_store::Store;
use sha2::{Digest, Sha256};

/// Settings key under which the generated admin key's hash is stored.
const GENERATED_ADMIN_KEY_SETTING: &str = "generated_admin_key_sha256";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Service,
    Admin,
}

type Hash = [u8; 32];

fn hash(key: &str) -> Hash {
    Sha256::digest(key.as_bytes()).into()
}

/// Equal in time independent of where the bytes differ.
fn ct_eq(a: &Hash, b: &Hash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone, Default)]
pub struct Keys {
    service: Vec<Hash>,
    admin: Vec<Hash>,
}

impl Keys {
    pub fn new(service: &[String], admin: &[String]) -> Keys {
        Keys {
            service: service.iter().map(|k| hash(k)).collect(),
            admin: admin.iter().map(|k| hash(k)).collect(),
        }
    }

    /// The scope a presented key grants, if any. Checks every hash, always.
    pub fn scope_of(&self, key: &str) -> Option<Scope> {
        let h = hash(key);
        let admin = self
            .admin
            .iter()
            .fold(false, |found, k| found | ct_eq(k, &h));
        let service = self
            .service
            .iter()
            .fold(false, |found, k| found | ct_eq(k, &h));
        if admin {
            Some(Scope::Admin)
        } else if service {
            Some(Scope::Service)
        } else {
            None
        }
    }

    /// The configured keys, plus a generated admin key when no admin key is
    /// configured. The generated key is returned only by the call that makes
    /// it (the caller shows it once); afterwards only its hash exists, in the
    /// database.
    pub async fn resolve(
        service: &[String],
        admin: &[String],
        store: &dyn Store,
    ) -> Result<(Keys, Option<String>), ApiError> {
        let mut keys = Keys::new(service, admin);
        if !admin.is_empty() {
            return Ok((keys, None));
        }
        match store.setting(GENERATED_ADMIN_KEY_SETTING).await? {
            Some(stored) => {
                let bytes = hex::decode(&stored).map_err(ApiError::internal)?;
                let h: Hash = bytes.try_into().map_err(|_| {
                    ApiError::internal("stored admin key hash has the wrong length")
                })?;
                keys.admin.push(h);
                Ok((keys, None))
            }
            None => {
                let key = format!("rk_admin_{}", hex::encode(rand::random::<[u8; 24]>()));
                let h = hash(&key);
                store
                    .set_setting(GENERATED_ADMIN_KEY_SETTING, &hex::encode(h))
                    .await?;
                keys.admin.push(h);
                Ok((keys, Some(key)))
            }
        }
    }
}

/// The headers a key may arrive in. As `HeaderName`s, not strings: a
/// lookup by string parses the name first, every request.
const KEY_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-admin-key"),
    HeaderName::from_static("x-api-key"),
    AUTHORIZATION,
];

/// Which key the request carries, from any of the accepted headers.
fn presented_scope(parts: &Parts, keys: &Keys) -> Result<Scope, ApiError> {
    let mut best: Option<Scope> = None;
    for name in &KEY_HEADERS {
        for value in parts.headers.get_all(name) {
            let Ok(text) = value.to_str() else { continue };
            let key = if name == AUTHORIZATION {
                match text
                    .strip_prefix("Bearer ")
                    .or_else(|| text.strip_prefix("bearer "))
                {
                    Some(k) => k.trim(),
                    None => continue,
                }
            } else {
                text.trim()
            };
            best = best.max(keys.scope_of(key));
        }
    }
    best.ok_or_else(ApiError::unauthorized)
}

/// Extractor: the caller holds at least a service key; carries which scope.
pub struct ServiceAuth(pub Scope);

impl FromRequestParts<AppState> for ServiceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        presented_scope(parts, &state.keys).map(ServiceAuth)
    }
}

/// Extractor: the caller holds the admin key.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match presented_scope(parts, &state.keys)? {
            Scope::Admin => Ok(AdminAuth),
            Scope::Service => Err(ApiError::forbidden()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let keys = Keys::new(&["svc".into()], &["adm".into()]);
        assert_eq!(keys.scope_of("svc"), Some(Scope::Service));
        assert_eq!(keys.scope_of("adm"), Some(Scope::Admin));
        assert_eq!(keys.scope_of("nope"), None);
        assert_eq!(keys.scope_of(""), None);
    }
}
