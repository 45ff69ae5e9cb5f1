//! One scope's event buffer: the most recent events, bounded by memory,
//! in two classes. Beyond its capacity the buffer evicts *bulk* kinds
//! (writes, unlinks, connects, accepts, forks, exits, …) before
//! *critical* ones (exec, listen, bind, privilege and account changes,
//! sensitive reads, written binaries, container starts and stops, model
//! items and audits): a reserved share of the capacity
//! ([`EventBuffer::new`]'s `reserve`) holds the newest critical events
//! whatever the flood of bulk ones; beyond that share both classes go
//! oldest first. Every eviction is counted per kind, at the evicted
//! event's own time, so a snapshot can say what is missing from its window.

use std::{collections::VecDeque, sync::Arc};

use crate::{
    event::{Event, EventKind},
    recorder::loss::LossLedger,
};

/// Whether a kind is kept before bulk kinds when memory runs short.
pub const fn kept_first(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Exec
            | EventKind::NetListen
            | EventKind::NetBind
            | EventKind::PrivChange
            | EventKind::AccountChange
            | EventKind::SensitiveRead
            | EventKind::BinaryWritten
            | EventKind::ContainerStart
            | EventKind::ContainerStop
            | EventKind::ModelLearned
            | EventKind::Audit
    )
}

/// Bytes an event is charged in a buffer.
pub fn charged_bytes(ev: &Event) -> usize {
    ev.approx_bytes() + std::mem::size_of::<(Arc<Event>, usize)>()
}

#[derive(Debug, Default)]
struct Class {
    events: VecDeque<(Arc<Event>, usize)>,
    bytes: usize,
}

impl Class {
    fn oldest_seq(&self) -> Option<u64> {
        self.events.front().map(|(e, _)| e.seq)
    }
}

#[derive(Debug)]
pub struct EventBuffer {
    bulk: Class,
    critical: Class,
    capacity: usize,
    /// Bytes of critical events protected from bulk pressure.
    reserve: usize,
    evicted: u64,
    /// Evictions by kind, at the evicted events' time.
    losses: LossLedger,
}

/// A buffer's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct BufferStats {
    pub events: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub evicted: u64,
    /// Of `events` and `bytes`, the critical class.
    pub critical_events: u64,
    pub critical_bytes: u64,
}

impl EventBuffer {
    /// A buffer of `capacity_bytes`, of which `reserve_bytes` hold critical
    /// kinds against bulk pressure.
    pub fn new(capacity_bytes: usize, reserve_bytes: usize) -> Self {
        EventBuffer {
            bulk: Class::default(),
            critical: Class::default(),
            capacity: capacity_bytes,
            reserve: reserve_bytes.min(capacity_bytes),
            evicted: 0,
            losses: LossLedger::default(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bulk.bytes + self.critical.bytes
    }

    pub fn len(&self) -> usize {
        self.bulk.events.len() + self.critical.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds an event; returns the bytes it added net of what it evicted.
    pub fn push(&mut self, ev: Arc<Event>) -> isize {
        let size = charged_bytes(&ev);
        let class = if kept_first(ev.kind()) {
            &mut self.critical
        } else {
            &mut self.bulk
        };
        class.bytes += size;
        class.events.push_back((ev, size));
        let mut delta = size as isize;
        while self.bytes() > self.capacity {
            match self.evict_one() {
                Some(n) => delta -= n as isize,
                None => break,
            }
        }
        delta
    }

    /// Evicts one event by the retention rule: bulk first while the
    /// critical class is within its reserve, else the oldest of both.
    /// Returns its size, or `None` when empty.
    pub fn evict_one(&mut self) -> Option<usize> {
        let from_critical = match (self.bulk.oldest_seq(), self.critical.oldest_seq()) {
            (None, None) => return None,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some(b), Some(c)) => self.critical.bytes > self.reserve && c < b,
        };
        let class = if from_critical {
            &mut self.critical
        } else {
            &mut self.bulk
        };
        let (ev, size) = class.events.pop_front()?;
        class.bytes -= size;
        self.evicted += 1;
        self.losses.note(ev.kind(), ev.time_ns, 1);
        Some(size)
    }

    /// Events oldest first (by seq), both classes merged.
    pub fn iter(&self) -> Merged<'_> {
        Merged {
            a: self.bulk.events.iter().peekable(),
            b: self.critical.events.iter().peekable(),
        }
    }

    /// Wall-clock ns of the oldest event still held of each class (bulk,
    /// critical): before it, that class has lost events if it evicted any.
    pub fn oldest_times(&self) -> (Option<u64>, Option<u64>) {
        (
            self.bulk.events.front().map(|(e, _)| e.time_ns),
            self.critical.events.front().map(|(e, _)| e.time_ns),
        )
    }

    /// Evictions by kind and time.
    pub fn losses(&self) -> &LossLedger {
        &self.losses
    }

    /// Forgets eviction counts of seconds before `before_ns` (no snapshot
    /// window can reach them any more).
    pub fn forget_losses_before(&mut self, before_ns: u64) {
        self.losses.forget_before(before_ns);
    }

    pub fn stats(&self) -> BufferStats {
        BufferStats {
            events: self.len() as u64,
            bytes: self.bytes() as u64,
            capacity_bytes: self.capacity as u64,
            evicted: self.evicted,
            critical_events: self.critical.events.len() as u64,
            critical_bytes: self.critical.bytes as u64,
        }
    }
}

type ClassIter<'a> =
    std::iter::Peekable<std::collections::vec_deque::Iter<'a, (Arc<Event>, usize)>>;

/// Two classes' events merged in seq order.
pub struct Merged<'a> {
    a: ClassIter<'a>,
    b: ClassIter<'a>,
}

