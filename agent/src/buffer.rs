//! The host event buffer: the most recent events, bounded by memory. When
//! full, the oldest events go first; every eviction is counted.

use std::{collections::VecDeque, sync::Arc};

use crate::event::Event;

#[derive(Debug)]
pub struct EventBuffer {
    events: VecDeque<(Arc<Event>, usize)>,
    bytes: usize,
    capacity: usize,
    evicted: u64,
}

/// A buffer's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct BufferStats {
    pub events: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    pub evicted: u64,
}

impl EventBuffer {
    pub fn new(capacity_bytes: usize) -> Self {
        EventBuffer {
            events: VecDeque::new(),
            bytes: 0,
            capacity: capacity_bytes,
            evicted: 0,
        }
    }

    pub fn push(&mut self, ev: Arc<Event>) {
        let size = ev.approx_bytes() + std::mem::size_of::<(Arc<Event>, usize)>();
        self.bytes += size;
        self.events.push_back((ev, size));
        while self.bytes > self.capacity {
            let Some((_, old)) = self.events.pop_front() else {
                break;
            };
            self.bytes -= old;
            self.evicted += 1;
        }
    }

    /// Removes the oldest event (counted as evicted); its size in bytes.
    pub fn evict_oldest(&mut self) -> Option<usize> {
        let (_, size) = self.events.pop_front()?;
        self.bytes -= size;
        self.evicted += 1;
        Some(size)
    }

    /// Events oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Arc<Event>> {
        self.events.iter().map(|(e, _)| e)
    }

    pub fn stats(&self) -> BufferStats {
        BufferStats {
            events: self.events.len() as u64,
            bytes: self.bytes as u64,
            capacity_bytes: self.capacity as u64,
            evicted: self.evicted,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{Detail, Record, Task};

    pub(crate) fn event(seq: u64, pid: u32, detail: Detail) -> Event {
        Event {
            seq,
            time_ns: seq * 1000,
            record: Record {
                boot_ns: seq,
                cpu: 0,
                task: Task {
                    pid,
                    tid: pid,
                    ppid: 1,
                    uid: 0,
                    gid: 0,
                    loginuid: None,
                    cgroup_id: 1,
                    start_ns: 0,
                    comm: "t".into(),
                    has_tty: false,
                },
                detail,
            },
            image: crate::lineage::Image::root(
                pid,
                0,
                Arc::from("/bin/t"),
                Arc::from(vec!["t".to_string()]),
            ),
            scope: crate::scope::Scope::Host,
            unit: None,
        }
    }

    #[test]
    fn evicts_oldest_beyond_capacity_and_counts() {
        let one = event(0, 1, Detail::Exit { status: 0 }).approx_bytes()
            + std::mem::size_of::<(Arc<Event>, usize)>();
        let mut b = EventBuffer::new(one * 3);
        for seq in 1..=5 {
            b.push(Arc::new(event(seq, 1, Detail::Exit { status: 0 })));
        }
        let seqs: Vec<u64> = b.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(
            b.stats(),
            BufferStats {
                events: 3,
                bytes: one as u64 * 3,
                capacity_bytes: one as u64 * 3,
                evicted: 2
            }
        );
    }
}
