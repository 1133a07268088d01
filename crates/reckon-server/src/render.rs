//! Hand-written JSON for the answers on the hot path: a balance, `usage`,
//! `check`, holds (lock, settle, release) and `/v1/batch` results.
//!
//! `serde_json` spends ~500 instructions on each `"key":"value"` pair (a
//! call per piece through `io::Write`, an escape scan of every key), so a
//! `usage` answer cost ~4,100 instructions to serialise and a batch of
//! 1,000 results ~3.8 million, a sixth of the whole request
//! (docs/performance-log.md). Here keys are literals, amounts are digits
//! that need no escaping, and other text is scanned once.
//!
//! The types keep `#[derive(Serialize)]`: their OpenAPI schemas come from
//! it, and the tests below hold both outputs byte for byte equal, so an
//! answer reads the same whichever path wrote it. A field added to one of
//! these types must be added to its `render` too, or those tests fail.

use crate::error::ErrorDetail;
use crate::views::{AmountText, BalanceView, HoldView};
use reckon_core::Amount;

/// A value that writes itself as compact JSON, exactly as `serde_json`
/// would.
pub trait Render {
    fn render(&self, out: &mut Vec<u8>);

    /// Bytes to reserve before rendering: most answers fit in this.
    fn size_hint(&self) -> usize {
        256
    }
}

