//! Credentials: keys by which an account is named in protocols that carry a
//! key instead of an account id (nilauth-credit's `credential`).
//!
//! A *private* credential is a secret API key: only its SHA-256 is stored,
//! with an 8-character prefix for people to recognise it. A *public*
//! credential is an identifier such as a public key, stored as given.
//! Credentials are not balance state, so they are not core commands; the
//! store writes them on the writer's connection with an audit event.

use reckon_core::{AccountId, Timestamp};
use sha2::{Digest, Sha256};

/// Longest credential, in bytes.
pub const CREDENTIAL_BYTES_MAX: usize = 256;
/// Shortest private credential: a secret shorter than this is guessable.
pub const PRIVATE_CREDENTIAL_BYTES_MIN: usize = 16;
/// Characters of a private key shown to people.
const PREFIX_CHARS: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub id: String,
    pub account_id: AccountId,
    pub public: bool,
    /// The public identifier in full, or a private key's first characters.
    pub display: String,
    pub active: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A validated credential key and what the store looks it up by.
#[derive(Clone, Debug)]
pub struct CredentialKey {
    pub public: bool,
    /// `sk:<sha256 hex>` for private keys, `pk:<identifier>` for public ones.
    pub lookup: String,
    pub display: String,
}

impl CredentialKey {
    pub fn parse(key: &str, public: bool) -> Result<CredentialKey, String> {
        if key.is_empty() || key.len() > CREDENTIAL_BYTES_MAX {
            return Err(format!(
                "credential must be 1 to {CREDENTIAL_BYTES_MAX} bytes"
            ));
        }
        if !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("credential must be printable ASCII without spaces".into());
        }
        if public {
            return Ok(CredentialKey {
                public,
                lookup: format!("pk:{key}"),
                display: key.to_owned(),
            });
        }
        if key.len() < PRIVATE_CREDENTIAL_BYTES_MIN {
            return Err(format!(
                "a private credential must be at least {PRIVATE_CREDENTIAL_BYTES_MIN} bytes"
            ));
        }
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let prefix: String = key.chars().take(PREFIX_CHARS).collect();
        Ok(CredentialKey {
            public,
            lookup: format!("sk:{hex}"),
            display: format!("{prefix}..."),
        })
    }
}

/// Why a credential could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialRefusal {
    AccountNotFound,
    /// The key already names another account.
    KeyInUse,
}

/// A credential's id, derived from its lookup so that adding the same key
/// twice names the same credential. It reveals nothing a lookup does not:
/// for private keys the lookup is already a hash.
pub fn credential_id(key: &CredentialKey) -> String {
    let digest = Sha256::digest(key.lookup.as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("cred_{hex}")
}
