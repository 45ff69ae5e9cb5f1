//! Snapshots: the window [t − before, t + after] of one scope, frozen. The
//! before-part is copied at once; the after-part fills as events arrive
//! until the window closes; then the snapshot — events, the ancestry of
//! every process in it, the listening sockets at freeze time, gaps where
//! events were lost — is committed to the store. Committing happens on the
//! committer thread ([`super::commit`]): closing only detaches what the
//! snapshot needs, so no lock is held while it is converted and written.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
};

use fdr_proto::v1 as pb;

use super::{
    loss::{KindCounts, KindLoss, LossLedger},
    ScopeBuffers,
};
use crate::{
    attribution::scope::Scope,
    event::container::ContainerLookup,
    event::lineage::Image,
    event::wire::{
        event_to_pb, kind_to_pb, ns_of, process_to_pb, scope_container, timestamp, Enrich,
    },
    event::Event,
    process::table::{ProcEntry, ProcessTable},
    recorder::buffer::{charged_bytes, kept_first, EventBuffer},
    recorder::codec::Head,
    store::{
        commit::{CommitError, Committer},
        Encoded, Store, StoreError, Writer,
    },
};

/// What the committer queue holds while the store is failing, for
/// snapshots built without [`Snapshots::with_committer`].
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

/// A snapshot shared by incidents ([`Snapshots::join`]) closes at most
/// this many after-windows past its first incident.
pub const MAX_AFTER_FACTOR: u64 = 5;

/// A shared snapshot's reason lists its incidents up to about this length.
const MAX_REASON: usize = 512;

/// How much of a scope's history a snapshot keeps around its moment.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub before_ns: u64,
    pub after_ns: u64,
}

/// Memory open snapshots may hold (charged to the recorder's budget).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotLimits {
    /// Bytes one open snapshot may hold (before- and after-part).
    pub max_bytes: usize,
    /// Bytes all open snapshots together may hold.
    pub open_bytes: usize,
    /// Share of both kept for critical kinds: bulk kinds are refused
    /// beyond `1 - reserve` of a limit, critical ones only at the limit.
    pub reserve_percent: u8,
}

impl SnapshotLimits {
    /// No limit (tests).
    pub const UNBOUNDED: SnapshotLimits = SnapshotLimits {
        max_bytes: usize::MAX,
        open_bytes: usize::MAX,
        reserve_percent: 0,
    };

    fn bulk_share(&self, limit: usize) -> usize {
        if limit == usize::MAX {
            return limit;
        }
        limit / 100 * (100 - self.reserve_percent.min(100) as usize)
    }
}

struct Open {
    info: pb::SnapshotInfo,
    scope: Scope,
    events: Vec<Arc<Event>>,
    /// Bytes charged for `events`.
    bytes: usize,
    end_ns: u64,
    last_seq: u64,
    gaps: Vec<pb::Gap>,
    /// Events of the window not kept because a memory limit was reached.
    refused: KindCounts,
    /// Read in the background: /proc/net takes milliseconds to walk.
    listening: Option<std::thread::JoinHandle<Vec<pb::ListeningSocket>>>,
    /// Its before-part is still being read ([`Filling`]): not closed yet.
    filling: bool,
    /// Bytes of the buffer copy its before-part is read from, charged to
    /// the budget until [`Snapshots::fill`].
    copy_bytes: usize,
}

/// What [`Snapshots::begin_freeze`] did.
pub enum Freeze {
    /// The incident joined an open snapshot of its scope: its summary.
    Joined(pb::SnapshotInfo),
    /// A new snapshot is open; its before-part is to be read from the copy
    /// ([`Filling::read`]) and handed to [`Snapshots::fill`].
    Filling(pb::SnapshotInfo, Box<Filling>),
}

/// A freeze under way: the copy of a scope's buffer its before-part is
/// read from, outside the buffers' lock.
pub struct Filling {
    id: u64,
    start: u64,
    at_ns: u64,
    end: u64,
    copy: Option<EventBuffer>,
    limits: SnapshotLimits,
    /// The host's `/proc` (its processes' listening sockets).
    proc: std::path::PathBuf,
    /// The host's scope (not a container's).
    host_scope: bool,
}

/// Reads a freeze's before-part without any lock, then hands it to its
/// snapshot and lets the buffers make room for what it is charged. Run on
/// a blocking thread. `None`: the snapshot was closed meanwhile.
pub fn complete(
    buffers: &std::sync::Mutex<ScopeBuffers>,
    snapshots: &std::sync::Mutex<Snapshots>,
    filling: Box<Filling>,
) -> Option<pb::SnapshotInfo> {
    // One read at a time: each holds a decoded window (up to one
    // snapshot's limit) besides its copy, and the work is CPU-bound anyway.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let id = filling.id;
    let filled = {
        let _one = crate::util::lock(&ONE_AT_A_TIME);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| filling.read())).unwrap_or_else(
            |_| {
                tracing::error!(id, "reading a snapshot's before-window failed (a bug)");
                Filled::failed(id)
            },
        )
    };
    // `fill` needs the snapshots' lock only; the buffers make room after.
    let info = crate::util::lock(snapshots).fill(filled);
    crate::util::lock(buffers).enforce_budget();
    info
}

/// A before-part read: events (oldest first) with what each is charged,
/// those one snapshot's limit refused, evictions within the window, and
/// the listening sockets being read.
pub struct Filled {
    id: u64,
    events: Vec<(Arc<Event>, usize)>,
    refused: KindCounts,
    gaps: Vec<pb::Gap>,
    listening: Option<std::thread::JoinHandle<Vec<pb::ListeningSocket>>>,
    /// The before-part could not be read.
    unread: bool,
}

impl Filled {
    /// A before-part that could not be read: the snapshot closes with a gap
    /// saying so rather than staying open.
    fn failed(id: u64) -> Filled {
        Filled {
            id,
            events: Vec::new(),
            refused: KindCounts::default(),
            gaps: Vec::new(),
            listening: None,
            unread: true,
        }
    }
}

