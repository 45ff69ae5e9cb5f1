//! Ring buffers → decoder → process table → derived events → scope buffers and snapshots →
//! live subscribers.

use std::{
    path::PathBuf,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};

use crate::{
    api::state::{lock, State},
    config::CaptureConfig,
    derive::Deriver,
    event::{Event, Record},
    pipeline::clock::BootClock,
    pipeline::decode::decode,
    pipeline::merge::{Mark, RingMarks, CRITICAL, EVENTS},
    pipeline::ring::{register, StepClock},
    probes::Rings,
    recorder::snapshot::{self, Freeze},
};

use crate::analysis::model::rules::Rules;

/// How long stopping waits for the before-parts of snapshots being read.
const FILL_AT_STOP: Duration = Duration::from_secs(3);
/// Events handed to the buffer and subscribers at once.
const BATCH: usize = 256;
/// A non-tool process that changed account files and has been quiet this
/// long gets its account record.
const ACCOUNT_IDLE: Duration = Duration::from_secs(2);
/// Records read from one ring in one pass: adapted between these so that a
/// pass takes about `PASS_TARGET`.
const MIN_READ_CAP: usize = 32;
const MAX_READ_CAP: usize = 8192;
const PASS_TARGET: Duration = Duration::from_millis(10);
/// A pipeline step longer than this is logged.
const SLOW_STEP: Duration = Duration::from_millis(100);
/// How long the `/proc` sweep for lost exits runs often after start and
/// after exit records were dropped: long enough to find them gone and reap.
const SWEEP_EAGER_NS: u64 = 30_000_000_000;

/// How long it runs often after start: a first sweep over the table (a
/// thousand processes a sweep) and the next that reaps.
const SWEEP_AFTER_START_NS: u64 = 8_000_000_000;

/// Losses are remembered this long beyond a snapshot window's length.
const LOSS_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub exited_grace: Duration,
    pub poll_interval: Duration,
    pub capture: CaptureConfig,
    pub data_dir: PathBuf,
    pub analysis: crate::config::AnalysisConfig,
    pub ancestry_depth: usize,
    /// A snapshot window's whole length (before + after), in ns.
    pub window_ns: u64,
    /// Where raw kernel records are copied (debugging, benchmarks).
    pub record_raw: Option<PathBuf>,
}

impl PipelineConfig {
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        PipelineConfig {
            analysis: cfg.analysis.clone(),
            record_raw: cfg.probes.record_raw.clone(),
            ancestry_depth: cfg.attribution.ancestry_depth,
            window_ns: (cfg.recorder.snapshot_before + cfg.recorder.snapshot_after).as_nanos()
                as u64,
            exited_grace: cfg.recorder.exited_process_grace,
            poll_interval: cfg.probes.poll_interval,
            capture: cfg.capture.clone(),
            data_dir: cfg.recorder.data_dir.clone(),
        }
    }
}

/// The per-record step: turns kernel records into recorded events —
/// process context, scope, derived events, analysis, buffers, snapshots,
/// live subscribers — in that order. [`run`] drives it from the rings;
/// benchmarks drive it from recorded records ([`Step::replay`]).
pub struct Step {
    state: Arc<State>,
    clock: BootClock,
    seq: u64,
    batch: Vec<Arc<Event>>,
    /// Records read from the rings, not yet recorded (see `drain_pass`).
    records: Vec<Record>,
    /// Records being recorded (kept for its allocation).
    ready: Vec<Record>,
    /// How far each ring has been read.
    marks: RingMarks,
    derived: Vec<Record>,
    deriver: Deriver,
    analyzer: crate::analysis::Analyzer,
    scopes: crate::attribution::scope::ScopeResolver,
    /// Tells the container watcher a new container was seen.
    wake_containers: tokio::sync::mpsc::Sender<()>,
    /// Raw records are appended here, length-prefixed.
    tap: Option<std::io::BufWriter<std::fs::File>>,
    /// An account change was recorded: watched files were likely replaced.
    refresh_watch: bool,
    /// Resolves watched files off the event path (`run` starts it).
    watch: Option<super::watched::WatchRefresher>,
    /// The last pass left records in a ring.
    more: bool,
    /// Records read from one ring in one pass.
    read_cap: usize,
    /// Records read from the rings so far.
    read_total: u64,
    /// Exit records are not captured (switched off): sweep `/proc` often.
    exits_missed: bool,
    /// Boot ns until which the sweep runs often (after start, after lost exits).
    sweep_eager_until: u64,
    /// Snapshots' before-parts being read on blocking threads.
    fills: Vec<tokio::task::JoinHandle<Option<fdr_proto::v1::SnapshotInfo>>>,
    /// The agent is stopping: before-parts are read at once.
    stopping: bool,
    /// Per-cgroup kernel drop counters at the last sample.
    scope_drops_seen: std::collections::HashMap<(u64, u16), u64>,
    /// Kernel drop counters at the last sample, by kind number.
    kernel_drops_seen: [u64; fdr_common::MAX_KINDS as usize],
}

