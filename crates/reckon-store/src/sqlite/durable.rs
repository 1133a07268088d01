//! The durability thread: answers callers only once their commit is on disk.
//!
//! The writer commits with `synchronous = NORMAL`, which writes the WAL but
//! does not fsync it, and hands each batch's answers here in commit order.
//! This thread takes every answer queued, fsyncs the WAL file once, and then
//! sends them. An fsync flushes everything written to the file before it, so
//! an answer is sent only after its own batch and every batch before it are
//! on disk: what `synchronous = FULL` guarantees, without the writer waiting
//! for the disk. After a power cut, SQLite's WAL recovery keeps exactly the
//! batches whose commit frames reached the disk, a superset of those
//! answered.
//!
//! The WAL file is the same inode for as long as any connection has the
//! database open (SQLite truncates and rewrites it, never replaces it, and
//! our connections stay open), but this opens it again if its inode ever
//! changes, so it can never fsync a stale file.
//!
//! With `RECKON_LOG=reckon_store=debug` the thread logs, every
//! `SYNC_REPORT_INTERVAL`, how many fsyncs it ran, how long they took and how
//! long a batch waited here for its answer: the part of a request's latency
//! that the disk adds.
//!
//! A failed fsync aborts the process. After one, the kernel may have dropped
//! the dirty pages and a retry can report success for data that never
//! reached the disk; the only safe answer is to restart from what is on
//! disk (PostgreSQL does the same).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the durability thread logs its fsync figures (at debug level).
const SYNC_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Sends one batch's (or maintenance job's) answers.
pub type Answer = Box<dyn FnOnce() + Send>;

struct Pending {
    /// When the writer handed the batch over, for the wait reported.
    queued: Instant,
    answer: Answer,
    /// The batch committed a write: its answer needs an fsync first.
    committed: bool,
}

/// The writer's handle on the durability thread.
pub struct Durability {
    queue: Option<mpsc::Sender<Pending>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the thread for the database at `path` (its WAL is `<path>-wal`).
pub fn start(path: &Path) -> std::io::Result<Durability> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let (queue, pending) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("reckon-fsync".into())
        .spawn(move || {
            let mut file = None;
            answer_after_sync(pending, || sync(&wal, &mut file)).unwrap_or_else(|e| {
                tracing::error!(error = %e, wal = %wal.display(), "fsync of the WAL failed; stopping so nothing unsynced is acknowledged");
                std::process::abort()
            })
        })?;
    Ok(Durability {
        queue: Some(queue),
        thread: Some(thread),
    })
}

impl Durability {
    /// Queues `answer` behind everything committed before it.
    pub fn answer_when_durable(&self, answer: Answer, committed: bool) {
        if let Some(queue) = &self.queue {
            // The thread only stops after `finish`, so this cannot fail.
            let _ = queue.send(Pending {
                queued: Instant::now(),
                answer,
                committed,
            });
        }
    }

