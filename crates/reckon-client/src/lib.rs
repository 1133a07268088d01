//! # reckon-client
//!
//! A client for Reckon's native API ([`Client`]) and, with the default
//! `metering` feature, a tower middleware that meters axum routes with holds
//! ([`metering`]): lock an estimate before the handler runs, settle the
//! real cost after it succeeds, release everything when it fails.
//!
//! ```no_run
//! # async fn demo() -> Result<(), reckon_client::Error> {
//! use reckon_client::{amount, Client};
//! let reckon = Client::new("http://127.0.0.1:8080", "service-key");
//! let hold = reckon.lock("user123", amount("5"), None, None).await?;
//! // ... do the work ...
//! reckon.settle(&hold.id, amount("3.2"), None, None).await?;
//! # Ok(()) }
//! ```

#[cfg(feature = "metering")]
pub mod metering;

pub use reckon_core::Amount;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// Parses a decimal literal into an [`Amount`]; panics on a malformed
/// literal, so use it for constants in code, not for input.
pub fn amount(text: &str) -> Amount {
    Amount::parse(text).unwrap_or_else(|e| panic!("amount literal {text:?}: {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reckon answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The request did not get an answer (connection refused, timeout).
    #[error("reckon unreachable: {0}")]
    Transport(#[from] reqwest::Error),
    /// The answer could not be read.
    #[error("unexpected answer from reckon: {0}")]
    Decode(String),
}

impl Error {
    /// The stable error code, when Reckon answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when the service could not be reached or failed internally:
    /// the request's fate is unknown, not refused.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Api { status, .. } => *status >= 500,
            Error::Transport(_) => true,
            Error::Decode(_) => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn de_amount<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Amount, D::Error> {
    let text = String::deserialize(d)?;
    Amount::parse(&text).map_err(serde::de::Error::custom)
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Balance {
    #[serde(deserialize_with = "de_amount")]
    pub granted: Amount,
    #[serde(deserialize_with = "de_amount")]
    pub used: Amount,
    #[serde(deserialize_with = "de_amount")]
    pub held: Amount,
    #[serde(deserialize_with = "de_amount")]
    pub available: Amount,
    #[serde(deserialize_with = "de_amount")]
    pub expired: Amount,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Account {
    pub id: String,
    pub unit: String,
    pub status: String,
    pub expires_at: Option<String>,
    pub balance: Balance,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Hold {
    pub id: String,
    pub account_id: String,
    /// held, settled, released or expired.
    pub status: String,
    #[serde(deserialize_with = "de_amount")]
    pub amount: Amount,
    #[serde(deserialize_with = "de_amount")]
    pub settled_amount: Amount,
    pub expires_at: String,
    /// The account's balance right after the call (absent on `GET`).
    pub balance: Option<Balance>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Check {
    pub allowed: bool,
    #[serde(deserialize_with = "de_amount")]
    pub available: Amount,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct UsageAnswer {
    balance: Balance,
}

/// What a settle above the held amount does.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Overage {
    Reject,
    Cap,
    Allow,
}

/// A handle to one Reckon server. Cheap to clone (the connection pool is shared).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    /// A client with a 10-second timeout per request.
    pub fn new(base_url: &str, api_key: &str) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a plain HTTP client builds");
        Client::with_http(http, base_url, api_key)
    }

    pub fn with_http(http: reqwest::Client, base_url: &str, api_key: &str) -> Client {
        Client {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            key: api_key.to_owned(),
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Result<T> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        if status >= 400 {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(Error::Api {
                status,
                code: v["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
                message: v["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    pub async fn account(&self, id: &str) -> Result<Account> {
        self.send(
            reqwest::Method::GET,
            &format!("/v1/accounts/{id}"),
            None,
            None,
        )
        .await
    }

    /// Creates an account (needs the admin key).
    pub async fn create_account(&self, id: &str, unit: Option<&str>) -> Result<Account> {
        let mut body = json!({ "id": id });
        if let Some(u) = unit {
            body["unit"] = json!(u);
        }
        self.send(reqwest::Method::POST, "/v1/accounts", Some(body), None)
            .await
    }

    /// Grants value (needs the admin key); returns the balance after.
    pub async fn grant(
        &self,
        id: &str,
        amount: Amount,
        valid_for_secs: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<Balance> {
        let mut body = json!({ "amount": amount.to_string() });
        if let Some(s) = valid_for_secs {
            body["valid_for_secs"] = json!(s);
        }
        let v: Value = self
            .send(
                reqwest::Method::POST,
                &format!("/v1/accounts/{id}/grants"),
                Some(body),
                idempotency_key,
            )
            .await?;
        serde_json::from_value(v["balance"].clone()).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Records usage; returns the balance after.
    pub async fn usage(
        &self,
        id: &str,
        amount: Amount,
        idempotency_key: Option<&str>,
    ) -> Result<Balance> {
        let body = json!({ "amount": amount.to_string() });
        let a: UsageAnswer = self
            .send(
                reqwest::Method::POST,
                &format!("/v1/accounts/{id}/usage"),
                Some(body),
                idempotency_key,
            )
            .await?;
        Ok(a.balance)
    }

    /// May `id` spend `amount` now? Read-only.
    pub async fn check(&self, id: &str, amount: Amount) -> Result<Check> {
        let body = json!({ "amount": amount.to_string() });
        self.send(
            reqwest::Method::POST,
            &format!("/v1/accounts/{id}/check"),
            Some(body),
            None,
        )
        .await
    }

    /// Reserves `amount` for `ttl_secs` (server default when `None`).
    pub async fn lock(
        &self,
        account_id: &str,
        amount: Amount,
        ttl_secs: Option<u64>,
        idempotency_key: Option<&str>,
    ) -> Result<Hold> {
        let mut body = json!({ "account_id": account_id, "amount": amount.to_string() });
        if let Some(t) = ttl_secs {
            body["ttl_secs"] = json!(t);
        }
        self.send(
            reqwest::Method::POST,
            "/v1/holds",
            Some(body),
            idempotency_key,
        )
        .await
    }

    /// Charges `amount` from the hold; the rest returns to the balance.
    pub async fn settle(
        &self,
        hold_id: &str,
        amount: Amount,
        overage: Option<Overage>,
        idempotency_key: Option<&str>,
    ) -> Result<Hold> {
        let mut body = json!({ "amount": amount.to_string() });
        if let Some(o) = overage {
            body["overage"] = serde_json::to_value(o).expect("an enum serialises");
        }
        self.send(
            reqwest::Method::POST,
            &format!("/v1/holds/{hold_id}/settle"),
            Some(body),
            idempotency_key,
        )
        .await
    }

    /// Returns the whole hold to the balance.
    pub async fn release(&self, hold_id: &str, idempotency_key: Option<&str>) -> Result<Hold> {
        self.send(
            reqwest::Method::POST,
            &format!("/v1/holds/{hold_id}/release"),
            Some(json!({})),
            idempotency_key,
        )
        .await
    }

    pub async fn hold(&self, hold_id: &str) -> Result<Hold> {
        self.send(
            reqwest::Method::GET,
            &format!("/v1/holds/{hold_id}"),
            None,
            None,
        )
        .await
    }
}
