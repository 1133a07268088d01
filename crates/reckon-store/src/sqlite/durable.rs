//! The durability threads: answer callers only once their commit is on disk.
//!
//! The writer commits with `synchronous = NORMAL`, which writes the WAL but
//! does not fsync it, and hands each batch's answers here in commit order.
//! A sync thread fsyncs the WAL file and then sends every answer whose batch
//! was committed before that fsync began. An fsync flushes everything
//! written to the file before it was called (including pages another
//! thread's fsync has in flight: the kernel waits for those too), so an
//! answer is sent only after its own batch and every batch before it are on
//! disk: what `synchronous = FULL` guarantees, without the writer waiting
//! for the disk. After a power cut, SQLite's WAL recovery keeps exactly the
//! batches whose commit frames reached the disk, a superset of those
//! answered.
//!
//! `SYNC_THREADS` fsyncs may be in flight at once. A batch committed while
//! one is in flight starts its own at once instead of waiting for it to
//! finish first: under load an fsync here takes 0.3-0.5 ms, and a batch's
//! wait for the one in flight was most of what the disk added to a request
//! (docs/performance-log.md). A thread sends the answers it takes in commit
//! order, but the two threads may be sending different batches' answers at
//! the same moment: a caller cannot tell that from network timing, and no
//! answer leaves before its batch is on disk.
//!
//! The WAL file is the same inode for as long as any connection has the
//! database open (SQLite truncates and rewrites it, never replaces it, and
//! our connections stay open), but this opens it again if its inode ever
//! changes, so it can never fsync a stale file.
//!
//! With `RECKON_LOG=reckon_store=debug` the threads log, every
//! `report::REPORT_INTERVAL`, how many fsyncs they ran, how long they took
//! and how long a batch waited here for its answer: the part of a request's
//! latency that the disk adds.
//!
//! A failed fsync aborts the process. After one, the kernel may have dropped
//! the dirty pages and a retry can report success for data that never
//! reached the disk; the only safe answer is to restart from what is on
//! disk (PostgreSQL does the same).

use super::report::Report;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// How many fsyncs of the WAL may be in flight at once. Two made this VM's
/// disk take ~1.4x as many fsyncs a second as one, each ~1.5x slower; more
/// gave no more.
const SYNC_THREADS: usize = 2;

/// Sends one batch's (or maintenance job's) answers.
pub type Answer = Box<dyn FnOnce() + Send>;

struct Pending {
    /// When the writer handed the batch over, for the wait reported.
    queued: Instant,
    answer: Answer,
    /// The number of the newest committed batch at or before this one: the
    /// answer waits until an fsync that began after it was committed ends.
    /// 0 when nothing was committed before it (no fsync needed).
    needs: u64,
}

/// What the writer and the sync threads share, under one mutex.
struct Queue {
    /// Answers not yet sent, in commit order.
    pending: VecDeque<Pending>,
    /// Committed batches handed over so far (the newest one's number).
    committed: u64,
    /// The newest committed batch an fsync has begun for.
    syncing: u64,
    /// The newest committed batch known to be on disk.
    durable: u64,
    /// Fsyncs running now.
    in_flight: usize,
    /// The writer hung up: send what is left, then stop.
    closed: bool,
    /// An fsync failed: nothing more is answered (the process aborts).
    failed: bool,
    report: Report,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                committed: 0,
                syncing: 0,
                durable: 0,
                in_flight: 0,
                closed: false,
                failed: false,
                report: Report::new(Instant::now()),
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A sync thread panics only where it would abort anyway; the queue
        // is consistent between statements, so a poisoned lock is usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, answer: Answer, committed: bool) {
        let mut q = self.lock();
        if committed {
            q.committed += 1;
        }
        let needs = q.committed;
        q.pending.push_back(Pending {
            queued: Instant::now(),
            answer,
            needs,
        });
        drop(q);
        self.changed.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

/// The writer's handle on the durability threads.
pub struct Durability {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Starts the threads for the database at `path` (its WAL is `<path>-wal`).
pub fn start(path: &Path) -> std::io::Result<Durability> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let shared = Arc::new(Shared::new());
    let mut threads = Vec::with_capacity(SYNC_THREADS);
    for _ in 0..SYNC_THREADS {
        let shared_here = shared.clone();
        let wal = wal.clone();
        let spawned = std::thread::Builder::new()
            .name("reckon-fsync".into())
            .spawn(move || {
                let mut file = None;
                answer_after_sync(&shared_here, || sync(&wal, &mut file)).unwrap_or_else(|e| {
                    tracing::error!(error = %e, wal = %wal.display(), "fsync of the WAL failed; stopping so nothing unsynced is acknowledged");
                    std::process::abort()
                })
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                // Let the threads already started end.
                shared.close();
                return Err(e);
            }
        }
    }
    Ok(Durability { shared, threads })
}

/// A writer that stops without `finish` (it panicked) still lets the
/// threads send what is durable and end, instead of waiting forever.
impl Drop for Durability {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl Durability {
    /// Queues `answer` behind everything committed before it.
    pub fn answer_when_durable(&self, answer: Answer, committed: bool) {
        self.shared.push(answer, committed);
    }