impl Filling {
    /// The snapshot's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Reads the before-part from the copy: newest first within one
    /// snapshot's limit (critical kinds before bulk ones), so that a limit
    /// keeps the moment and what led to it. The heads are sized without
    /// decoding; only the admitted events are decoded. No lock is held:
    /// this may take a hundred milliseconds for a full buffer.
    pub fn read(self) -> Filled {
        let Filling {
            id,
            start,
            at_ns,
            end,
            copy,
            limits,
            proc,
            host_scope,
        } = self;
        let mut refused = KindCounts::default();
        let Some(copy) = copy else {
            return Filled {
                id,
                events: Vec::new(),
                refused,
                gaps: Vec::new(),
                listening: None,
                unread: false,
            };
        };
        let inside = |h: &Head| h.time_ns >= start && h.time_ns <= end;
        let sized: Vec<(Head, usize)> = copy.sizes(|h| inside(h)).collect();
        let mut admitted = vec![false; sized.len()];
        let mut sizes = vec![0usize; sized.len()];
        let mut bytes = 0usize;
        for (i, &(h, size)) in sized.iter().enumerate().rev() {
            let one = if kept_first(h.kind) {
                limits.max_bytes
            } else {
                limits.bulk_share(limits.max_bytes)
            };
            if bytes.saturating_add(size) <= one {
                bytes += size;
                admitted[i] = true;
                sizes[i] = size;
            } else {
                refused.note(h.kind, h.time_ns);
            }
        }
        drop(sized);
        let mut i = 0;
        let mut taken = Vec::new();
        let events: Vec<Arc<Event>> = copy
            .select(|h| {
                let inside = inside(h);
                let keep = inside && admitted.get(i).copied().unwrap_or(false);
                if keep {
                    taken.push(sizes.get(i).copied().unwrap_or(0));
                }
                i += usize::from(inside);
                keep
            })
            .collect();
        let events: Vec<(Arc<Event>, usize)> = events.into_iter().zip(taken).collect();
        let mut gaps: Vec<pb::Gap> = copy
            .losses()
            .within(start, at_ns)
            .into_iter()
            .map(|l| {
                gap(
                    &l,
                    "evicted from the scope's buffer before the freeze",
                    false,
                )
            })
            .collect();
        gaps.retain(|g| g.lost > 0);
        drop(copy);
        // The newest few distinct processes of the scope: one of them is
        // likely alive and in the scope's network namespace.
        let mut candidates: Vec<u32> = Vec::new();
        for (e, _) in events.iter().rev() {
            if candidates.len() == 4 {
                break;
            }
            if !candidates.contains(&e.pid()) {
                candidates.push(e.pid());
            }
        }
        // The host's own namespace is init's, whoever else is gone (the
        // agent's may be a pod's).
        if host_scope && !candidates.contains(&1) {
            candidates.push(1);
        }
        let listening = std::thread::Builder::new()
            .name("fdr-snapshot-net".into())
            .spawn(move || listening_sockets(&proc, candidates.into_iter()))
            .map_err(|e| tracing::warn!(%e, "reading listening sockets"))
            .ok();
        Filled {
            id,
            events,
            refused,
            gaps,
            listening,
            unread: false,
        }
    }
}

pub struct Snapshots {
    store: Arc<Store>,
    /// Converts and stores closed snapshots, off the pipeline.
    committer: Committer,
    window: Window,
    limits: SnapshotLimits,
    host: String,
    /// The host's `/proc` (see [`Snapshots::with_node`]).
    proc: std::path::PathBuf,
    /// The host's `/etc/passwd`: the names of a snapshot's users.
    passwd: std::path::PathBuf,
    open: Vec<Open>,
    /// Bytes of all open snapshots, shared with the buffers' budget.
    charged: Arc<AtomicUsize>,
    /// Kernel ring buffer drops by kind, at the time the agent saw them,
    /// of cgroups the kernel could not name (host-wide).
    kernel_losses: LossLedger,
    /// The same, per scope, where the kernel named the cgroup.
    scope_losses: HashMap<Scope, LossLedger>,
}

impl Snapshots {
    pub fn new(store: Arc<Store>, window: Window) -> Self {
        Self::with_committer(Committer::spawn(store, DEFAULT_QUEUE_BYTES), window)
    }

    /// Snapshots stored by `committer` (shared with the other writes).
    pub fn with_committer(committer: Committer, window: Window) -> Self {
        Snapshots {
            store: committer.store().clone(),
            committer,
            window,
            limits: SnapshotLimits::UNBOUNDED,
            host: String::new(),
            proc: "/proc".into(),
            passwd: "/etc/passwd".into(),
            open: Vec::new(),
            charged: Arc::new(AtomicUsize::new(0)),
            kernel_losses: LossLedger::default(),
            scope_losses: HashMap::new(),
        }
    }

    /// Snapshots (and their events) carry `node` (the agent's node name)
    /// as their host; the listening sockets of its processes are read in
    /// the host's `/proc` at `proc`, the names of their users in the
    /// host's `/etc/passwd` at `passwd` (once per snapshot, when it is
    /// stored).
    pub fn with_node(
        mut self,
        node: &str,
        proc: std::path::PathBuf,
        passwd: std::path::PathBuf,
    ) -> Self {
        self.host = node.to_owned();
        self.proc = proc;
        self.passwd = passwd;
        self
    }

