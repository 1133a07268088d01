//! Encodings of core values inside database columns: a stored outcome (for
//! idempotent replay) and a hold's allocations. Backend-neutral text, so
//! SQLite and PostgreSQL store the same bytes.

use crate::error::StoreError;
use reckon_core::{
    Account, AccountId, AccountStatus, Allocation, Amount, Balance, Grant, Hold, HoldStatus,
    Outcome, OveragePolicy, Timestamp, Unit,
};
use serde_json::{json, Map, Value};
use std::sync::Arc;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("stored outcome: bad {what}"))
}

pub fn amount(micros: i64) -> Result<Amount, StoreError> {
    Amount::from_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("amount {micros} out of range")))
}

pub fn account_id(text: &str) -> Result<AccountId, StoreError> {
    AccountId::parse(text).map_err(|e| StoreError::Corrupt(format!("account id {text:?}: {e}")))
}

/// `grant_id=micros;grant_id=micros`. Grant ids never contain `=` or `;`
/// (they are UUIDs or validated ids).
pub fn encode_allocations(allocations: &[Allocation]) -> String {
    let parts: Vec<String> = allocations
        .iter()
        .map(|a| format!("{}={}", a.grant_id, a.amount.micros()))
        .collect();
    parts.join(";")
}

pub fn decode_allocations(text: &str) -> Result<Vec<Allocation>, StoreError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(';')
        .map(|part| {
            let (grant_id, micros) = part.split_once('=').ok_or_else(|| corrupt("allocation"))?;
            let micros: i64 = micros.parse().map_err(|_| corrupt("allocation amount"))?;
            Ok(Allocation {
                grant_id: Arc::from(grant_id),
                amount: amount(micros)?,
            })
        })
        .collect()
}

/// A live grant list as one column: a line per grant, tab-separated
/// `id seq amount remaining expires_at|- created_at source`. Ids are UUIDs
/// or validated ids and `source` refuses control characters at the edge,
/// so neither can hold a tab or newline.
pub fn encode_grants(grants: &[Grant]) -> String {
    // Written in place, numbers with `itoa`: a `format!` per grant cost an
    // allocation or two per account write, and `fmt` machinery ~600
    // instructions per grant, on the writer's thread.
    let mut out = String::with_capacity(grants.len() * 96);
    let mut digits = itoa::Buffer::new();
    for (i, g) in grants.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&g.id);
        out.push('\t');
        out.push_str(digits.format(g.seq));
        for n in [g.amount.micros(), g.remaining.micros()] {
            out.push('\t');
            out.push_str(digits.format(n));
        }
        out.push('\t');
        match g.expires_at {
            Some(t) => out.push_str(digits.format(t.millis())),
            None => out.push('-'),
        }
        out.push('\t');
        out.push_str(digits.format(g.created_at.millis()));
        out.push('\t');
        out.push_str(&g.source);
    }
    out
}

pub fn decode_grants(text: &str) -> Result<Vec<Grant>, StoreError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split('\n')
        .map(|line| {
            let f: Vec<&str> = line.splitn(7, '\t').collect();
            let [id, seq, amt, rem, expires, created, source] = f[..] else {
                return Err(corrupt("grant line"));
            };
            let int = |v: &str| v.parse::<i64>().map_err(|_| corrupt("grant number"));
            Ok(Grant {
                id: Arc::from(id),
                seq: int(seq)? as u64,
                amount: amount(int(amt)?)?,
                remaining: amount(int(rem)?)?,
                expires_at: if expires == "-" {
                    None
                } else {
                    Some(Timestamp::from_millis(int(expires)?))
                },
                created_at: Timestamp::from_millis(int(created)?),
                source: Arc::from(source),
            })
        })
        .collect()
}

fn get<'a>(v: &'a Value, field: &str) -> Result<&'a Value, StoreError> {
    v.get(field).ok_or_else(|| corrupt(field))
}

fn get_i64(v: &Value, field: &str) -> Result<i64, StoreError> {
    get(v, field)?.as_i64().ok_or_else(|| corrupt(field))
}

fn get_str<'a>(v: &'a Value, field: &str) -> Result<&'a str, StoreError> {
    get(v, field)?.as_str().ok_or_else(|| corrupt(field))
}

fn get_ts(v: &Value, field: &str) -> Result<Option<Timestamp>, StoreError> {
    match get(v, field)? {
        Value::Null => Ok(None),
        x => x
            .as_i64()
            .map(|ms| Some(Timestamp::from_millis(ms)))
            .ok_or_else(|| corrupt(field)),
    }
}

