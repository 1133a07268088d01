//! Reads the database file once at start, so the OS page cache holds it.
//!
//! The writer keeps only so many accounts in memory (`cache.rs`);
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
//! than [`WARM_BYTES_MAX`], than half of the memory the OS reports
//! available, or than half of the process's cgroup memory limit, is left
//! alone: it would push out as much as it brought in.
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

/// Starts the warming thread on the store's handle of the database file.
pub fn start(file: Arc<File>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("reckon-warm".into())
        .spawn(move || {
            let started = Instant::now();
            let limit = limit();
            match warm(&file, limit) {
                Ok(Some(bytes)) => tracing::info!(
                    mb = bytes >> 20,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "read the database file into the OS page cache"
                ),
                Ok(None) => tracing::info!(
                    limit_mb = limit >> 20,
                    "the database file is larger than the memory set aside for warming it (see sqlite/warm.rs); not read at start"
                ),
                // Only a lost speed-up: the writer reads what it needs anyway.
                Err(e) => tracing::warn!(error = %e, "could not read the database file at start"),
            }
        })?;
    Ok(())
}

/// [`WARM_BYTES_MAX`], or less: half of the memory the OS reports
/// available (`MemAvailable`), and half of the process's cgroup memory
/// limit when it has one. In a container `MemAvailable` is the host's,
/// while the page cache a read fills is charged to the container's limit.
fn limit() -> u64 {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    [available, cgroup_memory_limit()]
        .into_iter()
        .flatten()
        .fold(WARM_BYTES_MAX, |limit, memory| limit.min(memory / 2))
}

/// The smallest memory limit of this process's cgroup (v2 `memory.max`, v1
/// `memory.limit_in_bytes`), looked up under the process's own cgroup path
/// and at the mount's root (a container usually sees its cgroup there).
fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut files = vec![
        "/sys/fs/cgroup/memory.max".to_owned(),
        "/sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned(),
    ];
    for line in own.lines() {
        match line.splitn(3, ':').collect::<Vec<_>>()[..] {
            ["0", "", path] => files.push(format!("/sys/fs/cgroup{path}/memory.max")),
            [_, "memory", path] => {
                files.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
            }
            _ => {}
        }
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|text| parse_memory_limit(&text))
        .min()
}

/// A cgroup memory limit file's value; `None` when it sets no limit
/// (`max` in v2, a number near `i64::MAX` in v1).
fn parse_memory_limit(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|&n| n < 1 << 60)
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

    #[test]
    fn cgroup_limits_parse_and_unlimited_is_none() {
        assert_eq!(parse_memory_limit("536870912\n"), Some(512 << 20));
        assert_eq!(parse_memory_limit("max\n"), None);
        assert_eq!(parse_memory_limit("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit(""), None);
    }
}
