//! Named live events: a live subscriber holds the events of a container
//! the runtime has not named yet, briefly, so that they reach it with the
//! pod, namespace and image (events are named when converted, from the
//! container registry).
//!
//! "Being named" is the registry's [`Naming::Pending`] — the same notion
//! the analyzer's verdict hold uses: a container the pipeline has just
//! shown, or one the watcher is still asking the runtime about. Each
//! subscriber keeps its own [`NameWait`], on its own task (the pipeline
//! never waits, and pays nothing for it; a follower's buffered backlog goes
//! through it too): an event of a pending container
//! is held, with that container's later events behind it (never overtaken
//! by them); other scopes' events pass. The held events go out, in order,
//! when the registry says the container is named (or that no runtime
//! knows it), when the wait is up (`live.name_wait`, 500 ms by default —
//! Tetragon's event cache anchors the figure), or early, unnamed, when the
//! subscriber's hold is full (`live.name_wait_events`,
//! `live.name_wait_bytes`: the container held longest goes first). A
//! container whose events went out unnamed is not held again. Everything
//! is counted ([`NameWaitCounters`], in `GetStats`).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    attribution::{
        containers::{ContainerRegistry, Naming},
        scope::Scope,
    },
    event::Event,
    util::lock,
};

/// Containers remembered as settled (named, or given up on) per
/// subscriber; beyond it the memory is cleared and they are looked up again.
const SETTLED_MAX: usize = 65_536;

/// Bounds of one subscriber's hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameWaitLimits {
    /// Longest an event waits for its container's name; zero: never held.
    pub wait: Duration,
    /// Events held at most over all containers.
    pub events: usize,
    /// Bytes held at most (as `Event::approx_bytes`).
    pub bytes: usize,
}