fn get_amount(v: &Value, field: &str) -> Result<Amount, StoreError> {
    amount(get_i64(v, field)?)
}

/// An outcome as stored for idempotent replay: only what a replayed answer
/// is built from (the balance, and the grant or hold the command made or
/// resolved), one tab-separated line each, numbers as integers:
///
/// ```text
/// 2 granted used held available expired
/// g <the grant, as encode_grants writes it>
/// h id amount status expires_at allocations settled_amount created_at resolved_at|-
/// ```
///
/// The account is left out: it was ~270 of a record's ~360 bytes (metadata
/// can be far more), and no answer renders more of it than its id, which
/// the record is keyed by. [`decode_outcome`] takes the account as it is
/// now, and reads [`encode_json_outcome`]'s format too. SQLite writes this
/// one; PostgreSQL still the JSON (see there).
pub fn encode_outcome(o: &Outcome) -> String {
    let mut out = String::with_capacity(128);
    let mut digits = itoa::Buffer::new();
    let b = &o.balance;
    out.push_str(OUTCOME_FORMAT);
    for n in [b.granted, b.used, b.held, b.available, b.expired] {
        out.push('\t');
        out.push_str(digits.format(n.micros()));
    }
    if let Some(g) = &o.grant {
        out.push_str("\ng\t");
        out.push_str(&encode_grants(std::slice::from_ref(g)));
    }
    if let Some(h) = &o.hold {
        out.push_str("\nh\t");
        out.push_str(&h.id);
        out.push('\t');
        out.push_str(digits.format(h.amount.micros()));
        out.push('\t');
        out.push_str(h.status.as_str());
        out.push('\t');
        out.push_str(digits.format(h.expires_at.millis()));
        out.push('\t');
        out.push_str(&encode_allocations(&h.allocations));
        out.push('\t');
        out.push_str(digits.format(h.settled_amount.micros()));
        out.push('\t');
        out.push_str(digits.format(h.created_at.millis()));
        out.push('\t');
        match h.resolved_at {
            Some(t) => out.push_str(digits.format(t.millis())),
            None => out.push('-'),
        }
    }
    out
}

/// The first field of an outcome in [`encode_outcome`]'s format.
const OUTCOME_FORMAT: &str = "2";

/// Reads a stored outcome; `account` is the account as it is now (see
/// [`encode_outcome`]), used where the record does not carry it.
pub fn decode_outcome(text: &str, account: &Account) -> Result<Outcome, StoreError> {
    if text.starts_with('{') {
        return decode_json_outcome(text);
    }
    let mut lines = text.split('\n');
    let first: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
    let [OUTCOME_FORMAT, granted, used, held, available, expired] = first[..] else {
        return Err(corrupt("balance line"));
    };
    let int = |v: &str| v.parse::<i64>().map_err(|_| corrupt("outcome number"));
    let balance = Balance {
        granted: amount(int(granted)?)?,
        used: amount(int(used)?)?,
        held: amount(int(held)?)?,
        available: amount(int(available)?)?,
        expired: amount(int(expired)?)?,
    };
    let (mut grant, mut hold) = (None, None);
    for line in lines {
        if let Some(g) = line.strip_prefix("g\t") {
            grant = decode_grants(g)?.pop();
        } else if let Some(h) = line.strip_prefix("h\t") {
            let f: Vec<&str> = h.split('\t').collect();
            let [id, amt, status, expires, allocations, settled, created, resolved] = f[..] else {
                return Err(corrupt("hold line"));
            };
            hold = Some(Hold {
                id: id.to_owned(),
                account_id: account.id.clone(),
                amount: amount(int(amt)?)?,
                status: HoldStatus::parse(status).ok_or_else(|| corrupt("hold status"))?,
                expires_at: Timestamp::from_millis(int(expires)?),
                allocations: decode_allocations(allocations)?,
                settled_amount: amount(int(settled)?)?,
                created_at: Timestamp::from_millis(int(created)?),
                resolved_at: match resolved {
                    "-" => None,
                    t => Some(Timestamp::from_millis(int(t)?)),
                },
            });
        } else {
            return Err(corrupt("outcome line"));
        }
    }
    // Checks are never stored: they carry no idempotency key.
    Ok(Outcome {
        account: account.clone(),
        balance,
        grant,
        hold,
        check: None,
    })
}