    /// Bounds the memory of open snapshots and charges it through
    /// `charged` (the buffers' [`ScopeBuffers::charge_handle`]).
    pub fn with_limits(mut self, limits: SnapshotLimits, charged: Arc<AtomicUsize>) -> Self {
        self.limits = limits;
        self.charged = charged;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn committer(&self) -> &Committer {
        &self.committer
    }

    /// Bytes held by open snapshots.
    pub fn open_bytes(&self) -> usize {
        self.open.iter().map(|o| o.bytes).sum()
    }

    /// Notes kernel drops of `kind` seen at `time_ns` (wall clock); every
    /// snapshot whose window holds that time carries them as a gap.
    pub fn note_kernel_drops(&mut self, kind: crate::event::EventKind, time_ns: u64, n: u64) {
        self.kernel_losses.note(kind, time_ns, n);
    }

    /// Notes kernel drops of `kind` of processes of `scope`, seen at
    /// `time_ns`: a gap of that scope's snapshots only.
    pub fn note_scope_drops(
        &mut self,
        scope: Scope,
        kind: crate::event::EventKind,
        time_ns: u64,
        n: u64,
    ) {
        self.scope_losses
            .entry(scope)
            .or_default()
            .note(kind, time_ns, n);
    }

    /// Forgets losses no window can reach any more.
    pub fn forget_losses_before(&mut self, before_ns: u64) {
        let oldest_open = self
            .open
            .iter()
            .filter_map(|o| o.info.window_start.as_ref())
            .map(|t| t.seconds as u64 * 1_000_000_000)
            .min()
            .unwrap_or(u64::MAX);
        let before = before_ns.min(oldest_open);
        self.kernel_losses.forget_before(before);
        self.scope_losses.retain(|_, l| {
            l.forget_before(before);
            !l.is_empty()
        });
    }

    /// Whether an event of `size` bytes and this class may join `o`.
    fn admits(&self, o_bytes: usize, size: usize, critical: bool) -> bool {
        let total = self.charged_total();
        let (one, all) = if critical {
            (self.limits.max_bytes, self.limits.open_bytes)
        } else {
            (
                self.limits.bulk_share(self.limits.max_bytes),
                self.limits.bulk_share(self.limits.open_bytes),
            )
        };
        o_bytes.saturating_add(size) <= one && total.saturating_add(size) <= all
    }

    /// Bytes the open snapshots hold (their limits' measure).
    fn charged_total(&self) -> usize {
        self.open.iter().map(|o| o.bytes).sum()
    }

    /// What they are charged to the recorder's budget: what they hold and
    /// the buffer copies being read for them.
    fn publish_charge(&self) {
        let copies: usize = self.open.iter().map(|o| o.copy_bytes).sum();
        self.charged.store(self.charged_total() + copies, Relaxed);
    }

    /// Freezes `scope` around `at_ns` (wall clock): copies the before-part
    /// now and keeps the snapshot open until `at + after`. For an incident
    /// (`incident` ≠ 0), a snapshot of the same scope frozen for another
    /// incident and still open is shared instead ([`Snapshots::join`]):
    /// the answer is then that snapshot's summary.
    ///
    /// All three steps at once, under the caller's locks (tests, tools).
    /// The agent runs them apart ([`Snapshots::begin_freeze`],
    /// [`Filling::read`] without a lock, [`Snapshots::fill`]), so that
    /// decoding a scope's whole buffer never stands capture still.
    pub fn freeze(
        &mut self,
        scope: Scope,
        reason: &str,
        at_ns: u64,
        buffers: &ScopeBuffers,
        incident: u64,
    ) -> Result<pb::SnapshotInfo, StoreError> {
        match self.begin_freeze(scope, reason, at_ns, buffers, incident)? {
            Freeze::Joined(info) => Ok(info),
            Freeze::Filling(info, filling) => Ok(self.fill(filling.read()).unwrap_or(info)),
        }
    }

    /// The first step of a freeze, under the buffers' lock: a new open
    /// snapshot (its after-part fills from now on, [`Snapshots::observe`])
    /// and a copy of the scope's buffer to read its before-part from,
    /// without any lock ([`Filling::read`]). Cheap: no event is decoded.
    pub fn begin_freeze(
        &mut self,
        scope: Scope,
        reason: &str,
        at_ns: u64,
        buffers: &ScopeBuffers,
        incident: u64,
    ) -> Result<Freeze, StoreError> {
        if incident != 0 {
            if let Some(info) = self.join(&scope, reason, at_ns, incident) {
                return Ok(Freeze::Joined(info));
            }
        }
        let id = self.store.next_id()?;
        let start = at_ns.saturating_sub(self.window.before_ns);
        let end = at_ns.saturating_add(self.window.after_ns);
        let info = pb::SnapshotInfo {
            id,
            scope: scope.key(),
            reason: reason.to_owned(),
            at: Some(timestamp(at_ns)),
            window_start: Some(timestamp(start)),
            window_end: Some(timestamp(end)),
            open: true,
            event_count: 0,
            completeness: 1.0,
            bytes: 0,
            host: self.host.clone(),
            incident,
            incidents: if incident == 0 {
                Vec::new()
            } else {
                vec![incident]
            },
            ..Default::default()
        };
        let last_seq = buffers.scope_last_seq(&scope);
        let copy = buffers.scope_copy(&scope);
        let copy_bytes = copy.as_ref().map_or(0, EventBuffer::bytes);
        let filling = Filling {
            id,
            start,
            at_ns,
            end,
            copy,
            limits: self.limits,
            proc: self.proc.clone(),
            host_scope: scope == Scope::Host,
        };
        self.open.push(Open {
            info: info.clone(),
            scope,
            events: Vec::new(),
            bytes: 0,
            end_ns: end,
            last_seq,
            gaps: Vec::new(),
            refused: KindCounts::default(),
            listening: None,
            filling: true,
            copy_bytes,
        });
        // The copy is charged: the caller's buffers make room for it.
        self.publish_charge();
        Ok(Freeze::Filling(info, Box::new(filling)))
    }

    /// The last step of a freeze: the before-part read from the copy
    /// joins the snapshot, ahead of what its after-part gathered
    /// meanwhile, within the open snapshots' memory limits (newest first,
    /// critical kinds before bulk ones). `None`: the snapshot was closed
    /// meanwhile (the agent stopping).
    pub fn fill(&mut self, filled: Filled) -> Option<pb::SnapshotInfo> {
        let i = self.open.iter().position(|o| o.info.id == filled.id)?;
        // As if the before-part had been copied at the freeze: it is
        // admitted first (newest first), then what the after-part gathered
        // meanwhile, in order, as `observe` admits it; the copy's charge
        // ends here.
        let after = std::mem::take(&mut self.open[i].events);
        self.open[i].bytes = 0;
        self.open[i].copy_bytes = 0;
        let mut kept = vec![false; filled.events.len()];
        for (k, (ev, size)) in filled.events.iter().enumerate().rev() {
            if self.admits(self.open[i].bytes, *size, kept_first(ev.kind())) {
                self.open[i].bytes += size;
                kept[k] = true;
            } else {
                self.open[i].refused.note(ev.kind(), ev.time_ns);
            }
        }
        let mut events: Vec<Arc<Event>> = filled
            .events
            .into_iter()
            .zip(kept)
            .filter_map(|((ev, _), k)| k.then_some(ev))
            .collect();
        for ev in after {
            let size = charged_bytes(&ev);
            if self.admits(self.open[i].bytes, size, kept_first(ev.kind())) {
                self.open[i].bytes += size;
                events.push(ev);
            } else {
                self.open[i].refused.note(ev.kind(), ev.time_ns);
            }
        }
        let o = &mut self.open[i];
        o.events = events;
        o.refused.merge(&filled.refused);
        o.gaps.extend(filled.gaps);
        if filled.unread {
            o.gaps.push(pb::Gap {
                from: o.info.window_start,
                to: o.info.at,
                lost: 0,
                cause: "the before-window could not be read (an agent bug, logged)".into(),
                ..Default::default()
            });
        }
        o.listening = filled.listening;
        o.info.event_count = o.events.len() as u64;
        o.filling = false;
        let info = o.info.clone();
        self.publish_charge();
        Some(info)
    }

    /// Incident `incident` of `scope`, at `at_ns`, joins the newest open
    /// snapshot of that scope frozen for an incident, when that snapshot
    /// can cover its whole after-window within [`MAX_AFTER_FACTOR`] ×
    /// `after` of its own moment: its window's end moves to `at + after`.
    /// Its start stays: the new incident's before-window lies within it
    /// (incidents of one scope opened together are milliseconds apart).
    /// `None`: no such snapshot, a new one is frozen.
    fn join(
        &mut self,
        scope: &Scope,
        reason: &str,
        at_ns: u64,
        incident: u64,
    ) -> Option<pb::SnapshotInfo> {
        let after = self.window.after_ns;
        let o = self
            .open
            .iter_mut()
            .rev()
            // Still recording: a window that has ended (and awaits its
            // closing) skipped what came since; extending it would leave a
            // hole in the new incident's lead-up.
            .find(|o| &o.scope == scope && o.info.incident != 0 && o.end_ns >= at_ns)?;
        let first_at = ns_of(o.info.at.as_ref());
        let end = at_ns.saturating_add(after).max(o.end_ns);
        if end > first_at.saturating_add(after.saturating_mul(MAX_AFTER_FACTOR)) {
            return None;
        }
        o.end_ns = end;
        o.info.window_end = Some(timestamp(end));
        if !o.info.incidents.contains(&incident) {
            o.info.incidents.push(incident);
        }
        if o.info.reason.len() < MAX_REASON {
            o.info.reason.push_str("; ");
            o.info.reason.push_str(reason);
        } else if !o.info.reason.ends_with('…') {
            o.info.reason.push_str("; …");
        }
        tracing::info!(
            id = o.info.id,
            incident,
            incidents = ?o.info.incidents,
            "incident joins the open snapshot of its scope"
        );
        Some(o.info.clone())
    }

    /// Adds a new event to the open snapshots whose window it falls in,
    /// within their memory limits (critical kinds first); what does not
    /// fit is counted as a gap.
    pub fn observe(&mut self, ev: &Arc<Event>) {
        if self.open.is_empty() {
            return;
        }
        let mut size = None;
        let critical = kept_first(ev.kind());
        let mut changed = false;
        for i in 0..self.open.len() {
            let o = &self.open[i];
            if o.scope != ev.scope || ev.seq <= o.last_seq || ev.time_ns > o.end_ns {
                continue;
            }
            let size = *size.get_or_insert_with(|| charged_bytes(ev));
            let admitted = self.admits(o.bytes, size, critical);
            let o = &mut self.open[i];
            o.last_seq = ev.seq;
            if admitted {
                o.events.push(ev.clone());
                o.bytes += size;
                o.info.event_count += 1;
                changed = true;
            } else {
                o.refused.note(ev.kind(), ev.time_ns);
            }
        }
        if changed {
            self.publish_charge();
        }
    }

    /// Whether a snapshot is still filling.
    pub fn has_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// How many snapshots are still filling.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Summaries of the snapshots still filling.
    pub fn open_infos(&self) -> Vec<pb::SnapshotInfo> {
        self.open.iter().map(|o| o.info.clone()).collect()
    }

    /// Queues the snapshots whose window closed before `now_ns` for the
    /// committer; with `all` (the agent is stopping), every open one, the
    /// part of its after-window not yet lived marked as a gap. Returns the
    /// ids queued; a snapshot the committer cannot keep (the store failing,
    /// its queue full) is logged and lost. The pipeline calls the steps
    /// ([`Snapshots::take_closed`], [`Closing::gather`], [`Closing::submit`])
    /// itself, so as to hold each lock only for its own step.
    pub fn close(
        &mut self,
        now_ns: u64,
        procs: &ProcessTable,
        en: &Enrich,
        all: bool,
    ) -> Result<Vec<u64>, CommitError> {
        let mut done = Vec::new();
        for mut c in self.take_closed(now_ns, all) {
            c.gather(procs);
            c.set_container(en.containers);
            if let Some(id) = c.submit(&self.committer, en.ancestry_depth)? {
                done.push(id);
            }
        }
        Ok(done)
    }

    /// Detaches the snapshots whose window closed (see
    /// [`Snapshots::close`]); no conversion, no I/O. Their ids count as
    /// pending at once.
    pub fn take_closed(&mut self, now_ns: u64, all: bool) -> Vec<Closing> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.open.len() {
            // One whose before-part is still being read closes after it.
            if (self.open[i].end_ns > now_ns || self.open[i].filling) && !all {
                i += 1;
                continue;
            }
            let mut o = self.open.remove(i);
            if o.filling {
                o.gaps.push(pb::Gap {
                    from: o.info.window_start,
                    to: o.info.at,
                    lost: 0,
                    cause: "the agent stopped before the before-window was read".into(),
                    ..Default::default()
                });
            }
            self.publish_charge();
            self.finish_gaps(&mut o, now_ns);
            let lost: u64 = o.gaps.iter().map(|g| g.lost).sum();
            let kept = o.events.len() as u64;
            o.info.open = false;
            o.info.completeness = if kept + lost == 0 {
                1.0
            } else {
                kept as f64 / (kept + lost) as f64
            };
            self.committer.announce(o.info.clone());
            out.push(Closing {
                scope: o.scope,
                bytes: o.bytes,
                events: o.events,
                gaps: o.gaps,
                info: o.info,
                listening: o.listening,
                known: HashMap::new(),
                container: None,
                passwd: self.passwd.clone(),
            });
        }
        out
    }

