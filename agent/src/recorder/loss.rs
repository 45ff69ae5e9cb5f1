//! What was lost, by kind and by time: a sparse ledger of per-second
//! counts. Buffers note the events they evict (at the events' own time),
//! the pipeline notes kernel drops (at the time it saw them), and a
//! snapshot turns the part of a ledger that overlaps its window into gaps,
//! one per kind.

use std::collections::BTreeMap;

use crate::event::EventKind;

const NS: u64 = 1_000_000_000;

/// Per-second, per-kind counts, forgetting seconds older than a horizon.
#[derive(Debug, Default, Clone)]
pub struct LossLedger {
    /// (second since the epoch, kind number) → count.
    counts: BTreeMap<(u64, u16), u64>,
    total: u64,
}

/// Losses of one kind over a stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindLoss {
    pub kind: EventKind,
    /// First and last second with a loss, as wall-clock ns (the last one
    /// is the end of its second).
    pub from_ns: u64,
    pub to_ns: u64,
    pub lost: u64,
}

impl LossLedger {
    /// Notes `n` events of `kind` lost at `time_ns`.
    pub fn note(&mut self, kind: EventKind, time_ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        *self.counts.entry((time_ns / NS, kind as u16)).or_default() += n;
        self.total += n;
    }

    /// Every loss noted, including forgotten ones.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Forgets seconds before `before_ns`.
    pub fn forget_before(&mut self, before_ns: u64) {
        let keep = self.counts.split_off(&(before_ns / NS, 0));
        self.counts = keep;
    }

    /// Losses whose second overlaps [from_ns, to_ns], per kind, in kind
    /// order.
    pub fn within(&self, from_ns: u64, to_ns: u64) -> Vec<KindLoss> {
        let mut out: Vec<KindLoss> = Vec::new();
        for (&(sec, k), &n) in self
            .counts
            .range((from_ns / NS, 0)..=(to_ns / NS, u16::MAX))
        {
            let Some(kind) = EventKind::from_raw(k) else {
                continue;
            };
            let (start, end) = (sec * NS, sec * NS + NS - 1);
            match out.iter_mut().find(|l| l.kind == kind) {
                Some(l) => {
                    l.from_ns = l.from_ns.min(start);
                    l.to_ns = l.to_ns.max(end);
                    l.lost += n;
                }
                None => out.push(KindLoss {
                    kind,
                    from_ns: start,
                    to_ns: end,
                    lost: n,
                }),
            }
        }
        out.sort_by_key(|l| l.kind as u16);
        out
    }

    /// Whether no second is remembered.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Refusals of one kind over time, kept by a structure that counts rather
/// than remembers (a snapshot's capped after-part).
#[derive(Debug, Default, Clone)]
pub struct KindCounts {
    by_kind: Vec<KindLoss>,
}

impl KindCounts {
    pub fn note(&mut self, kind: EventKind, time_ns: u64) {
        match self.by_kind.iter_mut().find(|l| l.kind == kind) {
            Some(l) => {
                l.from_ns = l.from_ns.min(time_ns);
                l.to_ns = l.to_ns.max(time_ns);
                l.lost += 1;
            }
            None => self.by_kind.push(KindLoss {
                kind,
                from_ns: time_ns,
                to_ns: time_ns,
                lost: 1,
            }),
        }
    }

    pub fn total(&self) -> u64 {
        self.by_kind.iter().map(|l| l.lost).sum()
    }

    /// Adds `other`'s counts, kind by kind.
    pub fn merge(&mut self, other: &KindCounts) {
        for o in &other.by_kind {
            match self.by_kind.iter_mut().find(|l| l.kind == o.kind) {
                Some(l) => {
                    l.from_ns = l.from_ns.min(o.from_ns);
                    l.to_ns = l.to_ns.max(o.to_ns);
                    l.lost += o.lost;
                }
                None => self.by_kind.push(*o),
            }
        }
    }

    pub fn losses(&self) -> Vec<KindLoss> {
        let mut v = self.by_kind.clone();
        v.sort_by_key(|l| l.kind as u16);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_kind_within_a_window_and_forgets_old_seconds() {
        let mut l = LossLedger::default();
        l.note(EventKind::FileWrite, 10 * NS + 5, 3);
        l.note(EventKind::FileWrite, 12 * NS, 2);
        l.note(EventKind::Exec, 11 * NS, 1);
        l.note(EventKind::FileUnlink, 20 * NS, 7);
        let w = l.within(10 * NS + 500, 12 * NS);
        assert_eq!(
            w,
            vec![
                KindLoss {
                    kind: EventKind::Exec,
                    from_ns: 11 * NS,
                    to_ns: 12 * NS - 1,
                    lost: 1
                },
                KindLoss {
                    kind: EventKind::FileWrite,
                    from_ns: 10 * NS,
                    to_ns: 13 * NS - 1,
                    lost: 5
                },
            ]
        );
        l.forget_before(12 * NS);
        assert_eq!(l.within(0, 30 * NS).len(), 2, "write at 12 s and unlink");
        assert_eq!(l.total(), 13, "the total keeps what was forgotten");
    }
}