impl<'a> Iterator for Merged<'a> {
    type Item = &'a Arc<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        let take_a = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((x, _)), Some((y, _))) => x.seq < y.seq,
        };
        let it = if take_a { &mut self.a } else { &mut self.b };
        it.next().map(|(e, _)| e)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (a, b) = (self.a.len(), self.b.len());
        (a + b, Some(a + b))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::event::test_support::event;
    use crate::event::Detail;

    fn exit(seq: u64) -> Arc<Event> {
        Arc::new(event(seq, 1, Detail::Exit { status: 0 }))
    }

    fn listen(seq: u64) -> Arc<Event> {
        let mut e = event(seq, 1, Detail::Exit { status: 0 });
        e.record.detail = crate::event::test_support::listen_detail();
        Arc::new(e)
    }

    #[test]
    fn evicts_oldest_beyond_capacity_and_counts() {
        let one = charged_bytes(&exit(0));
        let mut b = EventBuffer::new(one * 3, 0);
        for seq in 1..=5 {
            b.push(exit(seq));
        }
        let seqs: Vec<u64> = b.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        let st = b.stats();
        assert_eq!(
            (st.events, st.bytes, st.capacity_bytes, st.evicted),
            (3, one as u64 * 3, one as u64 * 3, 2)
        );
        let lost = b.losses().within(0, u64::MAX);
        assert_eq!(lost.len(), 1);
        assert_eq!((lost[0].kind, lost[0].lost), (EventKind::Exit, 2));
    }

    #[test]
    fn a_bulk_flood_never_evicts_the_critical_reserve() {
        let bulk = charged_bytes(&exit(0));
        let crit = charged_bytes(&listen(0));
        // Room for 10 bulk events; 4 critical ones reserved.
        let mut b = EventBuffer::new(bulk * 10, crit * 4);
        b.push(listen(1));
        b.push(listen(2));
        for seq in 3..10_000 {
            b.push(exit(seq));
        }
        b.push(listen(10_000));
        let crit_seqs: Vec<u64> = b
            .iter()
            .filter(|e| kept_first(e.kind()))
            .map(|e| e.seq)
            .collect();
        assert_eq!(crit_seqs, [1, 2, 10_000], "within the reserve: all kept");
        assert!(b.bytes() <= bulk * 10);
        // Merged in seq order.
        let all: Vec<u64> = b.iter().map(|e| e.seq).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(all.first(), Some(&1));
        // Beyond the reserve, old critical events age out like bulk ones.
        for seq in 20_000..20_010 {
            b.push(listen(seq));
        }
        let st = b.stats();
        assert!(st.critical_bytes as usize <= bulk * 10);
        assert!(!b.iter().any(|e| e.seq == 1), "oldest critical aged out");
        assert!(b
            .losses()
            .within(0, u64::MAX)
            .iter()
            .any(|l| l.kind == EventKind::NetListen));
    }
}