/// An outcome as JSON, the account included: the format before
/// [`encode_outcome`]'s. PostgreSQL still writes it, because its nodes are
/// upgraded one at a time: a record one node writes may be replayed by a
/// node of the previous release, which reads only this. It can switch to
/// [`encode_outcome`] one release after every node reads both.
pub fn encode_json_outcome(o: &Outcome) -> String {
    let ts = |t: Option<Timestamp>| t.map_or(Value::Null, |t| json!(t.millis()));
    let a = &o.account;
    let mut m = Map::new();
    m.insert(
        "account".into(),
        json!({
            "id": a.id.as_str(), "unit": a.unit.as_str(), "status": a.status.as_str(),
            "expires_at": ts(a.expires_at), "timezone": a.timezone.as_deref(), "metadata": &*a.metadata,
            "overage": a.overage.as_str(), "created_at": a.created_at.millis(), "updated_at": a.updated_at.millis(),
        }),
    );
    let b = &o.balance;
    m.insert(
        "balance".into(),
        json!({
            "granted": b.granted.micros(), "used": b.used.micros(), "held": b.held.micros(),
            "available": b.available.micros(), "expired": b.expired.micros(),
        }),
    );
    if let Some(g) = &o.grant {
        m.insert(
            "grant".into(),
            json!({
                "id": &*g.id, "seq": g.seq, "amount": g.amount.micros(), "remaining": g.remaining.micros(),
                "expires_at": ts(g.expires_at), "source": &*g.source, "created_at": g.created_at.millis(),
            }),
        );
    }
    if let Some(h) = &o.hold {
        m.insert(
            "hold".into(),
            json!({
                "id": h.id, "account_id": h.account_id.as_str(), "amount": h.amount.micros(), "status": h.status.as_str(),
                "expires_at": h.expires_at.millis(), "allocations": encode_allocations(&h.allocations),
                "settled_amount": h.settled_amount.micros(), "created_at": h.created_at.millis(),
                "resolved_at": ts(h.resolved_at),
            }),
        );
    }
    Value::Object(m).to_string()
}

/// Reads [`encode_json_outcome`]'s format, the account as it was stored.
fn decode_json_outcome(text: &str) -> Result<Outcome, StoreError> {
    let v: Value = serde_json::from_str(text).map_err(|_| corrupt("json"))?;
    let a = get(&v, "account")?;
    let account = Account {
        id: account_id(get_str(a, "id")?)?,
        unit: Unit::parse(get_str(a, "unit")?).map_err(|_| corrupt("unit"))?,
        status: AccountStatus::parse(get_str(a, "status")?).ok_or_else(|| corrupt("status"))?,
        expires_at: get_ts(a, "expires_at")?,
        timezone: get(a, "timezone")?.as_str().map(Arc::from),
        metadata: Arc::from(get_str(a, "metadata")?),
        overage: OveragePolicy::parse(get_str(a, "overage")?).ok_or_else(|| corrupt("overage"))?,
        created_at: Timestamp::from_millis(get_i64(a, "created_at")?),
        updated_at: Timestamp::from_millis(get_i64(a, "updated_at")?),
    };
    let b = get(&v, "balance")?;
    let balance = Balance {
        granted: get_amount(b, "granted")?,
        used: get_amount(b, "used")?,
        held: get_amount(b, "held")?,
        available: get_amount(b, "available")?,
        expired: get_amount(b, "expired")?,
    };
    let grant = match v.get("grant") {
        None => None,
        Some(g) => Some(Grant {
            id: Arc::from(get_str(g, "id")?),
            seq: get_i64(g, "seq")? as u64,
            amount: get_amount(g, "amount")?,
            remaining: get_amount(g, "remaining")?,
            expires_at: get_ts(g, "expires_at")?,
            source: Arc::from(get_str(g, "source")?),
            created_at: Timestamp::from_millis(get_i64(g, "created_at")?),
        }),
    };
    let hold = match v.get("hold") {
        None => None,
        Some(h) => Some(Hold {
            id: get_str(h, "id")?.to_owned(),
            account_id: account_id(get_str(h, "account_id")?)?,
            amount: get_amount(h, "amount")?,
            status: HoldStatus::parse(get_str(h, "status")?)
                .ok_or_else(|| corrupt("hold status"))?,
            expires_at: Timestamp::from_millis(get_i64(h, "expires_at")?),
            allocations: decode_allocations(get_str(h, "allocations")?)?,
            settled_amount: get_amount(h, "settled_amount")?,
            created_at: Timestamp::from_millis(get_i64(h, "created_at")?),
            resolved_at: get_ts(h, "resolved_at")?,
        }),
    };
    // Checks are never stored: they carry no idempotency key.
    Ok(Outcome {
        account,
        balance,
        grant,
        hold,
        check: None,
    })
}