    /// Sends every queued answer (after its fsync) and stops the thread.
    pub fn finish(mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Until the writer hangs up: takes every queued answer, fsyncs once if any
/// of them committed, then sends them in order. Returns only on a failed
/// fsync, with nothing of that group answered.
fn answer_after_sync(
    pending: mpsc::Receiver<Pending>,
    mut sync: impl FnMut() -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut report = SyncReport::new(Instant::now());
    while let Ok(first) = pending.recv() {
        let mut group = vec![first];
        group.extend(pending.try_iter());
        if group.iter().any(|p| p.committed) {
            let started = Instant::now();
            sync()?;
            report.synced(started.elapsed());
        }
        let answered = Instant::now();
        for p in group {
            report.answered(answered - p.queued);
            (p.answer)();
        }
        report.log_if_due(answered);
    }
    Ok(())
}

/// Counts for the debug log: fsyncs and their time, batches and their wait
/// (from the writer's hand-over to the answer: the fsync in flight, if any,
/// then the batch's own).
struct SyncReport {
    since: Instant,
    syncs: u32,
    synced: Duration,
    batches: u32,
    waited: Duration,
}

impl SyncReport {
    fn new(now: Instant) -> SyncReport {
        SyncReport {
            since: now,
            syncs: 0,
            synced: Duration::ZERO,
            batches: 0,
            waited: Duration::ZERO,
        }
    }

    fn synced(&mut self, took: Duration) {
        self.syncs += 1;
        self.synced += took;
    }

    fn answered(&mut self, waited: Duration) {
        self.batches += 1;
        self.waited += waited;
    }

    fn log_if_due(&mut self, now: Instant) {
        let elapsed = now - self.since;
        if elapsed < SYNC_REPORT_INTERVAL {
            return;
        }
        if self.batches > 0 {
            tracing::debug!(
                seconds = elapsed.as_secs_f64(),
                fsyncs = self.syncs,
                fsync_mean_us = (self.synced / self.syncs.max(1)).as_micros() as u64,
                batches = self.batches,
                batch_wait_mean_us = (self.waited / self.batches).as_micros() as u64,
                "WAL fsyncs"
            );
        }
        *self = SyncReport::new(now);
    }
}

fn sync(wal: &Path, file: &mut Option<(File, u64)>) -> std::io::Result<()> {
    let inode = inode_of(wal)?;
    let current = match file.take() {
        Some((f, ino)) if ino == inode => f,
        _ => File::open(wal)?,
    };
    // fdatasync also flushes the file size, which reading the data needs.
    current.sync_data()?;
    *file = Some((current, inode));
    Ok(())
}

/// The file's inode number, and nothing else. A full `stat` also reads
/// the change time, and since Linux 6.13 (multigrain timestamps) a change
/// time that was read makes the next write stamp a fine-grained time, which
/// always differs: every write then dirtied the WAL's inode, and on ext4
/// without a journal (this project's VM) every `fdatasync` wrote the inode
/// block as well. Measured 2026-12-04 under `usage`, over one second: with
/// `stat` the inode was dirtied 1,165 times for 1,164 syncs, with this 343
/// times (about once per clock tick) for 1,392; `fdatasync` took 0.25-0.27
/// ms on average against 0.28-0.34 (docs/performance-log.md).
fn inode_of(path: &Path) -> std::io::Result<u64> {
    // Where statx fails (kernels before 4.11, sandboxes that refuse it with
    // `ENOSYS` or `EPERM`), a full `stat` answers, or gives the error: a
    // sync that failed here would stop the server.
    #[cfg(target_os = "linux")]
    if let Ok(s) = rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::INO,
    ) {
        return Ok(s.stx_ino);
    }
    Ok(std::fs::metadata(path)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<&'static str>>>;

    fn queue(log: &Log, items: &[(&'static str, bool)]) -> mpsc::Receiver<Pending> {
        let (tx, rx) = mpsc::channel();
        for &(name, committed) in items {
            let log = log.clone();
            let answer: Answer = Box::new(move || log.lock().unwrap().push(name));
            tx.send(Pending {
                queued: Instant::now(),
                answer,
                committed,
            })
            .unwrap();
        }
        rx
    }

    #[test]
    fn committed_answers_wait_for_a_sync_and_keep_their_order() {
        let log = Log::default();
        let rx = queue(&log, &[("read", false), ("write", true), ("replay", false)]);
        let l = log.clone();
        answer_after_sync(rx, || {
            l.lock().unwrap().push("fsync");
            Ok(())
        })
        .unwrap();
        assert_eq!(*log.lock().unwrap(), ["fsync", "read", "write", "replay"]);
    }

    #[test]
    fn answers_that_wrote_nothing_need_no_sync() {
        let log = Log::default();
        let rx = queue(&log, &[("read", false)]);
        answer_after_sync(rx, || panic!("no fsync without a commit")).unwrap();
        assert_eq!(*log.lock().unwrap(), ["read"]);
    }

    #[test]
    fn a_failed_sync_answers_nobody() {
        let log = Log::default();
        let rx = queue(&log, &[("write", true)]);
        let failed = answer_after_sync(rx, || Err(std::io::Error::other("disk gone")));
        assert!(failed.is_err());
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn sync_follows_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("x.db-wal");
        std::fs::write(&wal, b"one").unwrap();
        let mut file = None;
        sync(&wal, &mut file).unwrap();
        let first = file.as_ref().unwrap().1;
        let other = dir.path().join("new");
        std::fs::write(&other, b"two").unwrap();
        std::fs::rename(&other, &wal).unwrap();
        sync(&wal, &mut file).unwrap();
        assert_ne!(file.as_ref().unwrap().1, first, "reopened the new inode");
        assert!(sync(&dir.path().join("missing"), &mut file).is_err());
    }
}