impl Step {
    /// A step writing into `state`; `wake_containers` is told of
    /// containers seen for the first time.
    pub fn new(
        state: Arc<State>,
        cfg: &PipelineConfig,
        wake_containers: tokio::sync::mpsc::Sender<()>,
    ) -> std::io::Result<Step> {
        // The host's node name, `/etc/passwd` and cgroup2 mount.
        let deriver = Deriver::new(&cfg.capture, &state.node, &state.host);
        let scopes = crate::attribution::scope::ScopeResolver::with_root(
            crate::attribution::scope::cgroup2_root(&state.host),
        );
        Ok(Step {
            state,
            clock: BootClock::sample(),
            seq: 0,
            batch: Vec::with_capacity(BATCH),
            records: Vec::new(),
            ready: Vec::new(),
            marks: RingMarks::default(),
            derived: Vec::new(),
            deriver,
            analyzer: crate::analysis::Analyzer::new(&cfg.analysis, cfg.ancestry_depth),
            scopes,
            wake_containers,
            refresh_watch: false,
            watch: None,
            more: false,
            read_cap: 1024,
            read_total: 0,
            exits_missed: cfg
                .capture
                .disabled_kinds
                .iter()
                .any(|k| k == crate::event::EventKind::Exit.name()),
            // Processes that exited while the probes were being attached:
            // found gone by the first sweep, reaped by the next ones.
            sweep_eager_until: BootClock::boot_now_ns() + SWEEP_AFTER_START_NS,
            fills: Vec::new(),
            stopping: false,
            scope_drops_seen: std::collections::HashMap::new(),
            kernel_drops_seen: [0; fdr_common::MAX_KINDS as usize],
            tap: match &cfg.record_raw {
                Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
                None => None,
            },
        })
    }

