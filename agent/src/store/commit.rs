//! The committer: one thread that owns every write to the store, so that
//! neither the pipeline nor the API ever waits for the disk.
//!
//! Work is queued in order (snapshots, model and incident updates) and
//! charged to a byte budget until it is stored. A failed write leaves the
//! work at the head of the queue (a snapshot keeps its finished protobuf),
//! has the database closed and opened again (redb refuses everything after
//! an I/O error until then) and is retried with exponential backoff, from
//! [`BACKOFF_MIN`] to [`BACKOFF_MAX`]; when the disk takes writes again the
//! queue commits in order. While the store is failing, work beyond the
//! byte budget is refused, so the caller can say that it cannot be kept.
//! The thread also renews the id leases (see [`super::store`]) and, while
//! failing with nothing queued, probes the disk with a small write so the
//! health state recovers by itself.

use std::{
    collections::VecDeque,
    panic::AssertUnwindSafe,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use fdr_proto::v1 as pb;

use super::{Encoded, Store, StoreError};

/// First retry delay after a failed write.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the thread looks at the leases and the health state when idle.
/// Leases are used up only by work that is submitted (a snapshot, an
/// incident), which wakes the thread anyway; a reader that finds the
/// database unusable waits at most this long for the reopen.
const TICK: Duration = Duration::from_secs(1);

/// Builds a snapshot's stored form on the committer thread.
pub type Build = Box<dyn FnOnce() -> Encoded + Send>;
/// A write of other tables (models, incidents); called again on retry.
pub type WriteFn = Box<dyn FnMut(&Store) -> Result<(), StoreError> + Send>;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(
        "cannot keep {what}: storage is failing since {since_s:.0} s ({error}) and {count} \
         writes ({bytes} bytes) already wait in memory, the most the queue holds"
    )]
    Full {
        what: String,
        error: String,
        since_s: f64,
        count: u64,
        bytes: u64,
    },
    #[error("cannot keep {what}: the committer has stopped")]
    Stopped { what: String },
}

enum Work {
    Snapshot {
        id: u64,
        build: Option<Build>,
        built: Option<Box<Encoded>>,
    },
    Write {
        what: &'static str,
        f: WriteFn,
    },
}

struct Job {
    id: Option<u64>,
    bytes: usize,
    work: Work,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Bytes of the queued jobs and the one being written.
    bytes: usize,
    /// The job being written: (snapshot id, bytes).
    in_flight: Option<Option<u64>>,
    stop: bool,
    /// Summaries of the snapshots closed and not yet stored (announced by
    /// [`Committer::announce`]), for listing.
    infos: std::collections::BTreeMap<u64, pb::SnapshotInfo>,
    /// Snapshots committed and writes done since start.
    committed: u64,
}

