//! Stage 8, the flight recorder: a rolling buffer per scope (each
//! container, and the host) under one memory budget ([`buffer`]), the
//! snapshots that freeze a window of a scope's history — before and after
//! a moment — for the store ([`snapshot`]), what was lost and when
//! ([`loss`]), and live subscribers' bounded queues ([`live`]), which
//! hold a new container's events briefly for its name ([`naming`]).
//!
//! Takes: recorded events (kernel, derived, raised by analysis), freeze
//! requests. Gives: buffered history, closed snapshots to commit, live
//! streams. Imports: the foundation and the stages before it.

pub mod buffer;
pub mod codec;
pub mod live;
pub mod loss;
pub mod naming;
pub mod snapshot;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
};

use crate::{
    attribution::scope::Scope,
    event::Event,
    recorder::buffer::{BufferStats, EventBuffer},
    recorder::loss::KindLoss,
};

/// Limits of the buffers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes one scope may hold; its oldest events go first beyond it
    /// (bulk kinds before critical ones, see [`crate::recorder::buffer`]).
    pub scope_quota: usize,
    /// Bytes of each scope's quota reserved for critical kinds.
    pub critical_reserve: usize,
    /// Bytes all scopes together may hold, less what open snapshots are
    /// charged; beyond it, the largest scope loses its oldest events (so a
    /// noisy container pays for itself).
    pub budget: usize,
    /// How long a container's buffer outlives its last event once the
    /// container is gone, in ns.
    pub grace_ns: u64,
}

struct ScopeBuffer {
    events: EventBuffer,
    /// Wall-clock ns of the newest event.
    last_ns: u64,
    /// A cgroup id of the scope, to tell whether it still exists.
    cgroup_id: u64,
}

/// One rolling buffer per scope.
pub struct ScopeBuffers {
    limits: Limits,
    /// (Hashed with [`codec::Fx`]: once per event, over a container id.)
    scopes: HashMap<Scope, ScopeBuffer, std::hash::BuildHasherDefault<codec::Fx>>,
    bytes: usize,
    /// Bytes charged to the budget outside the buffers (open snapshots).
    charged: Arc<AtomicUsize>,
    /// Events evicted from buffers that were since freed.
    freed_evicted: u64,
    /// The newest event's seq.
    last_seq: u64,
}

impl ScopeBuffers {
    pub fn new(limits: Limits) -> Self {
        ScopeBuffers {
            limits,
            scopes: HashMap::default(),
            bytes: 0,
            charged: Arc::new(AtomicUsize::new(0)),
            freed_evicted: 0,
            last_seq: 0,
        }
    }

    /// The counter through which open snapshots charge their memory to
    /// the budget.
    pub fn charge_handle(&self) -> Arc<AtomicUsize> {
        self.charged.clone()
    }

    /// Bytes charged by open snapshots.
    pub fn charged(&self) -> usize {
        self.charged.load(Relaxed)
    }

    /// Bytes held by the buffers plus those charged by open snapshots.
    pub fn used(&self) -> usize {
        self.bytes + self.charged.load(Relaxed)
    }

    /// Adds an event to its scope's buffer (encoded: the buffer keeps no
    /// reference to it).
    pub fn push<E: std::borrow::Borrow<Event>>(&mut self, ev: E) {
        let ev = ev.borrow();
        let (quota, reserve) = (self.limits.scope_quota, self.limits.critical_reserve);
        if !self.scopes.contains_key(&ev.scope) {
            self.scopes.insert(
                ev.scope.clone(),
                ScopeBuffer {
                    events: EventBuffer::new(ev.scope.clone(), quota, reserve),
                    last_ns: 0,
                    cgroup_id: ev.record.task.cgroup_id,
                },
            );
        }
        let Some(b) = self.scopes.get_mut(&ev.scope) else {
            return;
        };
        b.last_ns = b.last_ns.max(ev.time_ns);
        self.last_seq = self.last_seq.max(ev.seq);
        let delta = b.events.push(ev);
        self.bytes = (self.bytes as isize + delta).max(0) as usize;
        self.enforce_budget();
    }

    /// Evicts from the largest scopes until the budget holds.
    pub fn enforce_budget(&mut self) {
        while self.used() > self.limits.budget {
            let Some(largest) = self.scopes.values_mut().max_by_key(|s| s.events.bytes()) else {
                break;
            };
            match largest.events.evict_one() {
                Some(n) => self.bytes -= n,
                None => break,
            }
        }
    }

