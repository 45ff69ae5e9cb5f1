//! Live subscribers (`StreamEvents --follow`): each has its own filter,
//! applied here at the source, and its own queue, bounded by events and by
//! bytes. The pipeline never waits for a subscriber: when a queue is full
//! the event is skipped for that subscriber only, counted by kind, and the
//! subscriber is told how many of which kind it lost before its next event.
//! A filtered subscriber (exec, listen, account) thus never loses its kinds
//! to a flood of others.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
};

use tokio::sync::mpsc;

use crate::{
    event::{Event, EventKind},
    recorder::buffer::charged_bytes,
    util::lock,
    util::stats::Counters,
};

/// Most subscribers at once; one more is refused.
pub const MAX_SUBSCRIBERS: usize = 64;

/// Which events a subscriber wants (empty sets: all).
#[derive(Debug, Default, Clone)]
pub struct LiveFilter {
    pub kinds: HashSet<EventKind>,
    pub pids: HashSet<u32>,
}

impl LiveFilter {
    pub fn matches(&self, ev: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&ev.kind()))
            && (self.pids.is_empty() || self.pids.contains(&ev.pid()))
    }
}

struct Sub {
    filter: LiveFilter,
    tx: mpsc::UnboundedSender<(Arc<Event>, usize)>,
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    max_events: usize,
    max_bytes: usize,
    /// Skipped events by kind number, not yet announced.
    lost: [AtomicU64; EventKind::ALL.len() + 1],
    gone: AtomicBool,
}

/// Every live subscriber.
pub struct Subscribers {
    subs: Mutex<Vec<Arc<Sub>>>,
    /// Events skipped over all subscribers (`stream_drops`).
    counters: Arc<Counters>,
}

#[derive(Debug, thiserror::Error)]
#[error("too many live subscribers (at most {MAX_SUBSCRIBERS})")]
pub struct TooMany;

impl Subscribers {
    pub fn new(counters: Arc<Counters>) -> Self {
        Subscribers {
            subs: Mutex::new(Vec::new()),
            counters,
        }
    }

    /// A new subscriber; it gets every event published from now on that
    /// matches `filter`.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: LiveFilter,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Subscription, TooMany> {
        let (tx, rx) = mpsc::unbounded_channel();
        let sub = Arc::new(Sub {
            filter,
            tx,
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            lost: std::array::from_fn(|_| AtomicU64::new(0)),
            gone: AtomicBool::new(false),
        });
        let mut subs = lock(&self.subs);
        subs.retain(|s| !s.gone.load(Relaxed));
        if subs.len() >= MAX_SUBSCRIBERS {
            return Err(TooMany);
        }
        subs.push(sub.clone());
        Ok(Subscription { rx, sub })
    }

    pub fn count(&self) -> usize {
        lock(&self.subs).len()
    }

    /// Hands `events` to every subscriber that wants them; never blocks.
    pub fn publish(&self, events: &[Arc<Event>]) {
        let mut subs = lock(&self.subs);
        if subs.is_empty() {
            return;
        }
        let mut any_gone = false;
        for s in subs.iter() {
            if s.gone.load(Relaxed) {
                any_gone = true;
                continue;
            }
            for ev in events {
                if !s.filter.matches(ev) {
                    continue;
                }
                let size = charged_bytes(ev);
                let full = s.queued.load(Relaxed) >= s.max_events
                    || s.queued_bytes.load(Relaxed) + size > s.max_bytes;
                if full {
                    s.lost[ev.kind() as usize].fetch_add(1, Relaxed);
                    self.counters.stream_drops.fetch_add(1, Relaxed);
                    continue;
                }
                s.queued.fetch_add(1, Relaxed);
                s.queued_bytes.fetch_add(size, Relaxed);
                if s.tx.send((ev.clone(), size)).is_err() {
                    s.gone.store(true, Relaxed);
                    any_gone = true;
                    break;
                }
            }
        }
        if any_gone {
            subs.retain(|s| !s.gone.load(Relaxed));
        }
    }
}

/// One subscriber's end.
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<(Arc<Event>, usize)>,
    sub: Arc<Sub>,
}

impl Subscription {
    /// The next event; `None` when the agent stops publishing.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        let (ev, size) = self.rx.recv().await?;
        self.sub.queued.fetch_sub(1, Relaxed);
        self.sub.queued_bytes.fetch_sub(size, Relaxed);
        Some(ev)
    }

    /// The next event if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        let (ev, size) = self.rx.try_recv().ok()?;
        self.sub.queued.fetch_sub(1, Relaxed);
        self.sub.queued_bytes.fetch_sub(size, Relaxed);
        Some(ev)
    }

    /// Events skipped since the last call, by kind (only kinds with losses).
    pub fn take_lost(&self) -> Vec<(EventKind, u64)> {
        let mut out = Vec::new();
        for k in EventKind::ALL {
            let n = self.sub.lost[k as usize].swap(0, Relaxed);
            if n > 0 {
                out.push((k, n));
            }
        }
        out
    }

    /// Marks events skipped by the subscriber's own end (its transport
    /// was full), so that they are announced like the others.
    pub fn note_lost(&self, kind: EventKind) {
        self.sub.lost[kind as usize].fetch_add(1, Relaxed);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.sub.gone.store(true, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::test_support, event::Detail};

    fn exit(seq: u64) -> Arc<Event> {
        Arc::new(test_support::event(seq, 1, Detail::Exit { status: 0 }))
    }

    fn listen(seq: u64) -> Arc<Event> {
        let mut e = test_support::event(seq, 1, Detail::Exit { status: 0 });
        e.record.detail = test_support::listen_detail();
        Arc::new(e)
    }

    #[tokio::test]
    async fn a_filtered_subscriber_keeps_its_kinds_through_a_flood() {
        let subs = Arc::new(Subscribers::new(Arc::new(Counters::default())));
        let filter = LiveFilter {
            kinds: [EventKind::NetListen].into_iter().collect(),
            ..Default::default()
        };
        let mut only_listens = subs.subscribe(filter, 16, 1 << 20).unwrap();
        let mut everything = subs.subscribe(LiveFilter::default(), 16, 1 << 20).unwrap();
        let mut batch = Vec::new();
        for seq in 0..1000 {
            batch.push(if seq % 100 == 0 {
                listen(seq)
            } else {
                exit(seq)
            });
        }
        subs.publish(&batch);
        let mut got = Vec::new();
        while let Ok((ev, size)) = only_listens.rx.try_recv() {
            only_listens.sub.queued.fetch_sub(1, Relaxed);
            only_listens.sub.queued_bytes.fetch_sub(size, Relaxed);
            got.push(ev.seq);
        }
        assert_eq!(got, (0..10).map(|i| i * 100).collect::<Vec<_>>());
        assert!(only_listens.take_lost().is_empty());
        // The unfiltered one got its first 16 and was told of the rest.
        assert_eq!(everything.recv().await.map(|e| e.seq), Some(0));
        let lost = everything.take_lost();
        let total: u64 = lost.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 1000 - 16);
        assert!(lost.contains(&(EventKind::Exit, 990 - 15)));
        assert_eq!(subs.counters.stream_drops.load(Relaxed), 1000 - 16);
        drop(everything);
        subs.publish(&batch[..1]);
        assert_eq!(subs.count(), 1, "a dropped subscription is forgotten");
    }
}