struct Inner {
    store: Arc<Store>,
    queue_bytes: usize,
    q: Mutex<Queue>,
    /// Wakes the thread (new work, stop).
    wake: Condvar,
    /// Wakes `drain` (a job done).
    done: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stops the thread when the last handle goes.
struct Life {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Life {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.wake.notify_all();
    }
}

/// A handle to the committer thread; clones share it.
#[derive(Clone)]
pub struct Committer {
    inner: Arc<Inner>,
    life: Arc<Life>,
}

impl Committer {
    /// Starts the thread. `queue_bytes`: what the queue may hold while the
    /// store is failing (twice that in any case).
    pub fn spawn(store: Arc<Store>, queue_bytes: usize) -> Self {
        let inner = Arc::new(Inner {
            store,
            queue_bytes,
            q: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let t = inner.clone();
        let thread = std::thread::Builder::new()
            .name("fdr-committer".into())
            .spawn(move || run(&t))
            .map_err(|err| tracing::error!(%err, "starting the committer thread"))
            .ok();
        Committer {
            life: Arc::new(Life {
                inner: inner.clone(),
                thread: Mutex::new(thread),
            }),
            inner,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Whether `approx_bytes` more may be queued: always while the store
    /// is healthy (up to twice the budget), else while the queue holds less
    /// than the budget.
    fn room(&self, q: &Queue, approx_bytes: usize, limit: usize) -> bool {
        let after = q.bytes.saturating_add(approx_bytes);
        if after > limit.saturating_mul(2) {
            return false;
        }
        self.inner.store.health().ok || after <= limit
    }

    fn full(&self, q: &Queue, what: String) -> CommitError {
        let h = self.inner.store.health();
        CommitError::Full {
            what,
            error: h.last_error,
            since_s: now_ns().saturating_sub(h.since_ns) as f64 / 1e9,
            count: count(q),
            bytes: q.bytes as u64,
        }
    }

    fn push(&self, job: Job, what: impl FnOnce() -> String) -> Result<(), CommitError> {
        let mut q = self.inner.lock();
        if q.stop {
            if let Some(id) = job.id {
                q.infos.remove(&id);
            }
            return Err(CommitError::Stopped { what: what() });
        }
        if !self.room(&q, job.bytes, self.inner.queue_bytes) {
            if let Some(id) = job.id {
                q.infos.remove(&id);
            }
            return Err(self.full(&q, what()));
        }
        q.bytes += job.bytes;
        q.jobs.push_back(job);
        drop(q);
        self.inner.wake.notify_all();
        Ok(())
    }

    /// Never blocks, never does I/O. `build` runs on the committer thread
    /// and returns the finished snapshot; `approx_bytes` is charged to the
    /// queue until it is stored. Err when the queue (bytes) is full while
    /// the store is failing: the caller reports that the snapshot cannot be
    /// kept.
    pub fn submit(&self, id: u64, approx_bytes: usize, build: Build) -> Result<(), CommitError> {
        self.push(
            Job {
                id: Some(id),
                bytes: approx_bytes,
                work: Work::Snapshot {
                    id,
                    build: Some(build),
                    built: None,
                },
            },
            || format!("snapshot {id}"),
        )
    }

    /// Queues a write of other tables (models, incidents), in order with
    /// the snapshots; `f` is called again when a try fails. Same rule as
    /// [`Committer::submit`].
    pub fn submit_write(
        &self,
        what: &'static str,
        approx_bytes: usize,
        f: WriteFn,
    ) -> Result<(), CommitError> {
        self.push(
            Job {
                id: None,
                bytes: approx_bytes,
                work: Work::Write { what, f },
            },
            || what.to_owned(),
        )
    }

    /// Whether a new snapshot of `approx_bytes` would be kept (for
    /// `CreateSnapshot`'s early answer): while the store is failing, half
    /// the queue stays for the snapshots already open.
    pub fn can_accept(&self, approx_bytes: usize) -> bool {
        let q = self.inner.lock();
        !q.stop && self.room(&q, approx_bytes, self.inner.queue_bytes / 2)
    }

    /// Why [`Committer::can_accept`] said no.
    pub fn refusal(&self, what: String) -> CommitError {
        let q = self.inner.lock();
        if q.stop {
            return CommitError::Stopped { what };
        }
        self.full(&q, what)
    }

    /// Work waiting to be stored: (count, bytes).
    pub fn pending(&self) -> (u64, u64) {
        let q = self.inner.lock();
        (count(&q), q.bytes as u64)
    }

    /// Whether snapshot `id` is queued (it is "open", not "not found").
    pub fn is_pending(&self, id: u64) -> bool {
        let q = self.inner.lock();
        q.in_flight == Some(Some(id))
            || q.infos.contains_key(&id)
            || q.jobs.iter().any(|j| j.id == Some(id))
    }

    /// A snapshot was closed and is about to be submitted: it is pending
    /// (and listed with `info`) from now on, until stored or refused.
    /// Listed as open: it cannot be read before it is stored.
    pub fn announce(&self, mut info: pb::SnapshotInfo) {
        info.open = true;
        self.inner.lock().infos.insert(info.id, info);
    }

    /// Summaries of the announced snapshots not stored yet, by id.
    pub fn pending_infos(&self) -> Vec<pb::SnapshotInfo> {
        self.inner.lock().infos.values().cloned().collect()
    }

    /// Jobs done since start.
    pub fn committed(&self) -> u64 {
        self.inner.lock().committed
    }

    /// Shutdown: wait up to `timeout` for the queue to drain.
    pub fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut q = self.inner.lock();
        while !q.jobs.is_empty() || q.in_flight.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::error!(
                    writes = count(&q),
                    bytes = q.bytes,
                    "storage: writes not committed at shutdown"
                );
                return;
            }
            q = self
                .inner
                .done
                .wait_timeout(q, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Drains (up to `timeout`), then stops the thread and waits for it, so
    /// that the database is closed when this returns.
    pub fn shutdown(&self, timeout: Duration) {
        self.drain(timeout);
        self.inner.lock().stop = true;
        self.inner.wake.notify_all();
        let t = self
            .life
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

/// Queues the mark that snapshot `info` is open (see
/// [`Store::mark_open`]); call right after freezing. Not kept when the
/// queue is full: the snapshot is then simply absent after a crash (its id
/// is never reused).
pub fn mark_open(committer: &Committer, info: &pb::SnapshotInfo) {
    let info = info.clone();
    let id = info.id;
    let write = Box::new(move |s: &Store| s.mark_open(&info));
    if let Err(err) = committer.submit_write("an open snapshot's mark", 256, write) {
        tracing::warn!(%err, id, "open snapshot not marked");
    }
}

fn count(q: &Queue) -> u64 {
    q.jobs.len() as u64 + u64::from(q.in_flight.is_some())
}

use crate::util::now_ns;

enum Next {
    Job(Job),
    /// Nothing queued, but a lease to renew, a failed store to probe or a
    /// database to reopen.
    Maintain,
    Stop,
}

fn next(inner: &Inner) -> Next {
    let store = &inner.store;
    let mut q = inner.lock();
    loop {
        if q.stop {
            if !q.jobs.is_empty() {
                tracing::error!(
                    writes = q.jobs.len(),
                    bytes = q.bytes,
                    "storage: committer stopped with writes not committed"
                );
            }
            return Next::Stop;
        }
        if let Some(j) = q.jobs.pop_front() {
            q.in_flight = Some(j.id);
            return Next::Job(j);
        }
        if store.leases_low() || store.reopen_wanted() || !store.health().ok {
            return Next::Maintain;
        }
        q = inner
            .wake
            .wait_timeout(q, TICK)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Runs `f`, a panic becoming an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let detail = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err(StoreError::Corrupt {
            what: what.to_owned(),
            detail,
        })
    })
}

/// Stores one job; Err leaves it to be retried.
fn execute(store: &Store, job: &mut Job) -> Result<(), StoreError> {
    match &mut job.work {
        Work::Snapshot { id, build, built } => {
            let id = *id;
            if built.is_none() {
                let Some(b) = build.take() else {
                    return Ok(());
                };
                let t = Instant::now();
                match std::panic::catch_unwind(AssertUnwindSafe(b)) {
                    Ok(s) => *built = Some(Box::new(s)),
                    Err(_) => {
                        tracing::error!(id, "building snapshot panicked: it is lost");
                        return Ok(());
                    }
                }
                tracing::debug!(id, ms = t.elapsed().as_millis() as u64, "snapshot built");
            }
            let Some(snap) = built.as_ref() else {
                return Ok(());
            };
            let t = Instant::now();
            let evicted = guarded(&format!("snapshot {id}"), || store.put_encoded(snap))?;
            let events = snap.events;
            tracing::info!(
                id,
                events,
                bytes = snap.bytes.len(),
                uncompressed = snap.raw_bytes,
                ms = t.elapsed().as_millis() as u64,
                "snapshot committed"
            );
            if !evicted.is_empty() {
                tracing::info!(?evicted, "snapshots evicted by retention");
            }
            // Freed now, not when the job is dropped.
            *built = None;
            Ok(())
        }
        Work::Write { what, f } => guarded(what, || f(store)),
    }
}

fn run(inner: &Inner) {
    let store = &inner.store;
    let mut backoff = BACKOFF_MIN;
    // Reopened right after the last failure: no need to again.
    let mut fresh = false;
    loop {
        let mut job = match next(inner) {
            Next::Stop => return,
            Next::Job(j) => Some(j),
            Next::Maintain => None,
        };
        let mut res = Ok(());
        // A store that failed is reopened before it is written to again.
        if (!store.health().ok && !fresh) || store.reopen_wanted() {
            res = store.reopen();
        }
        fresh = false;
        // Leases first: freezing depends on them.
        if res.is_ok() {
            res = guarded("the id leases", || store.renew_leases(false)).map(|_| ());
        }
        if res.is_ok() {
            res = match job.as_mut() {
                Some(j) => execute(store, j),
                None if !store.health().ok => guarded("the health probe", || store.probe()),
                None => Ok(()),
            };
        }
        let mut q = inner.lock();
        q.in_flight = None;
        match res {
            Ok(()) => {
                store.mark_ok();
                backoff = BACKOFF_MIN;
                if let Some(j) = job {
                    q.bytes = q.bytes.saturating_sub(j.bytes);
                    q.committed += 1;
                    if let Some(id) = j.id {
                        q.infos.remove(&id);
                    }
                }
                drop(q);
                inner.done.notify_all();
            }
            Err(err) => {
                store.mark_failed(&err);
                if let Some(j) = job {
                    q.jobs.push_front(j);
                }
                drop(q);
                inner.done.notify_all();
                // At once, so reads work meanwhile (they need no space);
                // the retry reopens again if this fails.
                match store.reopen() {
                    Ok(()) => fresh = true,
                    Err(err) => tracing::warn!(%err, "reopening after a failed write"),
                }
                // Wait, unless stopping.
                let deadline = Instant::now() + backoff;
                let mut q = inner.lock();
                while !q.stop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = inner
                        .wake
                        .wait_timeout(q, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{event::test_support::snap, store::Retention};

    /// A private tmpfs of `size`, unmounted on drop (even when the test
    /// fails).
    struct Tmpfs(PathBuf);

    impl Tmpfs {
        fn mount(tag: &str, size: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("fdr-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mounting a tmpfs (root needed)");
            Tmpfs(dir)
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    /// Writes a file until the filesystem is full.
    fn fill(path: &std::path::Path) {
        use std::io::Write;
        let mut f = std::fs::File::create(path).unwrap();
        let chunk = vec![0x5au8; 16 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn poll(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_full_disk_keeps_work_queued_reopens_and_commits_it_when_space_returns() {
        let fs = Tmpfs::mount("commit-enospc", "4m");
        let store = Arc::new(
            Store::open(
                &fs.0.join("data"),
                Retention {
                    max_snapshots: 100,
                    max_bytes: u64::MAX,
                },
            )
            .unwrap(),
        );
        let c = Committer::spawn(store.clone(), 8 << 20);
        c.submit(1, 1000, Box::new(|| (&snap(1, 1000)).into()))
            .unwrap();
        poll("the first snapshot committed", || c.pending().0 == 0);
        assert!(store.health().ok);

        let filler = fs.0.join("filler");
        fill(&filler);
        for id in 2..=4 {
            c.submit(
                id,
                300 << 10,
                Box::new(move || (&snap(id, 300 << 10)).into()),
            )
            .unwrap();
        }
        poll("the store failing", || !store.health().ok);
        let h = store.health();
        assert!(h.failures >= 1 && !h.last_error.is_empty(), "{h:?}");
        assert!(c.pending().0 >= 1);
        assert!(c.is_pending(4), "queued, not lost");
        // Reads go on while the disk is full.
        let listed = store.list();
        eprintln!("list while full: {:?}", listed.as_ref().map(|l| l.len()));
        eprintln!("reopen while full: {:?}", store.reopen());
        // While failing, the queue holds at most its budget.
        assert!(!c.can_accept(8 << 20));
        let err = c
            .submit(99, 8 << 20, Box::new(|| (&snap(99, 1)).into()))
            .expect_err("over the queue's budget while failing");
        assert!(err.to_string().contains("snapshot 99"), "{err}");
        assert!(!c.is_pending(99));
        // Models and incidents go through the same queue.
        let wrote = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = wrote.clone();
        c.submit_write(
            "test write",
            100,
            Box::new(move |s: &Store| {
                s.probe()?;
                w.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }),
        )
        .unwrap();

        std::fs::remove_file(&filler).unwrap();
        poll("the queue committed", || c.pending() == (0, 0));
        assert!(wrote.load(std::sync::atomic::Ordering::Relaxed));
        let h = store.health();
        assert!(h.ok, "{h:?}");
        assert!(h.reopens >= 1, "{h:?}");
        let ids: Vec<u64> = store.list().unwrap().iter().map(|i| i.id).collect();
        assert_eq!(ids, [1, 2, 3, 4], "in order, nothing lost");
        assert_eq!(
            store.get(3).unwrap().unwrap().info.unwrap().reason.len(),
            300 << 10
        );
        c.shutdown(Duration::from_secs(5));
        drop(c);
        drop(store);
    }

    #[test]
    fn the_committer_renews_the_id_lease_and_drains_at_shutdown() {
        let d = std::env::temp_dir().join(format!("fdr-commit-lease-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let store = Arc::new(
            Store::open(
                &d,
                Retention {
                    max_snapshots: 1000,
                    max_bytes: u64::MAX,
                },
            )
            .unwrap(),
        );
        let c = Committer::spawn(store.clone(), 1 << 20);
        let mut ids = Vec::new();
        for _ in 0..300 {
            let id = loop {
                match store.next_id() {
                    Ok(id) => break id,
                    // The committer renews within a tick or two.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            ids.push(id);
            c.submit(id, 10, Box::new(move || (&snap(id, 10)).into()))
                .unwrap();
        }
        c.shutdown(Duration::from_secs(30));
        assert_eq!(c.pending(), (0, 0));
        assert_eq!(store.count().unwrap(), 300);
        assert_eq!(ids, (1..=300).collect::<Vec<_>>());
        assert!(
            c.submit(1000, 1, Box::new(|| (&snap(1000, 1)).into()))
                .is_err(),
            "stopped"
        );
        drop(c);
        drop(store);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