    /// Runs raw kernel records (as the rings hold them) through the step,
    /// as one pass of [`run`] would.
    pub fn replay<'a>(&mut self, raw: impl IntoIterator<Item = &'a [u8]>) {
        for item in raw {
            self.decode_one(item);
        }
        self.record_pending(u64::MAX);
    }

    /// Records what is pending in both rings, in time order, at most
    /// `read_cap` records a ring per pass (so one pass never keeps the
    /// task from its other duties for long; `more` then asks for another
    /// pass at once).
    fn drain(&mut self, critical: &mut RingBuf<MapData>, events: &mut RingBuf<MapData>) {
        let began = std::time::Instant::now();
        self.drain_pass(critical, events);
        // Passes of about PASS_TARGET: fewer records a pass when one took
        // longer (a slow build, a loaded machine), more when it was quick.
        let took = began.elapsed();
        if took > PASS_TARGET {
            self.read_cap = (self.read_cap / 2).max(MIN_READ_CAP);
        } else if self.more && took < PASS_TARGET / 4 {
            self.read_cap = (self.read_cap * 2).min(MAX_READ_CAP);
        }
    }

    /// One pass: reads the rings, then records, in time order, what no
    /// record still in either ring can precede. A process's records travel
    /// in two rings (its exec in the critical one, its fork and exit in the
    /// other): a record read from one ring waits while the other may still
    /// hold an earlier one (it stopped at its read cap, or was read before
    /// the record was written), so a fork is never recorded after its exec,
    /// nor an exit before the changes the process made.
    fn drain_pass(&mut self, critical: &mut RingBuf<MapData>, events: &mut RingBuf<MapData>) {
        let [read_critical, read_events] = self.marks.to_read(self.records.len(), self.read_cap);
        if read_critical {
            let m = self.read_ring(critical);
            self.marks.set(CRITICAL, m);
        }
        if read_events {
            let m = self.read_ring(events);
            self.marks.set(EVENTS, m);
        }
        // Once more: records committed to the critical ring while the other
        // one was read (an exec before the exit just read) are then in this
        // pass. Cheap when it is empty.
        if read_critical && !self.marks.capped(CRITICAL) {
            let m = self.read_ring(critical);
            self.marks.set(CRITICAL, m);
        }
        self.more = self.marks.capped(CRITICAL) || self.marks.capped(EVENTS);
        self.record_pending(self.marks.release_up_to());
    }

    /// Records the records read so far up to `up_to` (boot ns), in time
    /// order; later ones wait for the next pass.
    fn record_pending(&mut self, up_to: u64) {
        self.records.sort_by_key(|r| r.boot_ns);
        let ready = self.records.partition_point(|r| r.boot_ns <= up_to);
        if ready == 0 {
            return;
        }
        let mut now = std::mem::take(&mut self.ready);
        now.extend(self.records.drain(..ready));
        let state = self.state.clone();
        let mut procs = lock(&state.procs);
        for rec in now.drain(..) {
            let ev = self.record(rec, &mut procs);
            self.deriver.observe(&ev, &procs, &mut self.derived);
            self.accept(ev);
            self.push_derived(&mut procs);
        }
        drop(procs);
        self.ready = now;
        self.publish();
        self.report_new_containers();
    }

    /// Registers containers seen for the first time and has the watcher
    /// look them up (off the event path).
    fn report_new_containers(&mut self) {
        let new = self.scopes.take_new();
        if new.is_empty() {
            return;
        }
        let mut reg = lock(&self.state.containers);
        for (id, cgroup_id, path) in new {
            reg.sighted(&id, cgroup_id, path);
        }
        drop(reg);
        // Full: a look is already pending, which will see these too.
        let _ = self.wake_containers.try_send(());
        self.refresh_watch = true;
    }

    /// Records a container start or stop.
    fn container_notice(&mut self, n: crate::attribution::containers::Notice) {
        // Its own sensitive files are resolved now (it runs in its root),
        // or forgotten (it stopped).
        self.refresh_watch = true;
        let now = BootClock::boot_now_ns();
        let rec = Record {
            boot_ns: now,
            cpu: 0,
            task: crate::event::Task {
                pid: n.pid,
                tid: n.pid,
                ppid: 0,
                uid: 0,
                gid: 0,
                loginuid: None,
                cgroup_id: n.cgroup_id,
                start_ns: 0,
                comm: crate::event::Comm::default(),
                has_tty: false,
            },
            detail: crate::event::Detail::Container(Box::new(crate::event::ContainerDetail {
                id: n.id,
                change: n.change,
                source: n.source,
            })),
        };
        // In time order with the kernel's records still waiting to be
        // recorded (a stop after its container's last events).
        self.records.push(rec);
        self.record_pending(self.marks.release_up_to());
    }

    /// Records an event and what the models and detectors make of it.
    /// The trigger goes first in the timeline, its audits right after.
    fn accept(&mut self, ev: Arc<Event>) {
        let raised = self
            .analyzer
            .analyze(&ev, &self.state.analysis(), self.seq + 1);
        if raised.is_empty() {
            self.push(ev);
        } else {
            self.push(ev.clone());
            for detail in raised {
                let e = self.raised_event(&ev, detail);
                self.push(e);
            }
        }
        self.released_verdicts();
    }

    /// The verdicts on a new container's events held until it was named
    /// (see `Analyzer::analyze`): the events are recorded already, what
    /// they raise is recorded now.
    fn released_verdicts(&mut self) {
        if !self.analyzer.has_released() {
            return;
        }
        let state = self.state.clone();
        while let Some((trigger, raised)) =
            self.analyzer.next_released(&state.analysis(), self.seq + 1)
        {
            for detail in raised {
                let e = self.raised_event(&trigger, detail);
                self.push(e);
            }
        }
    }

    /// An event the agent raises about `trigger` (an audit, a learned
    /// model item): same time, process and scope.
    fn raised_event(&mut self, trigger: &Event, detail: crate::event::Detail) -> Arc<Event> {
        self.seq += 1;
        self.state.counters.add_seen(detail.kind(), 1);
        Arc::new(Event {
            seq: self.seq,
            time_ns: trigger.time_ns,
            record: Record {
                boot_ns: trigger.record.boot_ns,
                cpu: trigger.record.cpu,
                task: trigger.record.task.clone(),
                detail,
            },
            image: trigger.image.clone(),
            scope: trigger.scope.clone(),
            unit: trigger.unit.clone(),
        })
    }

    /// Decodes one raw record into `records`; its time when it decoded.
    fn decode_one(&mut self, item: &[u8]) -> Option<u64> {
        match decode(item) {
            Ok(rec) => {
                let ns = rec.boot_ns;
                self.records.push(rec);
                Some(ns)
            }
            Err(err) => {
                self.state.counters.decode_errors.fetch_add(1, Relaxed);
                tracing::debug!(%err, "undecodable record");
                None
            }
        }
    }

    /// Decodes what is pending in `ring` into `records`, at most
    /// `read_cap` records, and says how far the ring was read.
    fn read_ring(&mut self, ring: &mut RingBuf<MapData>) -> Mark {
        // Anything written after this read finds the ring empty is later.
        let began = BootClock::boot_now_ns();
        let mut n = 0;
        let mut last = 0;
        while let Some(item) = ring.next() {
            n += 1;
            if let Some(tap) = &mut self.tap {
                use std::io::Write;
                let len = (item.len() as u32).to_le_bytes();
                if let Err(err) = tap.write_all(&len).and_then(|()| tap.write_all(&item)) {
                    tracing::warn!(%err, "raw record file: stopped copying");
                    self.tap = None;
                }
            }
            self.read_total += 1;
            if let Some(ns) = self.decode_one(&item) {
                last = ns;
            }
            if n >= self.read_cap {
                return Mark::Capped(last);
            }
        }
        Mark::Drained(began)
    }

    /// Turns a record into an event with the process's context.
    fn record(
        &mut self,
        rec: Record,
        procs: &mut crate::process::table::ProcessTable,
    ) -> Arc<Event> {
        let (image, who) = match &rec.detail {
            // Not a process's doing: the table is not told of it.
            crate::event::Detail::Container(c) => (
                procs.image(rec.task.pid),
                crate::attribution::scope::Attribution {
                    scope: crate::attribution::scope::Scope::Container(c.id.clone()),
                    unit: None,
                },
            ),
            _ => (procs.apply(&rec), self.scopes.resolve(rec.task.cgroup_id)),
        };
        self.seq += 1;
        self.state.counters.add_seen(rec.detail.kind(), 1);
        Arc::new(Event {
            seq: self.seq,
            time_ns: self.clock.wall_ns(rec.boot_ns),
            record: rec,
            image,
            scope: who.scope,
            unit: who.unit,
        })
    }

    fn push_derived(&mut self, procs: &mut crate::process::table::ProcessTable) {
        let mut derived = std::mem::take(&mut self.derived);
        for rec in derived.drain(..) {
            if matches!(rec.detail, crate::event::Detail::Account(_)) {
                self.refresh_watch = true;
            }
            let ev = self.record(rec, procs);
            self.accept(ev);
        }
        self.derived = derived;
    }

    fn push(&mut self, ev: Arc<Event>) {
        self.batch.push(ev);
        if self.batch.len() >= BATCH {
            self.publish();
        }
    }

    fn publish(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        {
            let mut buffers = lock(&self.state.buffers);
            for ev in &self.batch {
                buffers.push(ev.clone());
            }
        }
        {
            let mut snaps = lock(&self.state.snapshots);
            for ev in &self.batch {
                snaps.observe(ev);
            }
        }
        self.state.live.publish(&self.batch);
        self.batch.clear();
        self.freeze_for_incidents();
    }

    /// Freezes the snapshots of incidents opened since the last publish
    /// (now that their triggers are in the buffers).
    fn freeze_for_incidents(&mut self) {
        if self.analyzer.freezes.is_empty() {
            return;
        }
        let state = self.state.clone();
        for f in std::mem::take(&mut self.analyzer.freezes) {
            // Opened here (cheap); its before-part is read from a copy of
            // the scope's buffer on a blocking thread, off capture's path.
            let frozen = {
                let mut buffers = lock(&state.buffers);
                let frozen = lock(&state.snapshots)
                    .begin_freeze(f.scope, &f.reason, f.at_ns, &buffers, f.serial);
                // The copy is charged: the buffers make room.
                buffers.enforce_budget();
                frozen
            };
            match frozen {
                Ok(Freeze::Joined(info)) => {
                    self.analyzer
                        .snapshot_frozen(&state.analysis(), f.serial, info.id)
                }
                Ok(Freeze::Filling(info, filling)) => {
                    crate::store::commit::mark_open(&state.committer, &info);
                    self.analyzer
                        .snapshot_frozen(&state.analysis(), f.serial, info.id);
                    if self.stopping {
                        // Nothing left to capture: read it here, before the
                        // open snapshots are committed.
                        snapshot::complete(&state.buffers, &state.snapshots, filling);
                    } else {
                        let state = state.clone();
                        self.fills.retain(|h| !h.is_finished());
                        self.fills.push(tokio::task::spawn_blocking(move || {
                            snapshot::complete(&state.buffers, &state.snapshots, filling)
                        }));
                    }
                }
                Err(err) => {
                    tracing::error!(%err, serial = f.serial, "freezing an incident's snapshot")
                }
            }
        }
    }

    /// Notes the kernel drops since the last sample, at this time, for the
    /// snapshots whose windows hold it: those the kernel counted by cgroup
    /// for that cgroup's scope, the rest (cgroups the kernel's map forgot)
    /// for the whole host.
    fn sample_kernel_drops(&mut self) {
        let drops = self.state.kernel_drops();
        let mut fresh: Vec<(crate::event::EventKind, u64)> = Vec::new();
        for (kind, total) in drops {
            let Some(last) = self.kernel_drops_seen.get_mut(kind as usize) else {
                continue;
            };
            let new = total.saturating_sub(*last);
            *last = total;
            if new > 0 && kind == crate::event::EventKind::Exit {
                // Lost exits leave "live" processes behind: sweep often
                // until they are reaped.
                self.sweep_eager_until = BootClock::boot_now_ns() + SWEEP_EAGER_NS;
            }
            if new > 0 {
                fresh.push((kind, new));
            }
        }
        if fresh.is_empty() {
            return;
        }
        let now = self.clock.wall_ns(BootClock::boot_now_ns());
        let mut scoped: Vec<(
            crate::attribution::scope::Scope,
            crate::event::EventKind,
            u64,
        )> = Vec::new();
        for (cgroup, kind, total) in self.state.scope_drops() {
            let last = self
                .scope_drops_seen
                .entry((cgroup, kind as u16))
                .or_insert(0);
            // A smaller total: the kernel forgot the entry and began again.
            let new = if total >= *last { total - *last } else { total };
            *last = total;
            if new == 0 {
                continue;
            }
            let scope = self.scopes.resolve(cgroup).scope;
            if let Some(f) = fresh.iter_mut().find(|(k, _)| *k == kind) {
                let n = new.min(f.1);
                f.1 -= n;
                scoped.push((scope, kind, n));
            }
        }
        let mut snaps = lock(&self.state.snapshots);
        for (scope, kind, n) in scoped {
            snaps.note_scope_drops(scope, kind, now, n);
        }
        for (kind, n) in fresh {
            snaps.note_kernel_drops(kind, now, n);
        }
    }

    /// Periodic work: clock, pruning, idle account changes.
    fn housekeeping(&mut self, cfg: &PipelineConfig) {
        self.clock = BootClock::sample();
        self.sample_kernel_drops();
        let now = BootClock::boot_now_ns();
        let state = self.state.clone();
        let mut procs = lock(&state.procs);
        procs.prune(now, cfg.exited_grace.as_nanos() as u64);
        let counts = procs.counts();
        for (c, v) in state.counters.processes.iter().zip([
            procs.len() as u64,
            counts.live,
            counts.exited,
            counts.pruned,
            counts.reaped,
        ]) {
            c.store(v, Relaxed);
        }
        let proc = state.host.proc();
        self.deriver.flush_idle(
            now,
            ACCOUNT_IDLE.as_nanos() as u64,
            |pid| process_alive(&proc, pid),
            &mut self.derived,
        );
        self.push_derived(&mut procs);
        drop(procs);
        crate::process::table::sweep_dropped_exits(
            &state.procs,
            self.exits_missed || now < self.sweep_eager_until,
        );
        self.publish();
        self.close_snapshots(false);
        self.analyzer.flush(
            &state.analysis(),
            self.clock.wall_ns(BootClock::boot_now_ns()),
        );
        self.released_verdicts();
        self.publish();
        // Losses older than any window that can still be frozen.
        let horizon = self
            .clock
            .wall_ns(now)
            .saturating_sub(cfg.window_ns + LOSS_MARGIN.as_nanos() as u64);
        lock(&state.buffers).forget_losses_before(horizon);
        lock(&state.snapshots).forget_losses_before(horizon);
        let scopes = &self.scopes;
        let freed =
            lock(&state.buffers).free_gone(self.clock.wall_ns(now), |cg| !scopes.exists(cg));
        if freed > 0 {
            tracing::debug!(freed, "buffers of gone containers freed");
        }
    }

    /// Hands the snapshots whose after-window has closed to the committer;
    /// with `all` (shutdown), every open one, cut short. Each lock is held
    /// only for its step (detaching, copying ancestors, container
    /// metadata); conversion and writing happen on the committer thread.
    fn close_snapshots(&mut self, all: bool) {
        if !lock(&self.state.snapshots).has_open() {
            return;
        }
        let now = self.clock.wall_ns(BootClock::boot_now_ns());
        let (closing, committer) = {
            let mut snaps = lock(&self.state.snapshots);
            (snaps.take_closed(now, all), snaps.committer().clone())
        };
        if closing.is_empty() {
            return;
        }
        let roots: Vec<Vec<u32>> = closing.iter().map(|c| c.roots()).collect();
        let mut closing = closing;
        {
            let procs = lock(&self.state.procs);
            for (c, r) in closing.iter_mut().zip(&roots) {
                c.gather_from(r, &procs);
            }
        }
        {
            let containers = lock(&self.state.containers);
            for c in &mut closing {
                c.set_container(Some(&*containers));
            }
        }
        let mut ids = Vec::new();
        for c in closing {
            let id = c.id();
            match c.submit(&committer, self.state.ancestry_depth) {
                Ok(Some(id)) => ids.push(id),
                Ok(None) => {}
                Err(err) => tracing::error!(%err, id, all, "committing snapshot"),
            }
        }
        if !ids.is_empty() {
            tracing::info!(?ids, all, "snapshots closed, committing");
        }
    }
}

