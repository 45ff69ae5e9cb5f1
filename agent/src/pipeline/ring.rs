//! Reading the kernel's ring buffers: registered with tokio so a burst
//! wakes the reader, and each reading step timed.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};

/// A ring buffer registered with tokio, readable when the kernel wakes
/// its consumer.
pub fn register(ring: RingBuf<MapData>) -> std::io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
    // for as long as it lives; the AsyncFd owns the ring buffer.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Times one pipeline step: its wall-clock duration, and of it the time the
/// thread was blocked (neither running nor waiting for a CPU: a lock, the
/// disk), from the scheduler's per-thread accounting. A machine too busy
/// to run the agent makes steps long but not blocked.
pub struct StepClock {
    wall: std::time::Instant,
    sched: Option<(u64, u64)>,
}

thread_local! {
    static SCHEDSTAT: Option<std::fs::File> = std::fs::File::open("/proc/thread-self/schedstat").ok();
}

/// This thread's (on-CPU ns, run-queue wait ns) so far.
fn schedstat() -> Option<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    SCHEDSTAT.with(|f| {
        let f = f.as_ref()?;
        let mut buf = [0u8; 96];
        let n = f.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let mut it = text.split_ascii_whitespace().map(str::parse::<u64>);
        Some((it.next()?.ok()?, it.next()?.ok()?))
    })
}

impl StepClock {
    pub fn start() -> Self {
        StepClock {
            wall: std::time::Instant::now(),
            sched: schedstat(),
        }
    }

    /// Duration, and of it the blocked time (when the kernel tells).
    pub fn finish(self) -> (Duration, Option<Duration>) {
        let took = self.wall.elapsed();
        let blocked = match (self.sched, schedstat()) {
            (Some((cpu0, wait0)), Some((cpu1, wait1))) => {
                let busy = cpu1.saturating_sub(cpu0) + wait1.saturating_sub(wait0);
                Some(took.saturating_sub(Duration::from_nanos(busy)))
            }
            _ => None,
        };
        (took, blocked)
    }
}
