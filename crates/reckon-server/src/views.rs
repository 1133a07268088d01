//! What the native API sends back. Serialisation types live here, at the
//! boundary; core types stay free of serde.

use crate::wire::{render_time, stored_json};
use reckon_core::{AccountState, Amount, Balance, Grant, Hold, Timestamp};
use reckon_store::StoredEvent;
use serde::{Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

/// An amount as its exact decimal string ("12.5"), written straight from
/// the stack when the response is serialised (a `String` per amount was an
/// allocation, several per response).
pub struct AmountText(pub Amount);

impl Serialize for AmountText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.decimal().as_str())
    }
}

fn time(t: Option<Timestamp>) -> Option<String> {
    t.map(render_time)
}

/// Amounts are decimal strings with up to 6 decimals, exact.
#[derive(Serialize, ToSchema)]
pub struct BalanceView {
    /// Everything ever granted.
    #[schema(value_type = String, example = "50")]
    pub granted: AmountText,
    /// Everything ever consumed (usage and settled holds).
    #[schema(value_type = String, example = "12.34")]
    pub used: AmountText,
    /// Reserved by open holds.
    #[schema(value_type = String, example = "0")]
    pub held: AmountText,
    /// What may be spent now: unexpired grants minus holds.
    #[schema(value_type = String, example = "37.66")]
    pub available: AmountText,
    /// Granted value that expired unspent.
    #[schema(value_type = String, example = "0")]
    pub expired: AmountText,
}

impl From<Balance> for BalanceView {
    fn from(b: Balance) -> BalanceView {
        BalanceView {
            granted: AmountText(b.granted),
            used: AmountText(b.used),
            held: AmountText(b.held),
            available: AmountText(b.available),
            expired: AmountText(b.expired),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct GrantView {
    pub id: String,
    #[schema(value_type = String, example = "1024")]
    pub amount: AmountText,
    #[schema(value_type = String, example = "1000")]
    pub remaining: AmountText,
    /// RFC 3339; null when the grant never expires.
    pub expires_at: Option<String>,
    pub source: String,
    pub created_at: String,
}

impl From<&Grant> for GrantView {
    fn from(g: &Grant) -> GrantView {
        GrantView {
            id: g.id.to_string(),
            amount: AmountText(g.amount),
            remaining: AmountText(g.remaining),
            expires_at: time(g.expires_at),
            source: g.source.to_string(),
            created_at: render_time(g.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HoldView {
    pub id: String,
    pub account_id: String,
    /// held, settled, released or expired (as of the response).
    #[schema(example = "held")]
    pub status: &'static str,
    #[schema(value_type = String)]
    pub amount: AmountText,
    /// What the settle charged; "0" until settled.
    #[schema(value_type = String)]
    pub settled_amount: AmountText,
    pub expires_at: String,
    pub created_at: String,
    pub resolved_at: Option<String>,
}

impl HoldView {
    pub fn at(h: &Hold, now: Timestamp) -> HoldView {
        HoldView {
            id: h.id.clone(),
            account_id: h.account_id.to_string(),
            status: h.status_at(now).as_str(),
            amount: AmountText(h.amount),
            settled_amount: AmountText(h.settled_amount),
            expires_at: render_time(h.expires_at),
            created_at: render_time(h.created_at),
            resolved_at: time(h.resolved_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AccountView {
    #[schema(example = "user123")]
    pub id: String,
    #[schema(example = "credits")]
    pub unit: String,
    /// active or suspended.
    pub status: &'static str,
    pub expires_at: Option<String>,
    pub timezone: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// reject, cap or allow: what a settle above its hold does.
    pub overage_policy: &'static str,
    pub created_at: String,
    pub updated_at: String,
    pub balance: BalanceView,
    /// Grants that still count, in the order usage draws from them.
    pub grants: Vec<GrantView>,
}

impl AccountView {
    /// The account as it stands at `now`, expiries applied.
    pub fn at(state: &AccountState, now: Timestamp) -> AccountView {
        let a = &state.account;
        AccountView {
            id: a.id.to_string(),
            unit: a.unit.as_str().to_owned(),
            status: a.status.as_str(),
            expires_at: time(a.expires_at),
            timezone: a.timezone.as_deref().map(str::to_owned),
            metadata: stored_json(&a.metadata),
            overage_policy: a.overage.as_str(),
            created_at: render_time(a.created_at),
            updated_at: render_time(a.updated_at),
            balance: state.balance_at(now).into(),
            grants: state.live_grants_at(now).map(GrantView::from).collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct EventView {
    /// Position in the log; pass as `before` to page further back.
    pub seq: i64,
    pub account_id: String,
    #[schema(example = "used")]
    pub kind: &'static str,
    #[schema(value_type = String)]
    pub amount: AmountText,
    #[schema(value_type = String)]
    pub available_after: AmountText,
    pub at: String,
    pub grant_id: Option<String>,
    pub hold_id: Option<String>,
    pub idempotency_key: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<Value>,
}

impl From<&StoredEvent> for EventView {
    fn from(e: &StoredEvent) -> EventView {
        EventView {
            seq: e.seq,
            account_id: e.account_id.to_string(),
            kind: e.event.kind.as_str(),
            amount: AmountText(e.event.amount),
            available_after: AmountText(e.event.available_after),
            at: render_time(e.event.at),
            grant_id: e.event.grant_id.clone(),
            hold_id: e.event.hold_id.clone(),
            idempotency_key: e.idempotency_key.clone(),
            attributes: e.attributes.as_deref().map(stored_json),
        }
    }
}