/// Whether process `pid` still exists in the host's `/proc` at `proc`
/// (one `stat`, for the few processes with account changes pending).
fn process_alive(proc: &std::path::Path, pid: u32) -> bool {
    proc.join(pid.to_string()).exists()
}

/// Has the watched files resolved again (the host's and each container's)
/// and handed to the kernel, on the resolver's thread: never a filesystem
/// walk on the pipeline's task.
fn refresh_watch(rec: &Step) {
    if let Some(w) = &rec.watch {
        w.wake();
    }
}

/// Empty polls after which the reader sleeps: it then reads when the next
/// record wakes it (or, as a safety net, every [`ASLEEP_POLL`]) instead of
/// every `probes.poll_interval`, so an idle node costs no polling.
const QUIET_POLLS: u32 = 10;
/// The reader's timer while it sleeps.
const ASLEEP_POLL: Duration = Duration::from_secs(1);

/// Whether the reader polls (awake) or waits for the kernel (asleep).
#[derive(Debug, Default)]
struct Idle {
    quiet_polls: u32,
    asleep: bool,
}

impl Idle {
    /// After a step that `read` records (or not), and was a poll that found
    /// nothing pending (`quiet`): `Some(true)` to go to sleep, `Some(false)`
    /// to wake up, `None` to stay as is.
    fn after_step(&mut self, read: bool, quiet: bool) -> Option<bool> {
        if read {
            self.quiet_polls = 0;
            if self.asleep {
                self.asleep = false;
                return Some(false);
            }
            return None;
        }
        if quiet && !self.asleep {
            self.quiet_polls += 1;
            if self.quiet_polls >= QUIET_POLLS {
                self.asleep = true;
                return Some(true);
            }
        }
        None
    }

