//! Time as the core sees it: instants handed in by the caller.
//!
//! The core never reads a clock. Every command is applied "at" a
//! [`Timestamp`] chosen by the executor, so tests drive expiry with a fake
//! clock and replays are deterministic.

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    /// `self + secs`, saturating: a TTL can never wrap an instant into the past.
    pub fn plus_secs(self, secs: u64) -> Timestamp {
        let ms = (secs as i64).saturating_mul(1000);
        Timestamp(self.0.saturating_add(ms))
    }

    pub fn plus_millis(self, millis: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }
}
