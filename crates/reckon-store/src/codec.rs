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

fn ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.millis()))
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

pub fn encode_outcome(o: &Outcome) -> String {
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

pub fn decode_outcome(text: &str) -> Result<Outcome, StoreError> {
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
