//! Reads the database file once at start, so the OS page cache holds it.
//!
//! The writer keeps only [`super::CACHE_ACCOUNTS_MAX`] accounts in memory;
//! any other account it needs is a B-tree read through the OS page cache.
//! After a reboot, or once other work has pushed the file out of that
//! cache, each of those reads is a random read from the disk, one at a
//! time on the writer's thread, and every request behind it waits. On the
//! project's VM, a million-account database read cold made 8,000 `usage`/s
//! with p99 51 ms against 11,700/s and 17 ms warm (2026-12-04); earlier
//! cold runs after large builds fell to 600–1,500/s. Reading the file from
//! start to end takes under a second for 400 MB and turns those random
//! reads into one sequential pass.
//!
//! It runs on its own thread after the store is open, so the server is
//! ready at once and requests are served while it reads. A file larger
//! than [`WARM_BYTES_MAX`], or than half of the memory the OS reports
//! available, is left alone: it would push out as much as it brought in.
//!
//! It reads through the store's own handle on the file (`pread`), never
//! one it opens and closes: closing a descriptor of the database file
//! would cancel the POSIX locks SQLite holds on it (see `SqliteStore::open`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

/// Largest database file read at start.
pub const WARM_BYTES_MAX: u64 = 4 << 30;
/// Bytes per `read` while warming.
const WARM_CHUNK_BYTES: usize = 1 << 20;

/// Starts the warming thread for the file at `path`.
pub fn start(file: Arc<File>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("reckon-warm".into())
        .spawn(move || {
            let started = Instant::now();
            match warm(&file, limit()) {
                Ok(Some(bytes)) => tracing::info!(
                    mb = bytes >> 20,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "read the database file into the OS page cache"
                ),
                Ok(None) => tracing::info!(
                    "the database file is larger than the memory set aside for warming it; not read at start"
                ),
                // Only a lost speed-up: the writer reads what it needs anyway.
                Err(e) => tracing::warn!(error = %e, "could not read the database file at start"),
            }
        })?;
    Ok(())
}

/// [`WARM_BYTES_MAX`], or half of `MemAvailable` when the OS reports it.
fn limit() -> u64 {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    available.map_or(WARM_BYTES_MAX, |a| WARM_BYTES_MAX.min(a / 2))
}

/// Reads the whole file if it is at most `limit` bytes; returns the bytes
/// read, or `None` if it was too large.
fn warm(file: &File, limit: u64) -> std::io::Result<Option<u64>> {
    if file.metadata()?.len() > limit {
        return Ok(None);
    }
    let mut buf = vec![0u8; WARM_CHUNK_BYTES];
    let mut total = 0u64;
    loop {
        match file.read_at(&mut buf, total) {
            Ok(0) => return Ok(Some(total)),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_within_the_limit_and_skips_a_larger_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let size = 3 * WARM_CHUNK_BYTES as u64 + 17;
        std::fs::write(&path, vec![1u8; size as usize]).unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(warm(&file, size).unwrap(), Some(size));
        assert_eq!(warm(&file, size - 1).unwrap(), None);
        assert!(limit() > 0 && limit() <= WARM_BYTES_MAX);
    }
}