    /// Adds the gaps known at close: the after-window not lived, events
    /// refused by the memory limits, kernel drops within the window.
    fn finish_gaps(&self, o: &mut Open, now_ns: u64) {
        if o.end_ns > now_ns {
            o.gaps.push(pb::Gap {
                from: Some(timestamp(now_ns)),
                to: o.info.window_end,
                lost: 0,
                cause: "the agent stopped before the window closed".into(),
                ..Default::default()
            });
        }
        for l in o.refused.losses() {
            o.gaps.push(gap(
                &l,
                "not kept: the open snapshots' memory limit was reached",
                false,
            ));
        }
        let ns = |t: &Option<prost_types::Timestamp>| {
            t.as_ref()
                .map_or(0, |t| t.seconds as u64 * 1_000_000_000 + t.nanos as u64)
        };
        let (start, end) = (ns(&o.info.window_start), ns(&o.info.window_end));
        if let Some(scoped) = self.scope_losses.get(&o.scope) {
            for l in scoped.within(start, end.min(now_ns)) {
                o.gaps.push(gap(
                    &l,
                    "kernel ring buffer full: this scope's records dropped before the agent read \
                     them",
                    false,
                ));
            }
        }
        for l in self.kernel_losses.within(start, end.min(now_ns)) {
            o.gaps.push(gap(
                &l,
                "kernel ring buffer full: records dropped before the agent read them, of \
                 processes the kernel could not attribute (counted for the whole host)",
                true,
            ));
        }
    }
}