/// `"text"`, escaped as `serde_json` escapes it.
pub fn text(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes control characters, `"` and `\` and writes every
    // other byte, UTF-8 included, as it is.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    }
}

/// An amount as its decimal string.
pub fn amount(out: &mut Vec<u8>, a: Amount) {
    out.push(b'"');
    out.extend_from_slice(a.decimal().as_bytes());
    out.push(b'"');
}

/// A non-negative integer in decimal.
pub fn integer(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

pub fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Anything else, through `serde_json` (views off the hot path).
pub fn serialized(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    serde_json::to_writer(&mut *out, value).expect("our views always serialise");
}

impl Render for AmountText {
    fn render(&self, out: &mut Vec<u8>) {
        amount(out, self.0)
    }
}

impl Render for BalanceView {
    fn render(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"granted\":");
        amount(out, self.granted.0);
        out.extend_from_slice(b",\"used\":");
        amount(out, self.used.0);
        out.extend_from_slice(b",\"held\":");
        amount(out, self.held.0);
        out.extend_from_slice(b",\"available\":");
        amount(out, self.available.0);
        out.extend_from_slice(b",\"expired\":");
        amount(out, self.expired.0);
        out.push(b'}');
    }
}

/// `"text"` or `null`.
pub fn optional_text(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => text(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

impl HoldView {
    /// The fields without the braces, so that a response can flatten them
    /// into its own object (`HoldResponse`).
    pub fn render_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"id\":");
        text(out, &self.id);
        out.extend_from_slice(b",\"account_id\":");
        text(out, &self.account_id);
        out.extend_from_slice(b",\"status\":");
        text(out, self.status);
        out.extend_from_slice(b",\"amount\":");
        amount(out, self.amount.0);
        out.extend_from_slice(b",\"settled_amount\":");
        amount(out, self.settled_amount.0);
        out.extend_from_slice(b",\"expires_at\":");
        text(out, &self.expires_at);
        out.extend_from_slice(b",\"created_at\":");
        text(out, &self.created_at);
        out.extend_from_slice(b",\"resolved_at\":");
        optional_text(out, self.resolved_at.as_deref());
    }
}

impl Render for HoldView {
    fn render(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        self.render_fields(out);
        out.push(b'}');
    }
}

impl Render for ErrorDetail {
    fn render(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"code\":");
        text(out, self.code);
        out.extend_from_slice(b",\"message\":");
        text(out, &self.message);
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::batch::{BatchResponse, OpResult};
    use crate::native::holds::HoldResponse;
    use crate::native::usage::{CheckResponse, UsageResponse};
    use crate::views::{GrantView, HoldView};

    fn same<T: Render + serde::Serialize>(value: &T) {
        let mut ours = Vec::new();
        value.render(&mut ours);
        let theirs = serde_json::to_vec(value).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap()
        );
    }

    fn amounts() -> impl Iterator<Item = Amount> {
        [
            0,
            1,
            10,
            500_000,
            1_000_001,
            123_456_789,
            Amount::MAX.micros(),
        ]
        .into_iter()
        .map(|m| Amount::from_micros(m).unwrap())
    }

    fn balance(a: Amount) -> BalanceView {
        BalanceView {
            granted: AmountText(Amount::MAX),
            used: AmountText(a),
            held: AmountText(Amount::ZERO),
            available: AmountText(a),
            expired: AmountText(Amount::from_micros(1).unwrap()),
        }
    }

    /// Text that needs escaping, and text that does not.
    const TEXTS: [&str; 7] = [
        "a",
        "",
        "bench-1",
        "quote \" and backslash \\",
        "tab\tnewline\ncontrol\u{1}del\u{7f}",
        "é, 日本, 🙂",
        "</script>",
    ];

    #[test]
    fn integers_as_serde_json() {
        for n in [0, 7, 10, 200, 402, 65_535, u64::MAX] {
            let mut ours = Vec::new();
            integer(&mut ours, n);
            assert_eq!(ours, serde_json::to_vec(&n).unwrap());
        }
    }

    #[test]
    fn text_escapes_as_serde_json() {
        for t in TEXTS {
            let mut ours = Vec::new();
            text(&mut ours, t);
            assert_eq!(ours, serde_json::to_vec(t).unwrap(), "{t:?}");
        }
    }

    #[test]
    fn usage_and_check_answers_match_serde() {
        for a in amounts() {
            same(&balance(a));
            for id in TEXTS {
                same(&UsageResponse {
                    account_id: id.to_owned(),
                    amount: AmountText(a),
                    balance: balance(a),
                });
            }
            for reason in [None, Some("insufficient_balance")] {
                same(&CheckResponse {
                    allowed: reason.is_none(),
                    available: AmountText(a),
                    reason,
                });
            }
        }
    }

    #[test]
    fn batch_results_match_serde() {
        let plain = |status| OpResult::bare(true, status);
        let time = || "2026-01-01T00:00:00Z".to_owned();
        let grant = GrantView {
            id: "g\"1".into(),
            amount: AmountText(Amount::MAX),
            remaining: AmountText(Amount::from_micros(4_500_000).unwrap()),
            expires_at: None,
            source: "s".into(),
            created_at: time(),
        };
        let hold = HoldView {
            id: "h1".into(),
            account_id: "a".into(),
            status: "held",
            amount: AmountText(Amount::from_micros(2).unwrap()),
            settled_amount: AmountText(Amount::ZERO),
            expires_at: time(),
            created_at: time(),
            resolved_at: Some(time()),
        };
        let results = vec![
            OpResult {
                balance: Some(balance(Amount::ZERO)),
                replayed: true,
                ..plain(200)
            },
            OpResult {
                ok: false,
                error: Some(ErrorDetail {
                    code: "insufficient_balance",
                    message: "needs \"1\"\n".into(),
                }),
                ..plain(402)
            },
            OpResult {
                allowed: Some(false),
                reason: Some("account_expired"),
                ..plain(200)
            },
            OpResult {
                grant: Some(grant),
                balance: Some(balance(Amount::MAX)),
                ..plain(201)
            },
            OpResult {
                hold: Some(hold),
                ..plain(201)
            },
            plain(200),
        ];
        for resolved_at in [None, Some(time())] {
            let hold = HoldView {
                id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
                account_id: "user@example.com".into(),
                status: "settled",
                amount: AmountText(Amount::from_micros(2_500_000).unwrap()),
                settled_amount: AmountText(Amount::from_micros(1).unwrap()),
                expires_at: time(),
                created_at: time(),
                resolved_at,
            };
            same(&hold);
            same(&HoldResponse {
                hold,
                balance: balance(Amount::MAX),
            });
        }
        for r in &results {
            same(r);
        }
        same(&BatchResponse { results });
        same(&BatchResponse {
            results: Vec::new(),
        });
    }
}