/// The SQL condition for holds in `status` as seen at the instant bound to
/// parameter `now` (`?2` in SQLite, `$2` in PostgreSQL): a 'held' row past
/// its expiry counts as expired.
pub fn hold_status_filter(status: Option<reckon_core::HoldStatus>, now: &str) -> String {
    use reckon_core::HoldStatus;
    match status {
        None => "TRUE".to_owned(),
        Some(HoldStatus::Held) => format!("status = 'held' AND expires_at > {now}"),
        Some(HoldStatus::Expired) => {
            format!("(status = 'expired' OR (status = 'held' AND expires_at <= {now}))")
        }
        Some(HoldStatus::Settled) => "status = 'settled'".to_owned(),
        Some(HoldStatus::Released) => "status = 'released'".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            id: AccountId::parse("acct-1").unwrap(),
            unit: Unit::parse("credits").unwrap(),
            status: AccountStatus::Active,
            expires_at: None,
            timezone: None,
            metadata: Arc::from(r#"{"plan":"pro"}"#),
            overage: OveragePolicy::Reject,
            created_at: Timestamp::from_millis(1_700_000_000_000),
            updated_at: Timestamp::from_millis(1_700_000_000_500),
        }
    }

    fn micros(n: i64) -> Amount {
        Amount::from_micros(n).unwrap()
    }

    /// A hold's draw from two grants: 0.4 from g-1, 0.6 from g-2.
    fn two_allocations() -> Vec<Allocation> {
        vec![
            Allocation {
                grant_id: "g-1".into(),
                amount: micros(400_000),
            },
            Allocation {
                grant_id: "g-2".into(),
                amount: micros(600_000),
            },
        ]
    }

    #[test]
    fn outcomes_round_trip_without_the_account() {
        let balance = Balance {
            granted: micros(10_000_000),
            used: micros(2_500_000),
            held: micros(1_000_000),
            available: micros(6_500_000),
            expired: micros(0),
        };
        let grant = Grant {
            id: "g-1".into(),
            seq: 3,
            amount: micros(10_000_000),
            remaining: micros(9_000_000),
            expires_at: Some(Timestamp::from_millis(1_800_000_000_000)),
            source: "bundle; 50% off".into(),
            created_at: Timestamp::from_millis(1_700_000_000_100),
        };
        let hold = |resolved: Option<i64>| Hold {
            id: "0190b3c4-0000-7000-8000-000000000001".into(),
            account_id: account().id,
            amount: micros(1_000_000),
            status: if resolved.is_some() {
                HoldStatus::Settled
            } else {
                HoldStatus::Held
            },
            expires_at: Timestamp::from_millis(1_700_000_060_000),
            allocations: two_allocations(),
            settled_amount: micros(resolved.map_or(0, |_| 700_000)),
            created_at: Timestamp::from_millis(1_700_000_000_200),
            resolved_at: resolved.map(Timestamp::from_millis),
        };
        let outcomes = [
            Outcome {
                account: account(),
                balance,
                grant: None,
                hold: None,
                check: None,
            },
            Outcome {
                account: account(),
                balance,
                grant: Some(grant),
                hold: None,
                check: None,
            },
            Outcome {
                account: account(),
                balance,
                grant: None,
                hold: Some(hold(None)),
                check: None,
            },
            Outcome {
                account: account(),
                balance,
                grant: None,
                hold: Some(hold(Some(1_700_000_001_000))),
                check: None,
            },
        ];
        for o in outcomes {
            let json = encode_json_outcome(&o);
            assert_eq!(decode_outcome(&json, &account()).unwrap(), o, "{json}");
            let text = encode_outcome(&o);
            assert!(!text.contains("pro"), "the account is not stored: {text}");
            assert_eq!(decode_outcome(&text, &account()).unwrap(), o, "{text}");
        }
        assert!(decode_outcome("2\t1\t2", &account()).is_err());
        assert!(decode_outcome("2\t1\t2\t3\t4\t5\nx\ty", &account()).is_err());
    }

    /// Outcomes are stored with idempotency records and decoded when a
    /// retry is answered, so texts an old build wrote must still decode to
    /// the same answer (and a new build must write them the same way).
    #[test]
    fn text_outcomes_are_a_stored_format() {
        let balance = Balance {
            granted: micros(10_000_000),
            used: micros(2_500_000),
            held: micros(0),
            available: micros(7_500_000),
            expired: micros(0),
        };
        let settled = Outcome {
            account: account(),
            balance,
            grant: None,
            hold: Some(Hold {
                id: "0190b3c4-0000-7000-8000-000000000001".into(),
                account_id: account().id,
                amount: micros(1_000_000),
                status: HoldStatus::Settled,
                expires_at: Timestamp::from_millis(1_700_000_060_000),
                allocations: vec![],
                settled_amount: micros(700_000),
                created_at: Timestamp::from_millis(1_700_000_000_200),
                resolved_at: Some(Timestamp::from_millis(1_700_000_001_000)),
            }),
            check: None,
        };
        let text = "2\t10000000\t2500000\t0\t7500000\t0\n\
                    h\t0190b3c4-0000-7000-8000-000000000001\t1000000\tsettled\t1700000060000\t\t700000\t1700000000200\t1700000001000";
        assert_eq!(encode_outcome(&settled), text);
        assert_eq!(decode_outcome(text, &account()).unwrap(), settled);

        let usage = Outcome {
            hold: None,
            ..settled
        };
        let text = "2\t10000000\t2500000\t0\t7500000\t0";
        assert_eq!(encode_outcome(&usage), text);
        assert_eq!(decode_outcome(text, &account()).unwrap(), usage);
    }

    /// JSON records (PostgreSQL's, and SQLite's before the compact format)
    /// decode with the account they carry, as it was stored.
    #[test]
    fn json_outcomes_still_decode() {
        let text = r#"{"account":{"id":"acct-1","unit":"credits","status":"active","expires_at":null,"timezone":null,"metadata":"{}","overage":"reject","created_at":1700000000000,"updated_at":1700000000001},"balance":{"granted":5000000,"used":1000000,"held":0,"available":4000000,"expired":0}}"#;
        let now = account();
        let o = decode_outcome(text, &now).unwrap();
        assert_eq!(o.balance.available, micros(4_000_000));
        assert_eq!(o.account.metadata.as_ref(), "{}");
        assert_eq!(
            o.account.updated_at,
            Timestamp::from_millis(1_700_000_000_001)
        );
        assert_eq!((o.grant, o.hold), (None, None));
    }

    /// Grants and allocations are stored in these texts (in account rows and
    /// holds), so a new build must read what an old one wrote: a change to
    /// either side alone would fail here, not in a round trip.
    #[test]
    fn grants_and_allocations_are_a_stored_format() {
        let grant = Grant {
            id: "0190b3c4-0000-7000-8000-00000000000a".into(),
            seq: 2,
            amount: micros(50_000_000),
            remaining: micros(37_660_000),
            expires_at: Some(Timestamp::from_millis(1_702_592_000_000)),
            source: "monthly".into(),
            created_at: Timestamp::from_millis(1_700_000_000_000),
        };
        let never = Grant {
            id: "g-2".into(),
            seq: 3,
            expires_at: None,
            source: "".into(),
            ..grant.clone()
        };
        let grants = vec![grant, never];
        let text = "0190b3c4-0000-7000-8000-00000000000a\t2\t50000000\t37660000\t1702592000000\t1700000000000\tmonthly\n\
                    g-2\t3\t50000000\t37660000\t-\t1700000000000\t";
        assert_eq!(encode_grants(&grants), text);
        assert_eq!(decode_grants(text).unwrap(), grants);

        let allocations = two_allocations();
        let text = "g-1=400000;g-2=600000";
        assert_eq!(encode_allocations(&allocations), text);
        assert_eq!(decode_allocations(text).unwrap(), allocations);
        assert_eq!(decode_allocations("").unwrap(), vec![]);
    }

    #[test]
    fn grants_round_trip() {
        let g = |id: &str, expires: Option<i64>, source: &str| Grant {
            id: id.into(),
            seq: 7,
            amount: Amount::from_micros(1_500_000).unwrap(),
            remaining: Amount::from_micros(1).unwrap(),
            expires_at: expires.map(Timestamp::from_millis),
            source: source.into(),
            created_at: Timestamp::from_millis(1_700_000_000_000),
        };
        let grants = vec![
            g("a-1", None, "manual"),
            g("b-2", Some(42), "top up, monthly; 50% off"),
        ];
        assert_eq!(decode_grants(&encode_grants(&grants)).unwrap(), grants);
        assert_eq!(decode_grants("").unwrap(), vec![]);
        assert!(decode_grants("x\ty").is_err());
    }
}