    /// Sends every queued answer (after its fsync) and stops the threads.
    pub fn finish(mut self) {
        self.shared.close();
        for thread in std::mem::take(&mut self.threads) {
            let _ = thread.join();
        }
    }
}

/// One sync thread, until the writer hangs up and everything is answered:
/// sends the answers that are durable, else starts an fsync for what was
/// committed since the last one began (if fewer than `SYNC_THREADS` are in
/// flight), else waits. Returns an error on a failed fsync, with nothing
/// committed after the last good one answered.
fn answer_after_sync(
    shared: &Shared,
    mut sync: impl FnMut() -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut q = shared.lock();
    loop {
        if q.failed {
            return Ok(());
        }
        let durable = q.durable;
        let ready = q.pending.iter().take_while(|p| p.needs <= durable).count();
        if ready > 0 {
            let answered = Instant::now();
            let group: Vec<Pending> = q.pending.drain(..ready).collect();
            for p in &group {
                q.report.waits.add(answered - p.queued);
            }
            drop(q);
            for p in group {
                (p.answer)();
            }
            q = shared.lock();
            continue;
        }
        if q.committed > q.syncing && q.in_flight < SYNC_THREADS {
            let target = q.committed;
            q.syncing = target;
            q.in_flight += 1;
            drop(q);
            let started = Instant::now();
            let synced = sync();
            q = shared.lock();
            q.in_flight -= 1;
            if let Err(e) = synced {
                q.failed = true;
                drop(q);
                shared.changed.notify_all();
                return Err(e);
            }
            q.report.work.add(started.elapsed());
            q.durable = q.durable.max(target);
            if let Some((seconds, syncs, waits)) = q.report.take_if_due(Instant::now()) {
                tracing::debug!(
                    seconds,
                    fsyncs = syncs.count(),
                    fsync_mean_us = syncs.mean_us(),
                    fsync_max_us = syncs.max_us(),
                    batches = waits.count(),
                    batch_wait_mean_us = waits.mean_us(),
                    batch_wait_max_us = waits.max_us(),
                    "WAL fsyncs"
                );
            }
            // Another thread may be waiting with answers now durable.
            shared.changed.notify_all();
            continue;
        }
        if q.closed && q.pending.is_empty() && q.in_flight == 0 {
            drop(q);
            shared.changed.notify_all();
            return Ok(());
        }
        q = shared.changed.wait(q).unwrap_or_else(|p| p.into_inner());
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
    use std::sync::mpsc;

    type Log = Arc<Mutex<Vec<&'static str>>>;

    fn push(shared: &Shared, log: &Log, name: &'static str, committed: bool) {
        let log = log.clone();
        shared.push(Box::new(move || log.lock().unwrap().push(name)), committed);
    }

    fn queue(log: &Log, items: &[(&'static str, bool)]) -> Shared {
        let shared = Shared::new();
        for &(name, committed) in items {
            push(&shared, log, name, committed);
        }
        shared.close();
        shared
    }

    #[test]
    fn committed_answers_wait_for_a_sync_and_keep_their_order() {
        let log = Log::default();
        let shared = queue(&log, &[("read", false), ("write", true), ("replay", false)]);
        let l = log.clone();
        answer_after_sync(&shared, || {
            l.lock().unwrap().push("fsync");
            Ok(())
        })
        .unwrap();
        assert_eq!(*log.lock().unwrap(), ["read", "fsync", "write", "replay"]);
    }

    #[test]
    fn answers_that_wrote_nothing_need_no_sync() {
        let log = Log::default();
        let shared = queue(&log, &[("read", false)]);
        answer_after_sync(&shared, || panic!("no fsync without a commit")).unwrap();
        assert_eq!(*log.lock().unwrap(), ["read"]);
    }

    #[test]
    fn a_failed_sync_answers_nobody() {
        let log = Log::default();
        let shared = queue(&log, &[("write", true), ("read", false)]);
        let failed = answer_after_sync(&shared, || Err(std::io::Error::other("disk gone")));
        assert!(failed.is_err());
        assert!(log.lock().unwrap().is_empty());
    }

    /// Two threads, the first one's fsync held until the test lets it go:
    /// a batch committed meanwhile gets its own fsync at once, whose end
    /// answers both (it began after both commits), while a commit made
    /// after an fsync began is never answered by that fsync.
    #[test]
    fn a_commit_during_an_fsync_starts_another_and_only_later_fsyncs_answer_it() {
        let log = Log::default();
        let shared = Arc::new(Shared::new());
        let (began, first_began) = mpsc::channel::<()>();
        let (release, held) = mpsc::channel::<()>();
        let held = Mutex::new(held);
        let calls = Arc::new(Mutex::new(0));
        let spawn = |shared: Arc<Shared>, log: Log, began: mpsc::Sender<()>| {
            let calls = calls.clone();
            let held = &held;
            move || {
                answer_after_sync(&shared, || {
                    let n = {
                        let mut c = calls.lock().unwrap();
                        *c += 1;
                        *c
                    };
                    if n == 1 {
                        began.send(()).unwrap();
                        held.lock().unwrap().recv().unwrap();
                        log.lock().unwrap().push("fsync 1 ends");
                    } else {
                        log.lock().unwrap().push("fsync 2 ends");
                    }
                    Ok(())
                })
                .unwrap()
            }
        };
        std::thread::scope(|s| {
            push(&shared, &log, "w1", true);
            s.spawn(spawn(shared.clone(), log.clone(), began.clone()));
            first_began.recv().unwrap();
            push(&shared, &log, "w2", true);
            s.spawn(spawn(shared.clone(), log.clone(), began.clone()));
            // The second fsync ends while the first is held: both answered.
            while log.lock().unwrap().len() < 3 {
                std::thread::yield_now();
            }
            assert_eq!(*log.lock().unwrap(), ["fsync 2 ends", "w1", "w2"]);
            release.send(()).unwrap();
            shared.close();
        });
        assert_eq!(
            *log.lock().unwrap(),
            ["fsync 2 ends", "w1", "w2", "fsync 1 ends"]
        );
        // And the other way round: one thread, a commit after its fsync began.
        let log = Log::default();
        let shared = Shared::new();
        push(&shared, &log, "w1", true);
        let mut n = 0;
        let (s2, l2) = (&shared, log.clone());
        answer_after_sync(&shared, || {
            n += 1;
            l2.lock()
                .unwrap()
                .push(if n == 1 { "fsync 1" } else { "fsync 2" });
            if n == 1 {
                push(s2, &l2, "w2", true);
                s2.close();
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(*log.lock().unwrap(), ["fsync 1", "w1", "fsync 2", "w2"]);
    }

    #[test]
    fn dropped_without_finish_the_threads_still_answer_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let durability = start(&dir.path().join("x.db")).unwrap();
        let shared = durability.shared.clone();
        let (tx, rx) = mpsc::channel();
        durability.answer_when_durable(Box::new(move || tx.send("read").unwrap()), false);
        drop(durability);
        assert_eq!(rx.recv().unwrap(), "read");
        // Each thread holds a clone of `shared` until it returns.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&shared) > 1 {
            assert!(Instant::now() < deadline, "the sync threads did not end");
            std::thread::yield_now();
        }
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
