//! Ring buffer → decoder → process table → host buffer → live subscribers.

use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::{
    clock::BootClock,
    decode::decode,
    event::Event,
    state::{lock, State},
};

/// Reads and records events until `shutdown` fires.
pub async fn run(
    ring: RingBuf<MapData>,
    state: Arc<State>,
    exited_grace: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
    // for as long as it lives; the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut clock = BootClock::sample();
    let mut seq = 0u64;
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let mut batch: Vec<Arc<Event>> = Vec::with_capacity(256);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = housekeeping.tick() => {
                clock = BootClock::sample();
                let now = BootClock::boot_now_ns();
                lock(&state.procs).prune(now, exited_grace.as_nanos() as u64);
            }
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                {
                    let mut procs = lock(&state.procs);
                    while let Some(item) = ring.next() {
                        let rec = match decode(&item) {
                            Ok(rec) => rec,
                            Err(err) => {
                                state.counters.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tracing::debug!(%err, "undecodable record");
                                continue;
                            }
                        };
                        drop(item);
                        let (exe, argv) = procs.apply(&rec);
                        seq += 1;
                        state.counters.add_seen(rec.detail.kind(), 1);
                        batch.push(Arc::new(Event {
                            seq,
                            time_ns: clock.wall_ns(rec.boot_ns),
                            record: rec,
                            exe,
                            argv,
                        }));
                        if batch.len() == batch.capacity() {
                            publish(&state, &mut batch);
                        }
                    }
                }
                publish(&state, &mut batch);
                guard.clear_ready();
            }
        }
    }
}

fn publish(state: &State, batch: &mut Vec<Arc<Event>>) {
    if batch.is_empty() {
        return;
    }
    {
        let mut buffer = lock(&state.buffer);
        for ev in batch.iter() {
            buffer.push(ev.clone());
        }
    }
    for ev in batch.drain(..) {
        // No receivers is not an error: nobody is streaming.
        let _ = state.live.send(ev);
    }
}