fn gap(l: &KindLoss, cause: &str, host_wide: bool) -> pb::Gap {
    pb::Gap {
        from: Some(timestamp(l.from_ns)),
        to: Some(timestamp(l.to_ns)),
        lost: l.lost,
        cause: cause.into(),
        kind: kind_to_pb(l.kind) as i32,
        host_wide,
    }
}

/// A closed snapshot detached from [`Snapshots`], on its way to the
/// committer with everything its conversion needs.
pub struct Closing {
    scope: Scope,
    /// What the open snapshot was charged for its events.
    bytes: usize,
    events: Vec<Arc<Event>>,
    gaps: Vec<pb::Gap>,
    info: pb::SnapshotInfo,
    listening: Option<std::thread::JoinHandle<Vec<pb::ListeningSocket>>>,
    /// The table's entries for the ancestors of the events' processes.
    known: HashMap<u32, ProcEntry>,
    container: Option<pb::ContainerInfo>,
    /// The host's `/etc/passwd` (see [`Snapshots::with_node`]).
    passwd: std::path::PathBuf,
}

impl Closing {
    pub fn id(&self) -> u64 {
        self.info.id
    }

    /// The parent pids the ancestry starts from (no lock needed).
    pub fn roots(&self) -> Vec<u32> {
        let mut seen = HashSet::new();
        let mut last = None;
        for e in &self.events {
            let ppid = e.record.task.ppid;
            if last != Some(ppid) {
                last = Some(ppid);
                seen.insert(ppid);
            }
        }
        seen.into_iter().collect()
    }

    /// Copies the table entries of the ancestors of `roots` (cheap clones;
    /// the caller holds the table's lock only for this).
    pub fn gather_from(&mut self, roots: &[u32], procs: &ProcessTable) {
        for &root in roots {
            let mut pid = root;
            for _ in 0..ANCESTRY_MAX {
                if pid == 0 || self.known.contains_key(&pid) {
                    break;
                }
                let Some(p) = procs.get(pid) else { break };
                self.known.insert(pid, p.clone());
                pid = p.ppid;
            }
        }
    }

    /// [`Closing::roots`] then [`Closing::gather_from`].
    pub fn gather(&mut self, procs: &ProcessTable) {
        let roots = self.roots();
        self.gather_from(&roots, procs);
    }

    /// The scope's container metadata, looked up now (the caller holds the
    /// registry's lock only for this).
    pub fn set_container(&mut self, containers: Option<&dyn ContainerLookup>) {
        self.container = scope_container(&self.scope, containers);
    }

    /// Memory the snapshot holds until it is stored, roughly.
    pub fn approx_bytes(&self) -> usize {
        self.bytes + self.known.len() * std::mem::size_of::<ProcEntry>() + 1024
    }

