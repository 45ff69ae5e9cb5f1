//! Counters the pipeline and the API update, read by `GetStats`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use fdr_common::{EventKind, MAX_KINDS};

#[derive(Debug)]
pub struct Counters {
    seen: [AtomicU64; MAX_KINDS as usize],
    pub decode_errors: AtomicU64,
    /// Events skipped for slow stream clients.
    pub stream_drops: AtomicU64,
    pub subscribers: AtomicU32,
    /// The longest single step of the pipeline task (reading, recording,
    /// housekeeping, closing snapshots), in µs: how long capture stood still.
    pub pipeline_max_step_us: AtomicU64,
    /// The longest time a single pipeline step was blocked (µs).
    pub pipeline_max_blocked_us: AtomicU64,
    /// Pipeline steps blocked for longer than 100 ms.
    pub pipeline_slow_steps: AtomicU64,
    /// Pipeline steps so far (at least one a second while the pipeline
    /// runs: its housekeeping): the systemd watchdog is fed and health
    /// sees the pipeline advance while it grows.
    pub pipeline_steps: AtomicU64,
    /// The process table's counts as of the pipeline's last housekeeping
    /// (so that `GetStats` never waits for the table's lock): tracked,
    /// live, exited, pruned, reaped.
    pub processes: [AtomicU64; 5],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            seen: std::array::from_fn(|_| AtomicU64::new(0)),
            decode_errors: AtomicU64::new(0),
            stream_drops: AtomicU64::new(0),
            subscribers: AtomicU32::new(0),
            pipeline_max_step_us: AtomicU64::new(0),
            pipeline_max_blocked_us: AtomicU64::new(0),
            pipeline_slow_steps: AtomicU64::new(0),
            pipeline_steps: AtomicU64::new(0),
            processes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    pub fn add_seen(&self, kind: EventKind, n: u64) {
        if let Some(c) = self.seen.get(kind as usize) {
            c.fetch_add(n, Relaxed);
        }
    }

    /// Notes how long one pipeline step took, and how long of it the
    /// pipeline was blocked (a lock, the disk; not waiting for a CPU).
    pub fn pipeline_step(&self, took: std::time::Duration, blocked: Option<std::time::Duration>) {
        self.pipeline_steps.fetch_add(1, Relaxed);
        let us = |d: std::time::Duration| d.as_micros().min(u64::MAX as u128) as u64;
        self.pipeline_max_step_us.fetch_max(us(took), Relaxed);
        if let Some(b) = blocked {
            self.pipeline_max_blocked_us.fetch_max(us(b), Relaxed);
            if b > std::time::Duration::from_millis(100) {
                self.pipeline_slow_steps.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn seen(&self, kind: EventKind) -> u64 {
        self.seen.get(kind as usize).map_or(0, |c| c.load(Relaxed))
    }
}

/// Counts a stream subscriber for as long as it lives.
pub struct SubscriberGuard(std::sync::Arc<Counters>);

impl SubscriberGuard {
    pub fn new(c: std::sync::Arc<Counters>) -> Self {
        c.subscribers.fetch_add(1, Relaxed);
        SubscriberGuard(c)
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Relaxed);
    }
}
