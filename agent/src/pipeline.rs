//! Ring buffer → decoder → process table → host buffer → live subscribers.

use std::{sync::atomic::Ordering::Relaxed, sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    clock::BootClock,
    decode::decode,
    event::Event,
    state::{lock, State},
};

/// Events handed to the buffer and subscribers at once.
const BATCH: usize = 256;

/// Turns kernel records into recorded events.
struct Recorder {
    state: Arc<State>,
    clock: BootClock,
    seq: u64,
    batch: Vec<Arc<Event>>,
}

impl Recorder {
    /// Records everything pending in the ring buffer.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        let state = self.state.clone();
        let mut procs = lock(&state.procs);
        while let Some(item) = ring.next() {
            let rec = match decode(&item) {
                Ok(rec) => rec,
                Err(err) => {
                    state.counters.decode_errors.fetch_add(1, Relaxed);
                    tracing::debug!(%err, "undecodable record");
                    continue;
                }
            };
            drop(item);
            let (exe, argv) = procs.apply(&rec);
            self.seq += 1;
            state.counters.add_seen(rec.detail.kind(), 1);
            self.batch.push(Arc::new(Event {
                seq: self.seq,
                time_ns: self.clock.wall_ns(rec.boot_ns),
                record: rec,
                exe,
                argv,
            }));
            if self.batch.len() >= BATCH {
                self.publish();
            }
        }
        drop(procs);
        self.publish();
    }

    fn publish(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        {
            let mut buffer = lock(&self.state.buffer);
            for ev in &self.batch {
                buffer.push(ev.clone());
            }
        }
        for ev in self.batch.drain(..) {
            // No receivers is not an error: nobody is streaming.
            let _ = self.state.live.send(ev);
        }
    }
}

/// Reads and records events until `shutdown` fires: on every poll tick, and
/// sooner when the kernel wakes us because a burst is filling the ring.
pub async fn run(
    ring: RingBuf<MapData>,
    state: Arc<State>,
    exited_grace: Duration,
    poll_interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
    // for as long as it lives; the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut rec = Recorder {
        state,
        clock: BootClock::sample(),
        seq: 0,
        batch: Vec::with_capacity(BATCH),
    };
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                rec.drain(ring.get_mut());
                return Ok(());
            }
            _ = housekeeping.tick() => {
                rec.clock = BootClock::sample();
                let now = BootClock::boot_now_ns();
                lock(&rec.state.procs).prune(now, exited_grace.as_nanos() as u64);
            }
            _ = poll.tick() => rec.drain(ring.get_mut()),
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                rec.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
        }
    }
}
