//! Compact copies of committed account states: the writer cache's second
//! tier (see `cache.rs`). Its encoding, with every text inline, is also how
//! the account log stores a state ([`encode_stored`]).
//!
//! At a million accounts most of a batch's accounts are not among the
//! decoded states the cache can afford (~1.2 KB each), and loading one from
//! SQLite costs two random reads: its newest row in the account log and its
//! open holds (over a third of the writer's time, `perf`, 2026-12-04). The
//! same state as bytes takes ~80 (see "The encoding" below), so the states
//! that do not fit in the decoded tier are kept here, and a miss there
//! decodes from here.
//!
//! - Only states without open holds are kept: holds live in their own
//!   table, so an account with open holds is loaded from SQLite (its entry
//!   here is removed when it opens one).
//! - Entries lie back to back in one arena, found by a 64-bit hash of the
//!   account id. An entry starts with its id, which a lookup compares, so a
//!   hash collision is only a miss. The arena is allocated once at its full
//!   size; pages it has not touched cost no memory.
//! - A changed state is written over its old entry when it fits (most
//!   changes only change numbers, and each entry has a few bytes of slack),
//!   else appended, and the old entry becomes garbage. When the arena is
//!   full (or holds [`ENTRIES_MAX`] entries), accounts not in it are not
//!   added; once a quarter of it is garbage, it starts over.
//! - The cache clears this tier whenever it clears the decoded one.

use super::cache::{Cached, ChainHeads};
use crate::executor::IdMap;
use reckon_core::{
    Account, AccountId, AccountState, AccountStatus, Amount, Grant, OveragePolicy, Timestamp,
    Totals, Unit,
};
use std::hash::BuildHasher;
use std::sync::Arc;

/// Bytes of the arena. ~85 bytes per account with one grant (the bench's
/// accounts, slack included), so ~1.5 million accounts, within the
/// server's memory target with a million on file (README, performance
/// table).
pub const COMPACT_BYTES_MAX: usize = 128 << 20;
/// States whose encoding is longer (large metadata, many grants) are not
/// kept: they would take the room of many ordinary ones.
const ENTRY_BYTES_MAX: usize = 1024;
/// Room after each appended entry, so a change that lengthens a number by a
/// byte or two still fits in place.
const ENTRY_SLACK_BYTES: usize = 8;
/// Most entries, whatever their size: the index's table then never grows
/// past 2^21 slots (~34 MB; a `hashbrown` table holds 7/8 of its slots),
/// so the tier's memory is bounded however small the states are.
const ENTRIES_MAX: usize = (1 << 21) / 8 * 7;
/// The smallest entry is over this (id, flags, times, slack), which bounds
/// a small arena's entries below [`ENTRIES_MAX`].
const ENTRY_BYTES_MIN: usize = 16;

#[derive(Clone, Copy)]
struct Slot {
    offset: u32,
    len: u32,
}

pub struct Compact {
    bytes_max: usize,
    entries_max: usize,
    index: IdMap<u64, Slot>,
    hasher: foldhash::fast::RandomState,
    arena: Vec<u8>,
    /// Bytes of the arena no slot points to.
    garbage: usize,
    strings: Strings,
    /// Reused to encode each state before it is placed.
    scratch: Vec<u8>,
}

impl Compact {
    /// An empty tier of at most `bytes_max` bytes (0 keeps nothing).
    /// `u32` offsets address the arena, so it is capped below 4 GiB.
    pub fn new(bytes_max: usize) -> Compact {
        Compact {
            bytes_max: bytes_max.min(u32::MAX as usize),
            entries_max: ENTRIES_MAX.min(bytes_max / ENTRY_BYTES_MIN),
            index: IdMap::default(),
            hasher: Default::default(),
            arena: Vec::new(),
            garbage: 0,
            strings: Strings::default(),
            scratch: Vec::new(),
        }
    }