    fn awake(&mut self) {
        self.asleep = false;
        self.quiet_polls = 0;
    }
}

/// Sets the reader's sleep flag; whether it was set. Awake is always safe
/// (the poll tick reads); a reader whose flag could not be set to asleep
/// must keep polling (no record would wake it).
fn set_sleep(flag: &mut crate::probes::ReaderSleep, asleep: bool) -> bool {
    match flag.set(asleep) {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(%err, asleep, "reader sleep flag not set");
            false
        }
    }
}

/// Reads and records events until `shutdown` fires: on every poll tick, and
/// sooner when the kernel wakes us because a burst is filling a ring (or,
/// when the reader sleeps, because of any record).
/// The pipeline's channels to the container watcher, and the rules a
/// configuration reload hands it (swapped in between two steps).
pub struct ContainerIo {
    pub wake_containers: tokio::sync::mpsc::Sender<()>,
    pub notices: tokio::sync::mpsc::UnboundedReceiver<crate::attribution::containers::Notice>,
    pub rules: tokio::sync::watch::Receiver<Arc<crate::analysis::model::rules::Rules>>,
}

pub async fn run(
    rings: Rings,
    state: Arc<State>,
    cfg: PipelineConfig,
    io: ContainerIo,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let Rings {
        events,
        critical,
        mut sleep,
    } = rings;
    let mut events = register(events)?;
    let mut critical = register(critical)?;
    let mut rec = Step::new(state.clone(), &cfg, io.wake_containers)?;
    rec.watch = Some(super::watched::WatchRefresher::spawn(
        state,
        cfg.capture.clone(),
        cfg.data_dir.clone(),
    )?);
    // Containers already running get their keys at once.
    refresh_watch(&rec);
    let mut notices = io.notices;
    let mut rules = io.rules;
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let mut watch_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.capture.watch_refresh,
        cfg.capture.watch_refresh,
    );
    let mut snapshot_tick = tokio::time::interval(Duration::from_millis(100));
    let mut poll = tokio::time::interval(cfg.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut idle = Idle::default();
    let mut snapshots_open = false;
    loop {
        let read_before = rec.read_total;
        // Each branch runs right after its wake-up: its duration is how
        // long capture stood still (the wait before it is not).
        let woke = StepClock::start;
        let step: (StepClock, &str);
        tokio::select! {
            _ = shutdown.changed() => {
                rec.stopping = true;
                rec.drain(critical.get_mut(), events.get_mut());
                // What waited for a later read: nothing more is coming.
                rec.record_pending(u64::MAX);
                // Verdicts still waiting for a container's name: now.
                rec.analyzer.release_all();
                rec.released_verdicts();
                rec.publish();
                if let Some(tap) = &mut rec.tap {
                    use std::io::Write;
                    let _ = tap.flush();
                }
                // Before-parts still being read join their snapshots first.
                for h in std::mem::take(&mut rec.fills) {
                    if tokio::time::timeout(FILL_AT_STOP, h).await.is_err() {
                        tracing::warn!("a snapshot's before-window was still being read at stop");
                    }
                }
                rec.close_snapshots(true);
                let now = rec.clock.wall_ns(BootClock::boot_now_ns());
                rec.analyzer.flush(&rec.state.analysis(), now);
                return Ok(());
            }
            _ = housekeeping.tick() => {
                step = (woke(), "housekeeping");
                rec.housekeeping(&cfg);
                if idle.asleep {
                    // What API replies freed meanwhile (no allocation
                    // activity returns it while nothing is recorded).
                    crate::util::mem::release_free_memory();
                }
            }
            _ = snapshot_tick.tick(), if snapshots_open => {
                step = (woke(), "snapshots");
                // Drops are noted to the second; sampled here only while a
                // snapshot may close (else once a second, in housekeeping).
                if lock(&rec.state.snapshots).has_open() {
                    rec.sample_kernel_drops();
                }
                rec.close_snapshots(false);
            }
            _ = watch_tick.tick() => {
                step = (woke(), "watch refresh");
                refresh_watch(&rec);
            }
            _ = poll.tick() => {
                step = (woke(), "poll");
                rec.drain(critical.get_mut(), events.get_mut());
            }
            // Through the scheduler: a task that never waits would keep
            // every task queued behind it on this worker (API calls) waiting.
            _ = tokio::task::yield_now(), if rec.more => {
                step = (woke(), "more");
                rec.drain(critical.get_mut(), events.get_mut());
            }
            Some(n) = notices.recv() => {
                step = (woke(), "container notice");
                rec.container_notice(n);
            }
            Ok(()) = rules.changed() => {
                step = (woke(), "rules reload");
                let new = Rules::clone(&rules.borrow_and_update());
                lock(&rec.state.models).set_rules(new);
                tracing::info!("analysis rules reloaded: in force from the next event");
            }
            guard = events.readable_mut() => {
                step = (woke(), "events ring");
                let mut guard = guard?;
                rec.drain(critical.get_mut(), guard.get_inner_mut());
                guard.clear_ready();
            }
            guard = critical.readable_mut() => {
                step = (woke(), "critical ring");
                let mut guard = guard?;
                rec.drain(guard.get_inner_mut(), events.get_mut());
                guard.clear_ready();
            }
        }
        if std::mem::take(&mut rec.refresh_watch) {
            refresh_watch(&rec);
        }
        snapshots_open = lock(&rec.state.snapshots).has_open();
        let read = rec.read_total != read_before;
        let quiet = step.1 == "poll" && !read && !rec.more && rec.records.is_empty();
        match idle.after_step(read, quiet) {
            Some(true) => {
                // Asleep only if nothing came in meanwhile: a record written
                // before the flag was set did not wake us. (One whose program
                // read the flag just before it was set and that is committed
                // after this drain waits for the safety tick: a delay of at
                // most ASLEEP_POLL, never a loss.)
                let flagged = set_sleep(&mut sleep, true);
                rec.drain(critical.get_mut(), events.get_mut());
                if !flagged || rec.read_total != read_before || rec.more || !rec.records.is_empty()
                {
                    let _ = set_sleep(&mut sleep, false);
                    idle.awake();
                } else {
                    crate::util::mem::release_free_memory();
                    poll = tokio::time::interval_at(
                        tokio::time::Instant::now() + ASLEEP_POLL,
                        ASLEEP_POLL,
                    );
                    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                }
            }
            Some(false) => {
                // The record that woke us cleared the flag; a timer tick did not.
                let _ = set_sleep(&mut sleep, false);
                poll = tokio::time::interval(cfg.poll_interval);
                poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            }
            None => {}
        }
        let (took, blocked) = step.0.finish();
        rec.state.counters.pipeline_step(took, blocked);
        if blocked.is_some_and(|b| b > SLOW_STEP) {
            tracing::warn!(
                step = step.1,
                ms = took.as_millis() as u64,
                blocked_ms = blocked.map_or(0, |b| b.as_millis() as u64),
                "pipeline step blocked: capture stood still"
            );
        }
    }
}