    /// Events of `scope`, oldest first (decoded from the buffer).
    pub fn scope(&self, scope: &Scope) -> impl Iterator<Item = Arc<Event>> + '_ {
        self.scopes
            .get(scope)
            .into_iter()
            .flat_map(|b| b.events.iter())
    }

    /// Events of `scope` whose time is within [from_ns, to_ns], oldest
    /// first; the others are not decoded.
    pub fn scope_within(
        &self,
        scope: &Scope,
        from_ns: u64,
        to_ns: u64,
    ) -> impl Iterator<Item = Arc<Event>> + '_ {
        self.scopes.get(scope).into_iter().flat_map(move |b| {
            b.events
                .select(move |h| h.time_ns >= from_ns && h.time_ns <= to_ns)
        })
    }

    /// Every event of `scope` with a seq above `after`, oldest first: its
    /// seq, and the event when `keep` accepts its head (seq, kind, time);
    /// the others are not decoded (for paged queries, which resume from
    /// their last seq).
    pub fn scope_scan_after<'a>(
        &'a self,
        scope: &Scope,
        after: u64,
        keep: impl FnMut(&codec::Head) -> bool + 'a,
    ) -> impl Iterator<Item = (u64, Option<Arc<Event>>)> + 'a {
        self.scopes
            .get(scope)
            .map(|b| b.events.scan_after(after, keep))
            .into_iter()
            .flatten()
    }

    /// Events of `scope` whose head `keep` accepts, oldest first; the
    /// others are not decoded.
    pub fn scope_select<'a>(
        &'a self,
        scope: &Scope,
        keep: impl FnMut(&codec::Head) -> bool + 'a,
    ) -> impl Iterator<Item = Arc<Event>> + 'a {
        self.scopes
            .get(scope)
            .map(|b| b.events.select(keep))
            .into_iter()
            .flatten()
    }

    /// The heads of `scope`'s events within [from_ns, to_ns], oldest
    /// first, with what each is charged as an `Arc<Event>`, without
    /// decoding them.
    pub fn scope_sizes_within(
        &self,
        scope: &Scope,
        from_ns: u64,
        to_ns: u64,
    ) -> impl Iterator<Item = (codec::Head, usize)> + '_ {
        self.scopes.get(scope).into_iter().flat_map(move |b| {
            b.events
                .sizes(move |h| h.time_ns >= from_ns && h.time_ns <= to_ns)
        })
    }

    /// A copy of `scope`'s buffer to read without this lock (`None`: no
    /// event of that scope is buffered).
    pub fn scope_copy(&self, scope: &Scope) -> Option<buffer::EventBuffer> {
        self.scopes.get(scope).map(|b| b.events.copy())
    }

    /// The newest event's seq in `scope` (0 when none).
    pub fn scope_last_seq(&self, scope: &Scope) -> u64 {
        self.scopes
            .get(scope)
            .and_then(|b| b.events.last_seq())
            .unwrap_or(0)
    }

    /// The newest event's seq (0 when nothing was recorded).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Every buffered event, in arrival order, decoded at once (tests and
    /// tools; the API reads a batch at a time, `api::query::backlog_batch`).
    pub fn all(&self) -> Vec<Arc<Event>> {
        let mut v: Vec<Arc<Event>> = self.scopes.values().flat_map(|b| b.events.iter()).collect();
        v.sort_by_key(|e| e.seq);
        v
    }

    pub fn scope_stats(&self, scope: &Scope) -> Option<BufferStats> {
        self.scopes.get(scope).map(|b| b.events.stats())
    }

    /// Events of `scope` evicted whose time falls in [from_ns, to_ns], per
    /// kind.
    pub fn evicted_within(&self, scope: &Scope, from_ns: u64, to_ns: u64) -> Vec<KindLoss> {
        self.scopes
            .get(scope)
            .map(|b| b.events.losses().within(from_ns, to_ns))
            .unwrap_or_default()
    }

    /// Forgets eviction counts of seconds before `before_ns`.
    pub fn forget_losses_before(&mut self, before_ns: u64) {
        for b in self.scopes.values_mut() {
            b.events.forget_losses_before(before_ns);
        }
    }

    /// Scopes with their stats.
    pub fn scopes(&self) -> Vec<(Scope, BufferStats)> {
        let mut v: Vec<_> = self
            .scopes
            .iter()
            .map(|(s, b)| (s.clone(), b.events.stats()))
            .collect();
        v.sort();
        v
    }

    /// Totals over every scope.
    pub fn stats(&self) -> BufferStats {
        let mut t = BufferStats {
            capacity_bytes: self.limits.budget as u64,
            evicted: self.freed_evicted,
            ..BufferStats::default()
        };
        for b in self.scopes.values() {
            let s = b.events.stats();
            t.events += s.events;
            t.bytes += s.bytes;
            t.evicted += s.evicted;
            t.critical_events += s.critical_events;
            t.critical_bytes += s.critical_bytes;
        }
        t
    }

    /// Frees the buffers of containers gone for longer than the grace
    /// period (`gone` says whether a cgroup id no longer exists).
    pub fn free_gone(&mut self, now_ns: u64, gone: impl Fn(u64) -> bool) -> usize {
        let grace = self.limits.grace_ns;
        let dead: Vec<Scope> = self
            .scopes
            .iter()
            .filter(|(s, b)| {
                matches!(s, Scope::Container(_))
                    && now_ns.saturating_sub(b.last_ns) > grace
                    && gone(b.cgroup_id)
            })
            .map(|(s, _)| s.clone())
            .collect();
        for s in &dead {
            if let Some(b) = self.scopes.remove(s) {
                let st = b.events.stats();
                self.bytes -= st.bytes as usize;
                self.freed_evicted += st.evicted + st.events;
            }
        }
        dead.len()
    }

    /// Events of `scope` with a `seq` above `after`, oldest first (for
    /// paged queries, which resume from their last seq).
    /// (The skipped events are not decoded.)
    pub fn scope_after(&self, scope: &Scope, after: u64) -> impl Iterator<Item = Arc<Event>> + '_ {
        self.scopes
            .get(scope)
            .into_iter()
            .flat_map(move |b| b.events.iter_after(after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::test_support::event, event::Detail};

    fn in_scope(seq: u64, scope: &str) -> Arc<Event> {
        let mut e = event(seq, 1, Detail::Exit { status: 0 });
        e.scope = Scope::from_key(scope).unwrap();
        Arc::new(e)
    }

    #[test]
    fn a_noisy_scope_never_evicts_a_quiet_one() {
        // What the quiet scope's three events take (records, chunk, and
        // the dictionary: the images of its events).
        let quiet_key = Scope::from_key("container:quiet").unwrap();
        let quiet_bytes = {
            let mut b = ScopeBuffers::new(Limits {
                scope_quota: 1 << 20,
                critical_reserve: 0,
                budget: 1 << 20,
                grace_ns: 0,
            });
            for seq in 0..3 {
                b.push(in_scope(seq, "container:quiet"));
            }
            b.stats().bytes as usize
        };
        let quota = 64 << 10;
        let mut b = ScopeBuffers::new(Limits {
            scope_quota: quota,
            critical_reserve: 0,
            budget: quota + quiet_bytes - (8 << 10),
            grace_ns: 0,
        });
        for seq in 0..3 {
            b.push(in_scope(seq, "container:quiet"));
        }
        for seq in 3..20_000 {
            b.push(in_scope(seq, "container:noisy"));
        }
        let quiet: Vec<u64> = b.scope(&quiet_key).map(|e| e.seq).collect();
        assert_eq!(quiet, [0, 1, 2]);
        let noisy = b
            .scope_stats(&Scope::from_key("container:noisy").unwrap())
            .unwrap();
        assert!(noisy.evicted > 0);
        assert_eq!(noisy.events + noisy.evicted, 20_000 - 3);
        assert!(
            noisy.bytes as usize <= quota - (8 << 10),
            "the budget, less the quiet scope: {noisy:?}"
        );
        assert!(b.stats().bytes as usize <= quota + quiet_bytes - (8 << 10));
        assert_eq!(b.stats().bytes, b.used() as u64);
    }

    #[test]
    fn gone_containers_are_freed_after_grace() {
        let mut b = ScopeBuffers::new(Limits {
            scope_quota: 1 << 20,
            critical_reserve: 0,
            budget: 1 << 20,
            grace_ns: 10,
        });
        b.push(in_scope(1, "container:a")); // time_ns = 1000
        b.push(in_scope(2, "host"));
        assert_eq!(b.free_gone(1005, |_| true), 0, "within grace");
        assert_eq!(b.free_gone(5000, |_| false), 0, "still there");
        assert_eq!(b.free_gone(5000, |_| true), 1);
        assert_eq!(b.scopes().len(), 1, "the host stays");
        assert_eq!(b.stats().evicted, 1);
    }
}