    /// Hands the snapshot to the committer: conversion and writing happen
    /// on its thread, without any lock. `Ok(None)` when the committer
    /// refused it (logged: the snapshot is lost); Err when it has stopped.
    pub fn submit(self, committer: &Committer, depth: usize) -> Result<Option<u64>, CommitError> {
        let id = self.info.id;
        let bytes = self.approx_bytes();
        let build = Box::new(move || self.build(depth));
        match committer.submit(id, bytes, build) {
            Ok(()) => Ok(Some(id)),
            Err(err @ CommitError::Full { .. }) => {
                tracing::error!(%err, id, "snapshot cannot be kept");
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// The stored form (committer thread): every program image once (see
    /// [`crate::store::compact`]), events referring to theirs; the names
    /// of the window's users from the host's passwd file, read once.
    fn build(self, depth: usize) -> Encoded {
        let mut info = self.info;
        // Events carry the snapshot's host (stored once, in its info).
        let host = info.host.clone();
        let en = Enrich {
            containers: None,
            ancestry_depth: 0,
            node: &host,
        };
        info.container = self.container;
        let mut out = Writer::new(&info);
        // Images by address: the events hold them (`Arc`), so an address
        // names one image for as long as this runs.
        let mut images: HashMap<*const Image, u32> = HashMap::new();
        // Every uid of the window: its events' and their images' (with
        // the chains they came from), its processes'.
        let mut uids = std::collections::BTreeSet::new();
        // One event message at a time: only the compressed form is held.
        for e in &self.events {
            uids.insert(e.record.task.uid);
            if !images.contains_key(&Arc::as_ptr(&e.image)) {
                let mut img = Some(&*e.image);
                while let Some(i) = img {
                    uids.insert(i.uid);
                    img = i.parent.as_deref();
                }
            }
            let image = intern_image(&mut out, &mut images, &e.image);
            // Critical kinds with their ancestry, bulk kinds without (the
            // snapshot's process list holds every process's ancestors).
            let depth = if kept_first(e.kind()) { depth } else { 0 };
            let ev = pb::Event {
                // The snapshot's (see `Writer::push_event`).
                container: None,
                ..event_to_pb(e, &en)
            };
            out.push_event(ev, image, depth as u32);
        }
        for p in ancestry(&self.events, &self.known) {
            uids.insert(p.uid);
            out.push_process(&p);
        }
        for (uid, name) in crate::derive::accounts::user_names_in(&self.passwd, &uids) {
            out.push_user(&pb::UserName { uid, name });
        }
        for l in self
            .listening
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
        {
            out.push_listening(&l);
        }
        for g in &self.gaps {
            out.push_gap(g);
        }
        out.finish(info)
    }
}

/// `img` and the images it came from in `out`'s table, parents first;
/// returns its reference. Each image is added once.
fn intern_image(out: &mut Writer, seen: &mut HashMap<*const Image, u32>, img: &Arc<Image>) -> u32 {
    if let Some(&r) = seen.get(&Arc::as_ptr(img)) {
        return r;
    }
    // The chain up to the first image already added (chains are capped,
    // see `lineage`).
    let mut chain: Vec<&Image> = vec![img];
    let mut parent = 0;
    let mut cur = img.parent.as_deref();
    while let Some(p) = cur {
        if let Some(&r) = seen.get(&(p as *const Image)) {
            parent = r;
            break;
        }
        chain.push(p);
        cur = p.parent.as_deref();
    }
    for i in chain.into_iter().rev() {
        parent = out.image(i.pid, i.uid, &i.exe, &i.argv, parent);
        seen.insert(i as *const Image, parent);
    }
    parent
}

/// Ancestors followed per process.
const ANCESTRY_MAX: usize = 32;

/// Every process of the events and its ancestors, as the table knew them
/// (`known`: entries copied from it, see [`Closing::gather`]).
fn ancestry(events: &[Arc<Event>], known: &HashMap<u32, ProcEntry>) -> Vec<pb::Process> {
    let mut out: BTreeMap<u32, pb::Process> = BTreeMap::new();
    for ev in events {
        let t = &ev.record.task;
        out.entry(t.pid).or_insert_with(|| process_to_pb(ev));
        let mut pid = t.ppid;
        for _ in 0..ANCESTRY_MAX {
            if pid == 0 || out.contains_key(&pid) {
                break;
            }
            let Some(p) = known.get(&pid) else { break };
            out.insert(
                pid,
                pb::Process {
                    pid,
                    ppid: p.ppid,
                    uid: p.uid,
                    comm: p.comm.to_string(),
                    exe: p.exe().to_string(),
                    argv: p.argv().to_vec(),
                    ..Default::default()
                },
            );
            pid = p.ppid;
        }
    }
    out.into_values().collect()
}

/// Listening TCP sockets and bound UDP sockets seen from the network
/// namespace of the first live process in `pids` (of the host's `/proc`
/// at `proc`), or the agent's own.
fn listening_sockets(
    proc: &std::path::Path,
    pids: impl Iterator<Item = u32>,
) -> Vec<pb::ListeningSocket> {
    // None alive: nothing is known (never the agent's own namespace's).
    let Some(base) = pids
        .map(|p| format!("{}/{p}/net", proc.display()))
        .find(|d| std::path::Path::new(d).exists())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (file, proto, want_state) in [
        ("tcp", "tcp", "0A"),
        ("tcp6", "tcp", "0A"),
        ("udp", "udp", "07"),
        ("udp6", "udp", "07"),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("{base}/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[3] != want_state {
                continue;
            }
            if let Some((addr, port)) = parse_proc_addr(f[1]) {
                out.push(pb::ListeningSocket {
                    protocol: proto.into(),
                    address: addr,
                    port,
                });
            }
        }
    }
    out
}

/// `0100007F:1F90` → ("127.0.0.1", 8080); IPv6 as four little-endian words.
fn parse_proc_addr(s: &str) -> Option<(String, u32)> {
    let (a, p) = s.split_once(':')?;
    let port = u32::from_str_radix(p, 16).ok()?;
    let addr = match a.len() {
        8 => std::net::Ipv4Addr::from(u32::from_str_radix(a, 16).ok()?.swap_bytes()).to_string(),
        32 => {
            let mut bytes = [0u8; 16];
            for w in 0..4 {
                let word = u32::from_str_radix(&a[w * 8..w * 8 + 8], 16).ok()?;
                bytes[w * 4..w * 4 + 4].copy_from_slice(&word.to_le_bytes());
            }
            std::net::Ipv6Addr::from(bytes).to_string()
        }
        _ => return None,
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::test_support::event,
        event::Detail,
        recorder::Limits,
        store::{Retention, Store},
    };

    /// A fresh store in a directory of its own (removed by the test).
    fn test_store(tag: &str) -> (std::path::PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let retention = Retention {
            max_snapshots: 10,
            max_bytes: 1 << 20,
        };
        let store = Store::open(&dir, retention).unwrap();
        (dir, store)
    }

    fn test_buffers() -> ScopeBuffers {
        ScopeBuffers::new(Limits {
            scope_quota: 1 << 20,
            critical_reserve: 0,
            budget: 1 << 20,
            grace_ns: 0,
        })
    }

    #[test]
    fn stopping_commits_open_snapshots_with_a_gap_for_the_rest() {
        let (dir, store) = test_store("fdr-snap-stop");
        let mut snaps = Snapshots::new(
            std::sync::Arc::new(store),
            Window {
                before_ns: 10_000,
                after_ns: 60_000,
            },
        );
        let mut buffers = test_buffers();
        buffers.push(Arc::new(event(1, 7, Detail::Exit { status: 0 }))); // time_ns 1000
        let info = snaps
            .freeze(Scope::Host, "test", 2_000, &buffers, 0)
            .unwrap();
        assert!(info.open);
        let procs = ProcessTable::default();
        assert!(
            snaps
                .close(3_000, &procs, &Enrich::BARE, false)
                .unwrap()
                .is_empty(),
            "window still open"
        );
        assert_eq!(
            snaps.close(3_000, &procs, &Enrich::BARE, true).unwrap(),
            vec![info.id]
        );
        snaps.committer().drain(std::time::Duration::from_secs(10));
        let stored = snaps.store().get(info.id).unwrap().expect("committed");
        assert_eq!(stored.events.len(), 1);
        assert_eq!(stored.events[0].seq, 1);
        assert!(!stored.info.as_ref().unwrap().open);
        let gap = &stored.gaps[0];
        assert_eq!(gap.from, Some(timestamp(3_000)));
        assert_eq!(gap.to, Some(timestamp(62_000)));
        assert!(gap.cause.contains("stopped"));
        assert!(snaps.open_infos().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_freeze_reads_its_before_part_off_the_lock_ahead_of_what_came_meanwhile() {
        let (dir, store) = test_store("fdr-snap-phases");
        let mut snaps = Snapshots::new(
            std::sync::Arc::new(store),
            Window {
                before_ns: 1_000_000,
                after_ns: 10_000,
            },
        );
        let mut buffers = test_buffers();
        for seq in 1..=3 {
            buffers.push(Arc::new(event(seq, 7, Detail::Exit { status: 0 })));
        }
        let Freeze::Filling(info, filling) = snaps
            .begin_freeze(Scope::Host, "t", 5_000, &buffers, 0)
            .unwrap()
        else {
            panic!("a new snapshot")
        };
        assert_eq!(filling.id(), info.id);
        // Events recorded while the before-part is read join after it.
        let later = Arc::new(event(4, 7, Detail::Exit { status: 0 }));
        buffers.push(later.clone());
        snaps.observe(&later);
        // Not closed while filling, even with its window over.
        assert!(snaps.take_closed(1 << 40, false).is_empty());
        let filled = std::thread::spawn(move || filling.read()).join().unwrap();
        let info = snaps.fill(filled).expect("still open");
        assert_eq!(info.event_count, 4);
        let closing = snaps.take_closed(1 << 40, false);
        assert_eq!(closing.len(), 1);
        let seqs: Vec<u64> = closing[0].events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kernel_drops_are_gaps_of_their_scope_and_host_wide_ones_of_every_scope() {
        let (dir, store) = test_store("fdr-snap-drops");
        let mut snaps = Snapshots::new(
            std::sync::Arc::new(store),
            Window {
                before_ns: 10_000_000_000,
                after_ns: 10_000_000_000,
            },
        );
        let buffers = test_buffers();
        let at = 100_000_000_000;
        let ctr = Scope::from_key("container:abc").unwrap();
        snaps.freeze(Scope::Host, "t", at, &buffers, 0).unwrap();
        snaps.freeze(ctr.clone(), "t", at, &buffers, 0).unwrap();
        use crate::event::EventKind;
        snaps.note_scope_drops(ctr.clone(), EventKind::FileWrite, at + 1, 5);
        snaps.note_kernel_drops(EventKind::Exec, at + 2, 2);
        // Outside both windows: no gap.
        snaps.note_scope_drops(ctr.clone(), EventKind::FileWrite, at + 50_000_000_000, 9);
        let closed = snaps.take_closed(at + 20_000_000_000, false);
        assert_eq!(closed.len(), 2);
        for c in &closed {
            let lost = |k: EventKind, host_wide: bool| -> u64 {
                c.gaps
                    .iter()
                    .filter(|g| g.kind == kind_to_pb(k) as i32 && g.host_wide == host_wide)
                    .map(|g| g.lost)
                    .sum()
            };
            assert_eq!(lost(EventKind::Exec, true), 2, "host-wide: every scope");
            let writes = if c.scope == ctr { 5 } else { 0 };
            assert_eq!(lost(EventKind::FileWrite, false), writes, "{:?}", c.scope);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_open_snapshot_keeps_critical_kinds_past_its_bulk_share() {
        let (dir, store) = test_store("fdr-snap-cap");
        let buffers = test_buffers();
        let exit = |seq| Arc::new(event(seq, 7, Detail::Exit { status: 0 }));
        let listen = |seq| {
            let mut e = event(seq, 7, Detail::Exit { status: 0 });
            e.record.detail = crate::event::test_support::listen_detail();
            Arc::new(e)
        };
        let one = charged_bytes(&listen(0)).max(charged_bytes(&exit(0)));
        let charged = buffers.charge_handle();
        let mut snaps = Snapshots::new(
            std::sync::Arc::new(store),
            Window {
                before_ns: 0,
                after_ns: u64::MAX / 2,
            },
        )
        .with_limits(
            SnapshotLimits {
                max_bytes: one * 100,
                open_bytes: one * 100,
                reserve_percent: 50,
            },
            charged.clone(),
        );
        snaps.freeze(Scope::Host, "t", 0, &buffers, 0).unwrap();
        for seq in 1..=1000 {
            snaps.observe(&exit(seq));
        }
        for seq in 1001..=1010 {
            snaps.observe(&listen(seq));
        }
        let held = snaps.open_bytes();
        assert!(held <= one * 100, "{held} within the limit");
        assert_eq!(charged.load(Relaxed), held, "charged to the budget");
        let closed = snaps.take_closed(u64::MAX, true);
        let c = &closed[0];
        let listens = c.events.iter().filter(|e| kept_first(e.kind())).count();
        assert_eq!(listens, 10, "critical kinds kept past the bulk share");
        let refused: u64 = c
            .gaps
            .iter()
            .filter(|g| g.kind == kind_to_pb(crate::event::EventKind::Exit) as i32)
            .map(|g| g.lost)
            .sum();
        let kept_exits = c.events.len() as u64 - 10;
        assert_eq!(kept_exits + refused, 1000, "every refusal counted");
        assert_eq!(charged.load(Relaxed), 0, "closing releases the charge");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn incidents_of_one_scope_share_the_open_snapshot() {
        let (dir, store) = test_store("fdr-snap-share");
        let s = 1_000_000_000u64;
        let mut snaps = Snapshots::new(
            std::sync::Arc::new(store),
            Window {
                before_ns: 300 * s,
                after_ns: 60 * s,
            },
        );
        let buffers = test_buffers();
        let ctr = Scope::from_key("container:abc").unwrap();
        let at = 1_000 * s;
        let first = snaps
            .freeze(ctr.clone(), "incident #1: reverse-shell", at, &buffers, 1)
            .unwrap();
        assert_eq!(first.incidents, [1]);
        let second = snaps
            .freeze(
                ctr.clone(),
                "incident #2: data-exfiltration",
                at + 3_000_000,
                &buffers,
                2,
            )
            .unwrap();
        assert_eq!(second.id, first.id, "one snapshot for both");
        assert_eq!((second.incident, &second.incidents[..]), (1, &[1, 2][..]));
        assert_eq!(second.window_start, first.window_start);
        assert_eq!(second.window_end, Some(timestamp(at + 3_000_000 + 60 * s)));
        assert!(second.reason.contains("#1") && second.reason.contains("#2"));
        // Another scope, a snapshot asked for by hand: their own.
        let host = snaps.freeze(Scope::Host, "i3", at, &buffers, 3).unwrap();
        let manual = snaps
            .freeze(ctr.clone(), "by hand", at, &buffers, 0)
            .unwrap();
        assert!(host.id != first.id && manual.id != first.id && host.id != manual.id);
        // Past the longest shared window: a snapshot of its own.
        let late = at + (MAX_AFTER_FACTOR - 1) * 60 * s + 1;
        let third = snaps.freeze(ctr.clone(), "i4", late, &buffers, 4).unwrap();
        assert_ne!(third.id, first.id);
        let joined = snaps
            .freeze(ctr.clone(), "i5", late + 1, &buffers, 5)
            .unwrap();
        assert_eq!((joined.id, &joined.incidents[..]), (third.id, &[4, 5][..]));
        // Events up to the extended end join the shared snapshot.
        let mut late_ev = event(9, 7, Detail::Exit { status: 0 });
        late_ev.scope = ctr.clone();
        late_ev.time_ns = at + 60 * s + 2_000_000;
        snaps.observe(&Arc::new(late_ev));
        let open = snaps.open_infos();
        let shared = open.iter().find(|i| i.id == first.id).unwrap();
        assert_eq!(shared.event_count, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stored_snapshot_reads_as_the_events_with_their_ancestry() {
        let (dir, store) = test_store("fdr-snap-compact");
        let mut snaps = Snapshots::new(
            std::sync::Arc::new(store),
            Window {
                before_ns: 1_000_000,
                after_ns: 0,
            },
        );
        let mut buffers = test_buffers();
        let argv = |a: &[&str]| -> Arc<[String]> { a.iter().map(|s| s.to_string()).collect() };
        let init = Image::root(1, 0, "/sbin/init".into(), argv(&["init"]));
        let sshd = Image::child_of(Some(&init), 50, 0, "/usr/sbin/sshd".into(), argv(&["sshd"]));
        let bash = Image::child_of(Some(&sshd), 60, 0, "/bin/bash".into(), argv(&["-bash"]));
        let mut events = Vec::new();
        for seq in 1..=20u64 {
            let detail = if seq % 2 == 0 {
                crate::event::test_support::listen_detail()
            } else {
                Detail::Exit { status: 0 }
            };
            let mut e = event(seq, 60 + (seq % 3) as u32, detail);
            e.image = Image::child_of(
                Some(&bash),
                e.record.task.pid,
                0,
                "/usr/bin/curl".into(),
                argv(&["curl", "-s", "http://10.0.0.1/"]),
            );
            let e = Arc::new(e);
            buffers.push(e.clone());
            events.push(e);
        }
        let info = snaps.freeze(Scope::Host, "t", 20_000, &buffers, 0).unwrap();
        let procs = ProcessTable::default();
        let en = Enrich {
            ancestry_depth: 2,
            ..Enrich::BARE
        };
        assert_eq!(snaps.close(30_000, &procs, &en, false).unwrap(), [info.id]);
        snaps.committer().drain(std::time::Duration::from_secs(10));
        let stored = snaps.store().get(info.id).unwrap().expect("committed");
        let want: Vec<pb::Event> = events
            .iter()
            .map(|e| {
                let depth = if kept_first(e.kind()) { 2 } else { 0 };
                event_to_pb(
                    e,
                    &Enrich {
                        ancestry_depth: depth,
                        ..Enrich::BARE
                    },
                )
            })
            .collect();
        assert_eq!(stored.events, want);
        assert_eq!(
            stored.events[1].ancestry.len(),
            2,
            "a listen with two ancestors"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stored_snapshot_names_its_users_from_the_hosts_passwd() {
        let (dir, store) = test_store("fdr-snap-users");
        let passwd = dir.join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n\
             bob:x:1001:1001::/home/bob:/bin/sh\nunused:x:7:7::/:/bin/false\n",
        )
        .unwrap();
        let mut snaps = Snapshots::new(
            std::sync::Arc::new(store),
            Window {
                before_ns: 1_000_000,
                after_ns: 0,
            },
        )
        .with_node("node-1", "/nonexistent".into(), passwd);
        let mut buffers = test_buffers();
        // alice's process, bob's image ancestor, and 4242 (not in passwd).
        let bob = Image::root(
            50,
            1001,
            "/bin/sh".into(),
            Arc::from(vec!["sh".to_string()]),
        );
        for (seq, uid) in [(1u64, 1000u32), (2, 4242), (3, 0)] {
            let mut e = event(seq, 60 + seq as u32, Detail::Exit { status: 0 });
            e.record.task.uid = uid;
            e.image = Image::child_of(
                Some(&bob),
                e.record.task.pid,
                uid,
                "/bin/t".into(),
                Arc::from(vec!["t".to_string()]),
            );
            buffers.push(Arc::new(e));
        }
        let info = snaps.freeze(Scope::Host, "t", 10_000, &buffers, 0).unwrap();
        let procs = ProcessTable::default();
        assert_eq!(
            snaps.close(20_000, &procs, &Enrich::BARE, false).unwrap(),
            [info.id]
        );
        snaps.committer().drain(std::time::Duration::from_secs(10));
        let stored = snaps.store().get(info.id).unwrap().expect("committed");
        let names: Vec<(u32, &str)> = stored
            .users
            .iter()
            .map(|u| (u.uid, u.name.as_str()))
            .collect();
        assert_eq!(names, [(0, "root"), (1000, "alice"), (1001, "bob")]);
        // The export names them without a lookup; the others by number.
        let csv = fdr_proto::render::export::csv(&stored, &|uid| uid.to_string()).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let users: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(8).unwrap())
            .collect();
        assert_eq!(users, ["alice", "4242", "root"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn proc_net_addresses() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0016"),
            Some(("::1".into(), 22))
        );
        assert_eq!(parse_proc_addr("zz"), None);
    }
}
