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

/// Locks `m`, also when a panic poisoned it: the data behind every lock
/// here stays consistent between statements.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