impl NameWaitLimits {
    pub fn from_config(c: &crate::config::LiveConfig) -> Self {
        NameWaitLimits {
            wait: c.name_wait,
            events: c.name_wait_events.max(1),
            bytes: usize::try_from(c.name_wait_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// What the holds did, over every subscriber since the agent started, in
/// events (an event held for two subscribers counts twice).
#[derive(Debug, Default)]
pub struct NameWaitCounters {
    /// Events held for their container's name.
    pub held: AtomicU64,
    /// Sent named: the runtime answered (or said it does not know the
    /// container) within the wait.
    pub named: AtomicU64,
    /// Sent unnamed when the wait was up.
    pub timed_out: AtomicU64,
    /// Sent unnamed early because the subscriber's hold was full: the
    /// hold's drops (the events are sent, their names are not).
    pub overflowed: AtomicU64,
    /// Events held right now.
    pub holding: AtomicU64,
}

/// The events of one container waiting for its name.
struct Held {
    since: Instant,
    events: Vec<Arc<Event>>,
    bytes: usize,
}

/// Why a container's held events go out.
#[derive(Debug, Clone, Copy)]
enum Release {
    Named,
    TimedOut,
    Overflowed,
}

/// One subscriber's hold; see the module documentation.
pub struct NameWait {
    limits: NameWaitLimits,
    registry: Arc<Mutex<ContainerRegistry>>,
    changes: watch::Receiver<u64>,
    counters: Arc<NameWaitCounters>,
    /// Containers whose events pass: named, known to stay unnamed, or
    /// given up on.
    settled: HashSet<Arc<str>>,
    held: HashMap<Arc<str>, Held>,
    /// Held containers, oldest first (entries of released ones are
    /// skipped when met).
    order: VecDeque<(Instant, Arc<str>)>,
    held_events: usize,
    held_bytes: usize,
    /// Events to send, in order.
    ready: VecDeque<Arc<Event>>,
}

impl NameWait {
    pub fn new(
        limits: NameWaitLimits,
        registry: Arc<Mutex<ContainerRegistry>>,
        counters: Arc<NameWaitCounters>,
    ) -> Self {
        let changes = lock(&registry).naming_changes();
        NameWait {
            limits,
            registry,
            changes,
            counters,
            settled: HashSet::new(),
            held: HashMap::new(),
            order: VecDeque::new(),
            held_events: 0,
            held_bytes: 0,
            ready: VecDeque::new(),
        }
    }

    /// Takes the subscriber's next event: ready at once, or held behind
    /// its container's name.
    pub fn offer(&mut self, ev: Arc<Event>) {
        self.offer_at(ev, Instant::now());
    }

    fn offer_at(&mut self, ev: Arc<Event>, now: Instant) {
        // A subscriber flooded with other events still lets a held
        // container go when its time is up.
        if self.deadline().is_some_and(|d| d <= now) {
            self.recheck(now);
        }
        let Scope::Container(id) = &ev.scope else {
            self.ready.push_back(ev);
            return;
        };
        if self.limits.wait.is_zero() || self.settled.contains(id) {
            self.ready.push_back(ev);
            return;
        }
        if !self.held.contains_key(id) {
            let naming = lock(&self.registry).naming(id);
            if naming != Naming::Pending {
                self.settle(id.clone());
                self.ready.push_back(ev);
                return;
            }
        }
        let bytes = ev.approx_bytes();
        // Room first: the containers held longest go out unnamed.
        while !self.held.is_empty()
            && (self.held_events + 1 > self.limits.events
                || self.held_bytes + bytes > self.limits.bytes)
        {
            let Some(oldest) = self.oldest() else { break };
            tracing::debug!(container = %oldest, held_events = self.held_events,
                held_bytes = self.held_bytes, "live hold full: a container's events sent unnamed");
            self.release(&oldest, Release::Overflowed);
        }
        if self.settled.contains(id) {
            // Its own earlier events just went out: this one follows them.
            self.ready.push_back(ev);
            return;
        }
        let id = id.clone();
        let h = self.held.entry(id.clone()).or_insert_with(|| Held {
            since: now,
            events: Vec::new(),
            bytes: 0,
        });
        if h.events.is_empty() {
            self.order.push_back((h.since, id));
        }
        h.events.push(ev);
        h.bytes += bytes;
        self.held_events += 1;
        self.held_bytes += bytes;
        self.counters.held.fetch_add(1, Relaxed);
        self.counters.holding.fetch_add(1, Relaxed);
    }

    /// The next event to send.
    pub fn next_ready(&mut self) -> Option<Arc<Event>> {
        self.ready.pop_front()
    }

    /// Whether events wait for a name.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// When the container held longest is to go out at the latest.
    fn deadline(&self) -> Option<Instant> {
        self.order
            .front()
            .map(|(since, _)| *since + self.limits.wait)
    }

    /// Waits until a held container may go out (the registry's naming
    /// changed, or a wait is up), then lets out what can go. Never ends
    /// while nothing is held.
    pub async fn wait(&mut self) {
        let Some(deadline) = self.deadline() else {
            return std::future::pending().await;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        tokio::select! {
            changed = self.changes.changed() => {
                if changed.is_err() {
                    // The registry is gone: only time tells now.
                    tokio::time::sleep_until(deadline).await;
                }
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
        self.recheck(Instant::now());
    }

    /// Lets out the containers that are named (or known to stay unnamed)
    /// and those whose wait is up.
    fn recheck(&mut self, now: Instant) {
        self.changes.borrow_and_update();
        if self.held.is_empty() {
            return;
        }
        let mut out: Vec<(Arc<str>, Release)> = Vec::new();
        {
            let reg = lock(&self.registry);
            for (id, h) in &self.held {
                if reg.naming(id) != Naming::Pending {
                    out.push((id.clone(), Release::Named));
                } else if now >= h.since + self.limits.wait {
                    out.push((id.clone(), Release::TimedOut));
                }
            }
        }
        // Oldest first, as they were held.
        out.sort_by_key(|(id, _)| self.held.get(id).map(|h| h.since));
        for (id, why) in out {
            self.release(&id, why);
        }
    }

    /// Sends every held event now (the stream ends), as timed out.
    pub fn release_all(&mut self) {
        while let Some(id) = self.oldest() {
            self.release(&id, Release::TimedOut);
        }
    }

    /// The container held longest.
    fn oldest(&mut self) -> Option<Arc<str>> {
        self.skip_released();
        self.order.front().map(|(_, id)| id.clone())
    }

    /// Drops the entries of released containers from the front of `order`.
    fn skip_released(&mut self) {
        while let Some((since, id)) = self.order.front() {
            if self.held.get(id).is_some_and(|h| h.since == *since) {
                return;
            }
            self.order.pop_front();
        }
    }

    fn release(&mut self, id: &Arc<str>, why: Release) {
        let Some(h) = self.held.remove(id) else {
            return;
        };
        let n = h.events.len() as u64;
        self.held_events -= h.events.len();
        self.held_bytes -= h.bytes;
        self.counters.holding.fetch_sub(n, Relaxed);
        let counter = match why {
            Release::Named => &self.counters.named,
            Release::TimedOut => &self.counters.timed_out,
            Release::Overflowed => &self.counters.overflowed,
        };
        counter.fetch_add(n, Relaxed);
        self.ready.extend(h.events);
        self.settle(id.clone());
        self.skip_released();
    }

    fn settle(&mut self, id: Arc<str>) {
        if self.settled.len() >= SETTLED_MAX {
            self.settled.clear();
        }
        self.settled.insert(id);
    }
}

impl Drop for NameWait {
    fn drop(&mut self) {
        // What was still held is never sent: no longer "holding".
        self.counters
            .holding
            .fetch_sub(self.held_events as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::containers::ContainerMeta,
        event::{test_support, Detail},
    };

    fn ev(seq: u64, scope: &str) -> Arc<Event> {
        let mut e = test_support::event(seq, 1, Detail::Exit { status: 0 });
        e.scope = Scope::from_key(scope).expect("scope");
        Arc::new(e)
    }

    fn meta(id: &str) -> ContainerMeta {
        ContainerMeta {
            id: Arc::from(id),
            name: "app".into(),
            image: "busybox:1".into(),
            pod_name: "web-0".into(),
            pod_namespace: "shop".into(),
            ..Default::default()
        }
    }

    fn drain(w: &mut NameWait) -> Vec<u64> {
        std::iter::from_fn(|| w.next_ready())
            .map(|e| e.seq)
            .collect()
    }

    fn setup(limits: NameWaitLimits) -> (Arc<Mutex<ContainerRegistry>>, NameWait) {
        let reg = Arc::new(Mutex::new(ContainerRegistry::new(Duration::from_secs(60))));
        let w = NameWait::new(limits, reg.clone(), Arc::new(NameWaitCounters::default()));
        (reg, w)
    }

    const LIMITS: NameWaitLimits = NameWaitLimits {
        wait: Duration::from_millis(500),
        events: 1000,
        bytes: 1 << 20,
    };

    #[tokio::test]
    async fn a_new_containers_events_wait_for_its_name_in_order_and_others_pass() {
        let (reg, mut w) = setup(LIMITS);
        // "old" is named already; "new" is only being looked up.
        reg.lock().unwrap().running(meta("old"), false);
        w.offer(ev(1, "container:new"));
        w.offer(ev(2, "host"));
        w.offer(ev(3, "container:old"));
        w.offer(ev(4, "container:new"));
        assert_eq!(drain(&mut w), [2, 3], "other scopes pass");
        assert!(w.holding());
        // The runtime answers: the waiting task wakes at once.
        let named = {
            let reg = reg.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let id: Arc<str> = Arc::from("new");
                reg.lock().unwrap().sighted(&id, 7, "kubepods/p/new".into());
                reg.lock().unwrap().running(meta("new"), true);
            })
        };
        let began = Instant::now();
        while w.holding() {
            w.wait().await;
        }
        named.await.unwrap();
        assert!(
            began.elapsed() < Duration::from_millis(400),
            "woken by the name"
        );
        assert_eq!(drain(&mut w), [1, 4], "in order, once named");
        w.offer(ev(5, "container:new"));
        assert_eq!(drain(&mut w), [5], "named: passes");
        let c = &w.counters;
        assert_eq!(
            (
                c.held.load(Relaxed),
                c.named.load(Relaxed),
                c.holding.load(Relaxed)
            ),
            (2, 2, 0)
        );
    }

    #[tokio::test]
    async fn an_unnamed_container_goes_out_when_the_wait_is_up_and_is_not_held_again() {
        let (_reg, mut w) = setup(NameWaitLimits {
            wait: Duration::from_millis(50),
            ..LIMITS
        });
        w.offer(ev(1, "container:x"));
        w.offer(ev(2, "container:x"));
        let began = Instant::now();
        w.wait().await;
        assert!(began.elapsed() >= Duration::from_millis(50));
        assert_eq!(drain(&mut w), [1, 2]);
        w.offer(ev(3, "container:x"));
        assert_eq!(drain(&mut w), [3], "given up on: not held again");
        assert_eq!(w.counters.timed_out.load(Relaxed), 2);
    }

    #[test]
    fn a_full_hold_sends_the_oldest_container_unnamed_and_keeps_each_ones_order() {
        let (_reg, mut w) = setup(NameWaitLimits {
            events: 3,
            ..LIMITS
        });
        let t0 = Instant::now();
        w.offer_at(ev(1, "container:a"), t0);
        w.offer_at(ev(2, "container:b"), t0 + Duration::from_millis(1));
        w.offer_at(ev(3, "container:a"), t0 + Duration::from_millis(2));
        assert!(drain(&mut w).is_empty());
        // Full: "a" (held longest) goes out, then this one of "a" after it.
        w.offer_at(ev(4, "container:a"), t0 + Duration::from_millis(3));
        assert_eq!(drain(&mut w), [1, 3, 4]);
        w.offer_at(ev(5, "container:c"), t0 + Duration::from_millis(4));
        assert!(drain(&mut w).is_empty(), "b and c held");
        // A flood of other events: once b's and c's time is up they go
        // before the next one.
        w.offer_at(ev(6, "host"), t0 + Duration::from_millis(600));
        assert_eq!(drain(&mut w), [2, 5, 6]);
        let c = &w.counters;
        assert_eq!(
            (
                c.held.load(Relaxed),
                c.overflowed.load(Relaxed),
                c.timed_out.load(Relaxed),
                c.holding.load(Relaxed)
            ),
            (4, 2, 2, 0)
        );
    }

    #[test]
    fn no_wait_configured_holds_nothing() {
        let (_reg, mut w) = setup(NameWaitLimits {
            wait: Duration::ZERO,
            ..LIMITS
        });
        w.offer(ev(1, "container:z"));
        assert_eq!(drain(&mut w), [1]);
        assert_eq!(w.counters.held.load(Relaxed), 0);
    }
}
