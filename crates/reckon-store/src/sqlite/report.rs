//! Running means for the writer's and the durability threads' debug logs.
//!
//! With `RECKON_LOG=reckon_store=debug`, every `REPORT_INTERVAL` the writer
//! logs how long a request waited for its batch to start and how long a
//! batch took, and the durability threads how long an fsync took and how
//! long a batch waited for its answer. Together they split the store's part
//! of a request's latency: queue, batch, disk.

use std::time::{Duration, Instant};

/// How often the running means are logged (at debug level).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// A count of things, their summed duration and the longest one.
#[derive(Clone, Copy, Default)]
pub struct Tally {
    count: u64,
    total: Duration,
    max: Duration,
}

impl Tally {
    pub fn add(&mut self, took: Duration) {
        self.count += 1;
        self.total += took;
        self.max = self.max.max(took);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean_us(&self) -> u64 {
        (self.total.as_micros() / u128::from(self.count.max(1))) as u64
    }

    /// The longest one: a stall shows here long before it moves the mean.
    pub fn max_us(&self) -> u64 {
        self.max.as_micros() as u64
    }
}

/// Two tallies over one interval, logged together when the interval ends.
pub struct Report {
    since: Instant,
    /// Fsyncs run, or batches written.
    pub work: Tally,
    /// Batches answered, or requests batched: each one's wait.
    pub waits: Tally,
}

impl Report {
    pub fn new(now: Instant) -> Report {
        Report {
            since: now,
            work: Tally::default(),
            waits: Tally::default(),
        }
    }

    /// When `REPORT_INTERVAL` has passed since the last: the seconds it
    /// covered and its tallies, and the report starts over. `None` before.
    pub fn take_if_due(&mut self, now: Instant) -> Option<(f64, Tally, Tally)> {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < REPORT_INTERVAL {
            return None;
        }
        let (work, waits) = (self.work, self.waits);
        *self = Report::new(now);
        (waits.count() > 0).then_some((elapsed.as_secs_f64(), work, waits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_maxima_and_the_interval() {
        let t0 = Instant::now();
        let mut r = Report::new(t0);
        r.work.add(Duration::from_micros(300));
        r.work.add(Duration::from_micros(500));
        r.waits.add(Duration::from_micros(90));
        assert!(r.take_if_due(t0 + Duration::from_secs(1)).is_none());
        let (secs, work, waits) = r.take_if_due(t0 + REPORT_INTERVAL).unwrap();
        assert_eq!(secs, REPORT_INTERVAL.as_secs_f64());
        assert_eq!((work.count(), work.mean_us(), work.max_us()), (2, 400, 500));
        assert_eq!((waits.count(), waits.mean_us()), (1, 90));
        // Started over, and an interval with nothing waited logs nothing.
        assert!(r
            .take_if_due(t0 + REPORT_INTERVAL + REPORT_INTERVAL)
            .is_none());
    }
}
