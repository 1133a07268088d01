//! What callers hand the executor, and what they get back.

use reckon_core::{AccountId, Command, Event, Outcome};
use sha2::{Digest, Sha256};
use std::fmt;

/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// A client-chosen key that makes a mutating request safe to retry.
/// 1 to [`IDEMPOTENCY_KEY_BYTES_MAX`] bytes of printable ASCII.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<IdempotencyKey, &'static str> {
        if text.is_empty() {
            return Err("idempotency key must not be empty");
        }
        if text.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            return Err("idempotency key must be at most 255 bytes");
        }
        if !text.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("idempotency key must be printable ASCII without spaces");
        }
        Ok(IdempotencyKey(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One command with the request context the audit trail records.
#[derive(Clone, Debug)]
pub struct Request {
    pub command: Command,
    pub idempotency_key: Option<IdempotencyKey>,
    /// A JSON object, validated at the edge; stored with the events.
    pub attributes: Option<String>,
}

impl Request {
    pub fn new(command: Command) -> Request {
        Request {
            command,
            idempotency_key: None,
            attributes: None,
        }
    }

    pub fn account_id(&self) -> &AccountId {
        self.command.account_id()
    }

    /// What a replay must match: the command as the caller asked for it
    /// and its attributes.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.command.canonical().as_bytes());
        h.update(b"\n");
        h.update(self.attributes.as_deref().unwrap_or("").as_bytes());
        // Lowercase hex, written directly: a `format!` per byte was 32
        // allocations on the writer's thread for every keyed request.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for b in h.finalize() {
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
        out
    }
}

/// A request that executed (now, or the first time, when `replayed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    pub outcome: Outcome,
    pub replayed: bool,
}

/// An event as stored: the core's event plus where and why it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the global log; pagination cursor.
    pub seq: i64,
    pub account_id: AccountId,
    pub event: Event,
    pub idempotency_key: Option<String>,
    pub attributes: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use reckon_core::{Amount, UsageCmd};

    /// Fingerprints are stored with idempotency records, so a new build must
    /// compute the same text for the same request: lowercase hex of SHA-256
    /// over the command's canonical text (pinned for every command in
    /// reckon-core's `canonical_texts_are_a_stored_format`) and the
    /// attributes.
    #[test]
    fn fingerprint_is_the_stored_format() {
        let mut request = Request::new(Command::Usage(UsageCmd {
            account: AccountId::parse("acct-1").unwrap(),
            amount: Amount::from_micros(1_500_000).unwrap(),
        }));
        request.attributes = Some(r#"{"model":"m"}"#.into());
        let mut h = Sha256::new();
        h.update(request.command.canonical().as_bytes());
        h.update(b"\n");
        h.update(br#"{"model":"m"}"#);
        let reference: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(request.fingerprint(), reference);
        assert_eq!(reference.len(), 64);
    }
}