    pub fn clear(&mut self) {
        self.index.clear();
        self.arena.clear();
        self.garbage = 0;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    fn key(&self, id: &AccountId) -> u64 {
        self.hasher.hash_one(id.as_str())
    }

    /// The state kept for `id`, decoded, if any.
    pub fn get(&self, id: &AccountId) -> Option<Cached> {
        let slot = self.index.get(&self.key(id))?;
        let start = slot.offset as usize;
        let bytes = &self.arena[start..start + slot.len as usize];
        let decoded = decode(bytes, id, &self.strings);
        // Ours, written by `encode`: only a bug makes it unreadable, and a
        // miss (the state read from SQLite) is always correct.
        debug_assert!(
            decoded.is_some() || !bytes.starts_with(&encoded_id(id)),
            "compact entry of {id} does not decode"
        );
        decoded
    }

    /// Whether an entry for `id` may be kept. Compares hashes only, so
    /// another account's entry can answer `true`: the caller then skips an
    /// account it could have added, never keeps a wrong one.
    pub fn may_hold(&self, id: &AccountId) -> bool {
        self.index.contains_key(&self.key(id))
    }

    /// Room for one more entry of any size without starting over (which
    /// [`Compact::put`] does once a quarter of a full arena is garbage).
    pub fn has_room(&self) -> bool {
        self.index.len() < self.entries_max
            && self.arena.len() + ENTRY_BYTES_MAX + ENTRY_SLACK_BYTES <= self.bytes_max
    }

    /// Keeps `state` (committed, the heads of its chains `heads`) in place
    /// of what was kept for its account, or forgets the account if it
    /// cannot be kept.
    pub fn put(&mut self, state: &AccountState, heads: ChainHeads) {
        if self.bytes_max == 0 {
            return;
        }
        let key = self.key(&state.account.id);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let keep = state.holds.is_empty() && {
            encode(state, heads, &mut self.strings, &mut scratch);
            scratch.len() <= ENTRY_BYTES_MAX
        };
        self.place(key, keep.then_some(&scratch[..]));
        self.scratch = scratch;
    }

    fn place(&mut self, key: u64, entry: Option<&[u8]>) {
        if let Some(slot) = self.index.get(&key).copied() {
            let start = slot.offset as usize;
            if let Some(entry) = entry.filter(|e| e.len() <= slot.len as usize) {
                self.arena[start..start + entry.len()].copy_from_slice(entry);
                return;
            }
            self.index.remove(&key);
            self.garbage += slot.len as usize;
        }
        let Some(entry) = entry else { return };
        if self.index.len() >= self.entries_max {
            return; // as a full arena, below
        }
        let len = entry.len() + ENTRY_SLACK_BYTES;
        if self.arena.len() + len > self.bytes_max {
            if self.garbage * 4 < self.bytes_max {
                return; // full of live entries: this account is not kept
            }
            self.clear();
        }
        if self.arena.capacity() == 0 {
            self.arena.reserve_exact(self.bytes_max);
            // Only the table's control bytes are written now; its slots
            // cost memory as they fill.
            self.index.reserve(self.entries_max);
        }
        let offset = self.arena.len();
        self.arena.extend_from_slice(entry);
        self.arena.resize(offset + len, 0);
        self.index.insert(
            key,
            Slot {
                offset: offset as u32,
                len: len as u32,
            },
        );
    }
}

// The encoding. Integers are LEB128 varints: signed ones zig-zagged, and
// times after the first as differences (wrapping, so any two round-trip):
// an account's `updated_at` from its `created_at`, a grant's `created_at`
// from its account's, its `expires_at` from its own `created_at`. Amounts
// that are whole units (most) are written in units. Strings are "texts"
// (`put_text`), except the id, which comes first, as its length and bytes.
// Fields in order: id, flags, unit, [expires_at], created_at, updated_at,
// granted, used, expired, next_grant_seq, [heads.event], [heads.hold], [timezone],
// metadata, then the grants: their count, and each one's id, seq, amount,
// remaining, created_at, a 0/1 byte and [expires_at], source. With one
// grant and an id of a dozen bytes, that is ~75 bytes.

const HAS_EXPIRY: u8 = 1;
const HAS_TIMEZONE: u8 = 2;
const HAS_LAST_EVENT: u8 = 4;
const SUSPENDED: u8 = 8;
const OVERAGE_SHIFT: u8 = 4;
const OVERAGE_MASK: u8 = 3;
/// Never set in the stored form, whose rows keep the heads in columns.
const HAS_LAST_HOLD: u8 = 64;

/// Distinct strings [`Strings`] keeps; later ones are written inline.
const STRINGS_MAX: usize = 4_096;
/// Longer strings are always written inline.
const STRING_INTERNED_BYTES_MAX: usize = 64;

/// Text tags: a string written inline, a UUID as 16 bytes (grant ids the
/// server generates), or (tag - 2) the index of a string in [`Strings`].
const TEXT_INLINE: u64 = 0;
const TEXT_UUID: u64 = 1;
const TEXT_INTERNED: u64 = 2;

/// Strings many accounts share (units, grant sources, metadata such as
/// `{}`), each kept once: an entry names them by index, and decoding one
/// clones an `Arc` instead of allocating. Never cleared (it is small and
/// bounded), so indexes stay valid across [`Compact::clear`].
#[derive(Default)]
struct Strings {
    all: Vec<Arc<str>>,
    index: IdMap<Arc<str>, u64>,
}

impl Strings {
    fn index_of(&mut self, s: &Arc<str>) -> Option<u64> {
        if let Some(&i) = self.index.get(&**s) {
            return Some(i);
        }
        if s.len() > STRING_INTERNED_BYTES_MAX || self.all.len() >= STRINGS_MAX {
            return None;
        }
        let i = self.all.len() as u64;
        self.all.push(s.clone());
        self.index.insert(s.clone(), i);
        Some(i)
    }
}

fn put_u(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i(out: &mut Vec<u8>, v: i64) {
    put_u(out, ((v << 1) ^ (v >> 63)) as u64);
}

const MICROS_PER_UNIT: u64 = 1_000_000;

/// Amounts are never negative. The low bit says whether the rest counts
/// whole units or micros (amounts stay under 2^60 micros, so no overflow).
fn put_amount(out: &mut Vec<u8>, a: Amount) {
    let m = a.micros() as u64;
    if m.is_multiple_of(MICROS_PER_UNIT) {
        put_u(out, m / MICROS_PER_UNIT * 2 + 1);
    } else {
        put_u(out, m * 2);
    }
}

fn put_time_after(out: &mut Vec<u8>, t: Timestamp, base: Timestamp) {
    put_i(out, t.millis().wrapping_sub(base.millis()));
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_text(out: &mut Vec<u8>, s: &Arc<str>, strings: Option<&mut Strings>) {
    if let Some(i) = strings.and_then(|strings| strings.index_of(s)) {
        put_u(out, TEXT_INTERNED + i);
    } else if let Some(uuid) = uuid_bytes(s) {
        put_u(out, TEXT_UUID);
        out.extend_from_slice(&uuid);
    } else {
        put_u(out, TEXT_INLINE);
        put_str(out, s);
    }
}

const UUID_TEXT_BYTES: usize = 36;
const UUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];
const HEX: &[u8; 16] = b"0123456789abcdef";

/// The 16 bytes of a UUID written exactly as [`uuid_text`] writes one
/// (lowercase, hyphenated), so the text round-trips; else `None`.
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let s = s.as_bytes();
    if s.len() != UUID_TEXT_BYTES {
        return None;
    }
    let mut out = [0u8; 16];
    let mut digits = 0;
    for (i, &c) in s.iter().enumerate() {
        if UUID_HYPHENS.contains(&i) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        // Lowercase only: what `uuid_text` writes back.
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        out[digits / 2] |= v << (4 * (1 - digits % 2));
        digits += 1;
    }
    Some(out)
}

/// Written on the stack and copied once into the `Arc` (a `String` first
/// cost a second allocation per decoded grant).
fn uuid_text(bytes: &[u8]) -> Arc<str> {
    let mut text = [0u8; UUID_TEXT_BYTES];
    let mut at = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text[at] = b'-';
            at += 1;
        }
        text[at] = HEX[usize::from(b >> 4)];
        text[at + 1] = HEX[usize::from(b & 15)];
        at += 2;
    }
    Arc::from(std::str::from_utf8(&text).expect("hex digits and hyphens"))
}

