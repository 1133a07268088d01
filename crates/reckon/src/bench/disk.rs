//! How fast the disk under the database fsyncs, measured next to the load.
//!
//! On a VM the disk's `fdatasync` latency can change severalfold within a
//! day, and every durable request waits for one. A result without it cannot
//! be compared with another, so bench probes the database's directory
//! before and after the scenarios and reports both with the results.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes appended before each `fdatasync`: about one small commit's WAL frames.
const PROBE_APPEND_BYTES: usize = 4096;
/// The probe stops after this many syncs or [`PROBE_DURATION`], whichever first.
const PROBE_SYNCS_MAX: usize = 2000;
const PROBE_DURATION: Duration = Duration::from_secs(1);

/// `fdatasync` latency of 4 KiB appends to a fresh file, in microseconds.
#[derive(Serialize, Clone, Debug)]
pub struct FsyncProbe {
    pub syncs: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl std::fmt::Display for FsyncProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "fdatasync of a 4 KiB append: p50 {:.2}ms p99 {:.2}ms max {:.2}ms ({} syncs)",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.max_us),
            self.syncs
        )
    }
}

/// Appends and fsyncs a temporary file in `dir` (removed afterwards).
pub fn probe(dir: &Path) -> std::io::Result<FsyncProbe> {
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    let block = [0x5au8; PROBE_APPEND_BYTES];
    let mut took = Vec::with_capacity(PROBE_SYNCS_MAX);
    let started = Instant::now();
    while took.len() < PROBE_SYNCS_MAX && started.elapsed() < PROBE_DURATION {
        file.write_all(&block)?;
        let t = Instant::now();
        file.as_file().sync_data()?;
        took.push(t.elapsed().as_micros() as u64);
    }
    took.sort_unstable();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    Ok(FsyncProbe {
        syncs: took.len(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: at(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_a_real_file_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = probe(dir.path()).unwrap();
        assert!(p.syncs >= 1 && p.syncs <= PROBE_SYNCS_MAX);
        assert!(p.p50_us <= p.p99_us && p.p99_us <= p.max_us);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
