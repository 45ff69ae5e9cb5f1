//! Small helpers every layer uses: locking, wall-clock time, text clipping
//! and lossless byte text, host facts, counters. Imports no stage.

pub mod glob;
pub mod host;
pub mod mem;
pub mod notify;
pub mod stats;
pub mod text;

use std::sync::{Mutex, MutexGuard};

pub use text::{clip, clip_to};

/// A wait for a lock longer than this is logged (debug) with the waiter's
/// place; one over [`SLOW_LOCK_WAIT`] is a warning: someone held it
/// across slow work, or a busy holder starved the waiter (capture, or an
/// API reply, stood still meanwhile).
const LONG_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(50);
const SLOW_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Locks `m`, also when a panic poisoned it: the data behind every lock
/// here stays consistent between statements. A contended wait is timed
/// (an uncontended lock costs one `try_lock`).
#[track_caller]
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            let t = std::time::Instant::now();
            let g = m.lock().unwrap_or_else(|e| e.into_inner());
            let waited = t.elapsed();
            if waited > SLOW_LOCK_WAIT {
                tracing::warn!(
                    at = %std::panic::Location::caller(),
                    ms = waited.as_millis() as u64,
                    "waited long for a lock"
                );
            } else if waited > LONG_LOCK_WAIT {
                tracing::debug!(
                    at = %std::panic::Location::caller(),
                    ms = waited.as_millis() as u64,
                    "waited for a lock"
                );
            }
            g
        }
    }
}

/// Wall-clock time now, nanoseconds since the Unix epoch (0 before 1970).
/// The one place the agent reads the wall clock for a timestamp.
pub fn now_ns() -> u64 {
    unix_ns(std::time::SystemTime::now())
}

/// `t` as nanoseconds since the Unix epoch (0 before 1970).
pub fn unix_ns(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