fn encoded_id(id: &AccountId) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, id.as_str());
    out
}

fn encode(state: &AccountState, heads: ChainHeads, strings: &mut Strings, out: &mut Vec<u8>) {
    put_str(out, state.account.id.as_str());
    encode_body(state, heads, Some(strings), out);
}

/// Everything after the id; texts inline when `strings` is `None`.
fn encode_body(
    state: &AccountState,
    heads: ChainHeads,
    mut strings: Option<&mut Strings>,
    out: &mut Vec<u8>,
) {
    let a = &state.account;
    let overage = match a.overage {
        OveragePolicy::Reject => 0,
        OveragePolicy::Cap => 1,
        OveragePolicy::Allow => 2,
    };
    let flags = (a.expires_at.is_some() as u8 * HAS_EXPIRY)
        | (a.timezone.is_some() as u8 * HAS_TIMEZONE)
        | (heads.event.is_some() as u8 * HAS_LAST_EVENT)
        | (heads.hold.is_some() as u8 * HAS_LAST_HOLD)
        | ((a.status == AccountStatus::Suspended) as u8 * SUSPENDED)
        | (overage << OVERAGE_SHIFT);
    out.push(flags);
    put_text(out, a.unit.as_arc(), strings.as_deref_mut());
    if let Some(t) = a.expires_at {
        put_i(out, t.millis());
    }
    put_i(out, a.created_at.millis());
    put_time_after(out, a.updated_at, a.created_at);
    let t = &state.totals;
    for n in [t.granted, t.used, t.expired] {
        put_amount(out, n);
    }
    put_u(out, state.next_grant_seq);
    for head in [heads.event, heads.hold].into_iter().flatten() {
        put_i(out, head);
    }
    if let Some(tz) = &a.timezone {
        put_text(out, tz, strings.as_deref_mut());
    }
    put_text(out, &a.metadata, strings.as_deref_mut());
    put_u(out, state.grants.len() as u64);
    for g in &state.grants {
        put_text(out, &g.id, None);
        put_u(out, g.seq);
        put_amount(out, g.amount);
        put_amount(out, g.remaining);
        put_time_after(out, g.created_at, a.created_at);
        match g.expires_at {
            Some(t) => {
                out.push(1);
                put_time_after(out, t, g.created_at);
            }
            None => out.push(0),
        }
        put_text(out, &g.source, strings.as_deref_mut());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    strings: &'a Strings,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn i(&mut self) -> Option<i64> {
        let v = self.u()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn amount(&mut self) -> Option<Amount> {
        let v = self.u()?;
        let micros = if v & 1 == 1 {
            (v >> 1).checked_mul(MICROS_PER_UNIT)?
        } else {
            v >> 1
        };
        Amount::from_micros(i64::try_from(micros).ok()?)
    }

    fn time(&mut self) -> Option<Timestamp> {
        Some(Timestamp::from_millis(self.i()?))
    }

    fn time_after(&mut self, base: Timestamp) -> Option<Timestamp> {
        Some(Timestamp::from_millis(
            base.millis().wrapping_add(self.i()?),
        ))
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.u()?).ok()?;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn text(&mut self) -> Option<Arc<str>> {
        match self.u()? {
            TEXT_INLINE => Some(Arc::from(self.str()?)),
            TEXT_UUID => Some(uuid_text(self.take(16)?)),
            tag => {
                let i = usize::try_from(tag - TEXT_INTERNED).ok()?;
                self.strings.all.get(i).cloned()
            }
        }
    }
}

/// The state in `bytes` if it is `id`'s; its holds are empty (see the
/// module docs).
fn decode(bytes: &[u8], id: &AccountId, strings: &Strings) -> Option<Cached> {
    let mut r = Reader { bytes, strings };
    // Compared as bytes: an id equal to a valid one is valid UTF-8.
    let len = usize::try_from(r.u()?).ok()?;
    if r.take(len)? != id.as_str().as_bytes() {
        return None; // another account with the same hash
    }
    decode_body(&mut r, id)
}

/// What [`encode_body`] wrote, for the account `id`. Bytes after it are
/// left in `r` (an arena entry's slack).
fn decode_body(r: &mut Reader<'_>, id: &AccountId) -> Option<Cached> {
    let bytes_len = r.bytes.len();
    let flags = r.byte()?;
    let unit = Unit::from_arc(r.text()?).ok()?;
    let expires_at = if flags & HAS_EXPIRY != 0 {
        Some(r.time()?)
    } else {
        None
    };
    let created_at = r.time()?;
    let updated_at = r.time_after(created_at)?;
    let totals = Totals {
        granted: r.amount()?,
        used: r.amount()?,
        expired: r.amount()?,
    };
    let next_grant_seq = r.u()?;
    let mut head = |flag: u8| match flags & flag {
        0 => Some(None),
        _ => r.i().map(Some),
    };
    let heads = ChainHeads {
        event: head(HAS_LAST_EVENT)?,
        hold: head(HAS_LAST_HOLD)?,
    };
    let timezone = if flags & HAS_TIMEZONE != 0 {
        Some(r.text()?)
    } else {
        None
    };
    let metadata = r.text()?;
    let count = usize::try_from(r.u()?).ok()?;
    let mut grants = Vec::with_capacity(count.min(bytes_len));
    for _ in 0..count {
        let id = r.text()?;
        let seq = r.u()?;
        let amount = r.amount()?;
        let remaining = r.amount()?;
        let granted_at = r.time_after(created_at)?;
        let expires_at = match r.byte()? {
            0 => None,
            _ => Some(r.time_after(granted_at)?),
        };
        grants.push(Grant {
            id,
            seq,
            amount,
            remaining,
            expires_at,
            source: r.text()?,
            created_at: granted_at,
        });
    }
    let account = Account {
        id: id.clone(),
        unit,
        status: if flags & SUSPENDED != 0 {
            AccountStatus::Suspended
        } else {
            AccountStatus::Active
        },
        expires_at,
        timezone,
        metadata,
        overage: match (flags >> OVERAGE_SHIFT) & OVERAGE_MASK {
            0 => OveragePolicy::Reject,
            1 => OveragePolicy::Cap,
            2 => OveragePolicy::Allow,
            _ => return None,
        },
        created_at,
        updated_at,
    };
    Some(Cached {
        state: AccountState {
            account,
            totals,
            grants,
            holds: Vec::new(),
            next_grant_seq,
        },
        heads,
    })
}

/// The version of the stored form, its first byte.
const STORED_FORMAT: u8 = 1;

/// An account's state as the account log stores it (its `state` column,
/// see `account_log.rs`): [`STORED_FORMAT`], then the body of a compact
/// entry without the id and the newest event (the row has columns for
/// both) and with every text inline (the strings table lives in memory
/// only). ~60 bytes for the bench's accounts, where the same state in
/// columns took ~160. This makes the body a disk format: a change to it
/// needs a new format number and a decoder for the old one
/// (`the_stored_form_is_pinned` fails until both are there). Holds are not
/// part of it.
pub fn encode_stored(state: &AccountState, out: &mut Vec<u8>) {
    out.push(STORED_FORMAT);
    encode_body(state, ChainHeads::default(), None, out);
}

/// The state [`encode_stored`] wrote for `id` (no holds); `None` if the
/// bytes are not one.
pub fn decode_stored(bytes: &[u8], id: &AccountId) -> Option<AccountState> {
    let (&format, body) = bytes.split_first()?;
    if format != STORED_FORMAT {
        return None;
    }
    let strings = Strings::default();
    let mut r = Reader {
        bytes: body,
        strings: &strings,
    };
    let cached = decode_body(&mut r, id)?;
    r.bytes.is_empty().then_some(cached.state)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn id(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }

    fn grant(seq: u64, remaining: i64, expires_at: Option<i64>) -> Grant {
        Grant {
            id: format!("g-{seq}-\u{e9}").into(),
            seq,
            amount: Amount::MAX,
            remaining: Amount::from_micros(remaining).unwrap(),
            expires_at: expires_at.map(Timestamp::from_millis),
            source: "renewal".into(),
            created_at: Timestamp::from_millis(-5),
        }
    }

    /// An account of unit "mb" with `grants`; `cache.rs`'s tests use it too.
    pub(in crate::sqlite) fn state(name: &str, grants: Vec<Grant>) -> AccountState {
        let mut s = AccountState::new(Account {
            id: id(name),
            unit: Unit::parse("mb").unwrap(),
            status: AccountStatus::Active,
            expires_at: None,
            timezone: None,
            metadata: "{}".into(),
            overage: OveragePolicy::Reject,
            created_at: Timestamp::from_millis(1_764_806_400_000),
            updated_at: Timestamp::from_millis(1_764_806_400_123),
        });
        s.grants = grants;
        s
    }

    fn heads(event: Option<i64>) -> ChainHeads {
        ChainHeads { event, hold: None }
    }

    fn round_trip(s: &AccountState, seq: Option<i64>) -> usize {
        round_trip_with(s, heads(seq))
    }

    fn round_trip_with(s: &AccountState, heads: ChainHeads) -> usize {
        let mut strings = Strings::default();
        let mut bytes = Vec::new();
        encode(s, heads, &mut strings, &mut bytes);
        let back = decode(&bytes, &s.account.id, &strings).expect("decodes");
        assert_eq!(&back.state, s);
        assert_eq!(back.heads, heads);
        // Encoded again, the decoded state gives the same bytes.
        let mut again = Vec::new();
        encode(&back.state, heads, &mut strings, &mut again);
        assert_eq!(again, bytes);
        // Every shorter prefix is refused, never misread.
        for n in 0..bytes.len() {
            assert!(
                decode(&bytes[..n], &s.account.id, &strings).is_none(),
                "prefix {n}"
            );
        }
        bytes.len()
    }

    /// Every optional field set, and values at their extremes.
    fn varied_state() -> AccountState {
        let mut s = state(
            "b",
            vec![
                grant(1, 0, None),
                grant(7, 42, Some(i64::MIN)),
                grant(8, 1_000_000, Some(i64::MAX)),
            ],
        );
        s.account.status = AccountStatus::Suspended;
        s.account.overage = OveragePolicy::Allow;
        s.account.expires_at = Some(Timestamp::from_millis(i64::MAX));
        s.account.timezone = Some("Europe/Paris".into());
        s.account.metadata = r#"{"plan":"pro","note":"\u00e9"}"#.into();
        s.totals = Totals {
            granted: Amount::MAX,
            used: Amount::from_micros(3).unwrap(),
            expired: Amount::ZERO,
        };
        s.next_grant_seq = u64::MAX;
        s
    }

    #[test]
    fn states_round_trip() {
        round_trip(&state("a", vec![]), None);
        let mut s = varied_state();
        round_trip(&s, Some(i64::MAX));
        s.account.overage = OveragePolicy::Cap;
        round_trip(&s, Some(1));
        // A hold chain's head beside the event chain's, with the largest
        // overage code sharing the flags byte.
        s.account.overage = OveragePolicy::Allow;
        let both = ChainHeads {
            event: Some(7),
            hold: Some(i64::MAX),
        };
        round_trip_with(&s, both);
        round_trip_with(
            &s,
            ChainHeads {
                event: None,
                hold: Some(3),
            },
        );
    }

    /// The account log's form: the same state back (without holds), and
    /// nothing else accepted: no prefix, no bytes after it, no other format.
    fn stored_round_trip(s: &AccountState) -> Vec<u8> {
        let id = &s.account.id;
        let mut bytes = Vec::new();
        encode_stored(s, &mut bytes);
        let mut expected = s.clone();
        expected.holds.clear();
        assert_eq!(decode_stored(&bytes, id).as_ref(), Some(&expected));
        for n in 0..bytes.len() {
            assert!(decode_stored(&bytes[..n], id).is_none(), "prefix {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_stored(&longer, id).is_none(), "a byte after it");
        let mut other = bytes.clone();
        other[0] = STORED_FORMAT + 1;
        assert!(decode_stored(&other, id).is_none(), "another format");
        bytes
    }

    #[test]
    fn stored_states_round_trip() {
        stored_round_trip(&state("a", vec![]));
        let mut s = varied_state();
        stored_round_trip(&s);
        s.account.overage = OveragePolicy::Cap;
        s.grants[1].id = "01a2434c-9f7b-7463-b889-95cc9a27cb21".into();
        stored_round_trip(&s);
    }

    /// As the bench's accounts: a server-made grant id, whole units.
    fn typical_state() -> AccountState {
        let mut s = state("bench-221416", vec![]);
        s.grants.push(Grant {
            id: "01a2434c-9f7b-7463-b889-95cc9a27cb21".into(),
            seq: 1,
            amount: Amount::from_units(1_000_000_000).unwrap(),
            remaining: Amount::from_units(999_999_999).unwrap(),
            expires_at: None,
            source: "manual".into(),
            created_at: s.account.created_at,
        });
        s.totals.granted = s.grants[0].amount;
        s.totals.used = Amount::from_units(1).unwrap();
        s.account.updated_at = Timestamp::from_millis(s.account.created_at.millis() + 90_000);
        s
    }

    #[test]
    fn a_typical_state_takes_under_80_bytes() {
        let len = round_trip(&typical_state(), Some(3_419_172));
        assert!(len < 80, "{len}");
    }

    /// The stored form is on disk: these bytes must decode to this state in
    /// every later release. Give the format a new number (and keep a
    /// decoder for this one) before changing what they hold.
    #[test]
    fn the_stored_form_is_pinned() {
        let bytes = stored_round_trip(&typical_state());
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "010000026d6280e0c4eadc66a0fe0a81a8d6b90703010100027b7d010101a2434c9f7b7463b88995cc9a27cb21\
             0181a8d6b907ffa7d6b907000000066d616e75616c"
        );
    }

    #[test]
    fn uuids_round_trip_only_in_the_canonical_form() {
        let canonical = "01a2434c-9f7b-7463-b889-95cc9a27cb21";
        let bytes = uuid_bytes(canonical).unwrap();
        assert_eq!(&*uuid_text(&bytes), canonical);
        for other in [
            "01A2434C-9F7B-7463-B889-95CC9A27CB21",
            "01a2434c9f7b7463b88995cc9a27cb21",
            "01a2434c-9f7b-7463-b889-95cc9a27cb2g",
            "01a2434c-9f7b-7463-b889-95cc9a27cb2",
            "01a2434c-9f7b-7463-b889+95cc9a27cb21",
        ] {
            assert!(uuid_bytes(other).is_none(), "{other}");
        }
        // Grant ids that are not canonical UUIDs are kept inline, unchanged.
        let mut s = state("a", vec![grant(1, 5, None)]);
        s.grants[0].id = "01A2434C-9F7B-7463-B889-95CC9A27CB21".into();
        round_trip(&s, None);
    }

    #[test]
    fn shared_strings_are_kept_once_and_bounded() {
        let mut strings = Strings::default();
        let mut bytes = Vec::new();
        for i in 0..STRINGS_MAX + 10 {
            let mut s = state("a", vec![]);
            s.account.metadata = format!("{{\"n\":{i}}}").into();
            bytes.clear();
            encode(&s, ChainHeads::default(), &mut strings, &mut bytes);
            assert_eq!(decode(&bytes, &id("a"), &strings).unwrap().state, s);
        }
        assert_eq!(strings.all.len(), STRINGS_MAX);
        let long: Arc<str> = "m".repeat(STRING_INTERNED_BYTES_MAX + 1).into();
        assert_eq!(Strings::default().index_of(&long), None);
    }

    #[test]
    fn another_accounts_entry_is_a_miss() {
        let mut strings = Strings::default();
        let mut bytes = Vec::new();
        encode(
            &state("a", vec![]),
            ChainHeads::default(),
            &mut strings,
            &mut bytes,
        );
        assert!(decode(&bytes, &id("b"), &strings).is_none());
        assert!(decode(&bytes, &id("a"), &strings).is_some());
    }

    #[test]
    fn changes_that_fit_are_written_in_place() {
        let mut c = Compact::new(1 << 20);
        let mut s = state("a", vec![grant(1, 1_000_000, None)]);
        c.put(&s, heads(Some(1)));
        let used = c.arena.len();
        for n in 1..100 {
            s.grants[0].remaining = Amount::from_micros(1_000_000 - n).unwrap();
            c.put(&s, heads(Some(1 + n)));
            assert_eq!(c.get(&id("a")).unwrap().state, s);
        }
        assert_eq!(c.arena.len(), used, "no entry appended");
        assert_eq!(c.garbage, 0);
        // A longer state moves and leaves garbage behind.
        s.account.metadata = "x".repeat(100).into();
        c.put(&s, heads(Some(500)));
        assert_eq!(c.garbage, used);
        assert_eq!(c.get(&id("a")).unwrap().state, s);
        assert_eq!(c.get(&id("a")).unwrap().heads, heads(Some(500)));
    }

    #[test]
    fn states_with_holds_or_too_large_are_forgotten() {
        let mut c = Compact::new(1 << 20);
        let mut s = state("a", vec![]);
        c.put(&s, ChainHeads::default());
        assert!(c.get(&id("a")).is_some());
        s.holds.push(reckon_core::Hold {
            id: "h".into(),
            account_id: id("a"),
            amount: Amount::ZERO,
            status: reckon_core::HoldStatus::Held,
            expires_at: Timestamp::EPOCH,
            allocations: vec![],
            settled_amount: Amount::ZERO,
            created_at: Timestamp::EPOCH,
            resolved_at: None,
        });
        c.put(&s, ChainHeads::default());
        assert!(c.get(&id("a")).is_none());
        s.holds.clear();
        c.put(&s, ChainHeads::default());
        assert!(c.get(&id("a")).is_some());
        s.account.metadata = "x".repeat(ENTRY_BYTES_MAX).into();
        c.put(&s, ChainHeads::default());
        assert!(c.get(&id("a")).is_none());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_full_arena_keeps_what_it_has_then_starts_over_once_a_quarter_is_garbage() {
        let mut c = Compact::new(4096);
        let names: Vec<String> = (0..200).map(|i| format!("acct-{i:03}")).collect();
        for n in &names {
            c.put(&state(n, vec![]), ChainHeads::default());
        }
        let kept: Vec<&String> = names.iter().filter(|n| c.get(&id(n)).is_some()).collect();
        assert!(kept.len() > 50 && kept.len() < 200, "{}", kept.len());
        assert!(c.arena.len() <= 4096);
        // The first ones stayed: a full arena does not evict.
        assert_eq!(kept[0], &names[0]);
        // Growing kept entries moves them. While the garbage is under a
        // quarter of the arena a moved state that does not fit is
        // forgotten; then the arena starts over. Never is a state returned
        // that is not the last one put.
        let mut started_over = false;
        for n in &kept {
            let mut s = state(n, vec![]);
            s.account.metadata = "y".repeat(STRING_INTERNED_BYTES_MAX + 1).into();
            let garbage = c.garbage;
            c.put(&s, ChainHeads::default());
            started_over |= c.garbage < garbage;
            if let Some(k) = c.get(&id(n)) {
                assert_eq!(k.state, s);
            }
            assert!(c.arena.len() <= 4096);
        }
        assert!(started_over);
        assert!(kept.iter().any(|n| c.get(&id(n)).is_some()));
    }

    #[test]
    fn the_entries_are_bounded_as_well_as_the_bytes() {
        let mut c = Compact::new(1 << 20);
        c.entries_max = 10;
        for i in 0..20 {
            c.put(&state(&format!("a{i}"), vec![]), ChainHeads::default());
        }
        assert_eq!(c.len(), 10);
        assert!(c.get(&id("a9")).is_some() && c.get(&id("a10")).is_none());
        // A kept account is still updated in place.
        let mut s = state("a3", vec![]);
        s.next_grant_seq = 9;
        c.put(&s, ChainHeads::default());
        assert_eq!(c.get(&id("a3")).unwrap().state, s);
    }

    #[test]
    fn nothing_is_kept_at_zero_bytes() {
        let mut c = Compact::new(0);
        c.put(&state("a", vec![]), ChainHeads::default());
        assert!(c.get(&id("a")).is_none());
        assert_eq!(c.arena.capacity(), 0);
    }
}
