//! Runs every recorded event past the runtime models, the rules and the
//! detectors, and turns what they find into audit events that belong to
//! incidents; learned items become events too. Persists what changed.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use prost::Message;
use tokio::sync::broadcast;

use crate::{
    analysis::incidents::{
        detect::{DetectConfig, Detectors},
        AuditEntry, Incident, Incidents,
    },
    analysis::model::{self, items, ModelSet, Verdict},
    analysis::persist,
    analysis::wire::incident_to_pb,
    attribution::{
        containers::{ContainerMeta, ContainerRegistry, Naming},
        scope::Scope,
    },
    config::AnalysisConfig,
    config::ConfigError,
    event::{AuditDetail, Detail, Event, LearnedDetail},
    store::{commit::Committer, Store, StoreError},
    util::{self, lock},
};

/// What analysis reads and writes of the agent's shared state (the daemon
/// lends it from its `State`).
pub struct Shared<'a> {
    pub containers: &'a std::sync::Mutex<ContainerRegistry>,
    pub models: &'a std::sync::Mutex<ModelSet>,
    pub incidents: &'a std::sync::Mutex<Incidents>,
    /// Incidents as they open and change.
    pub incident_live: &'a broadcast::Sender<Arc<Incident>>,
    pub store: &'a Store,
    /// Every write to `store` goes through it.
    pub committer: &'a Committer,
    /// The OTLP export's outbox, when `[export.otlp]` is enabled: incident
    /// writes queue its records in their own transaction.
    pub export: Option<&'a Arc<fdr_export::Outbox>>,
}

/// Why models and incidents could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often a container without runtime metadata is looked up again for
/// its model key.
const META_RECHECK_NS: u64 = 1_000_000_000;

// A new container's first events: held until the runtime names it.
//
// Until the runtime names a container, nothing says which image's model
// judges it. Two ways were open: judge the unnamed container against
// nothing and never learn from it until it is named, or hold its verdicts
// until it is named. The first loses exactly what matters: a dropped
// binary run in a container's first second is neither learned nor
// flagged, since no model can judge it then, and judging it later means
// holding it anyway. So the analysis of a new container's events (model
// verdicts and detectors, in order, so that per-container detector state
// sees them in order) waits until the runtime names it, then runs against
// the image's model — an active model flags what it has not seen, and the
// incident opens with the pod's name. The events themselves are recorded
// in the buffers, and served live, at once: only the verdict waits.
//
// The wait is bounded: in time (`HOLD_NS` from the container's first
// event; then its events are judged with what is known: its own
// `container:<id>` model, merged into the image's when the runtime names
// it later, as before) and in memory (`HOLD_BYTES`, `HOLD_EVENTS` over all
// containers; past them the container held longest is judged at once, and
// counted). A container the runtime says it does not know, or that stops,
// is judged at once. The container watcher is woken when a container is
// first seen and names CRI containers while still `Created`, so the wait is
// usually milliseconds.

/// Longest a new container's verdicts wait for its name.
const HOLD_NS: u64 = 2_000_000_000;
/// Bytes of events held over all containers (as `Event::approx_bytes`).
const HOLD_BYTES: usize = 8 << 20;
/// Events held over all containers.
const HOLD_EVENTS: usize = 32_768;

/// The events of one container waiting for its name.
struct Hold {
    /// Wall-clock ns of its first held event.
    since_ns: u64,
    events: VecDeque<Arc<Event>>,
    bytes: usize,
}

/// What the pipeline is to judge next, after a container's hold ends.
enum Ready {
    Event(Arc<Event>),
    /// The container stopped while held: forgotten after its events.
    Forget(Scope, Arc<str>),
}

/// How holds ended, since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HoldStats {
    /// Containers whose verdicts were held.
    pub held: u64,
    /// Holds ended by the runtime naming the container (or saying it
    /// does not know it).
    pub named: u64,
    /// Holds ended by `HOLD_NS` passing: judged without a name.
    pub timed_out: u64,
    /// Holds ended early because the holds' memory was full (judged
    /// without a name, as on a time-out): the holds' drops.
    pub overflowed: u64,
    /// Events whose verdict waited.
    pub events: u64,
}

/// A snapshot to freeze for a newly opened incident.
#[derive(Debug, Clone)]
pub struct Freeze {
    pub scope: Scope,
    pub serial: u64,
    pub at_ns: u64,
    pub reason: String,
}

pub struct Analyzer {
    enabled: bool,
    detectors: Detectors,
    detect_cfg: DetectConfig,
    /// Model key per container: (key, looked up at, from runtime metadata).
    container_keys: HashMap<Arc<str>, (Arc<str>, u64, bool)>,
    /// Pod sandboxes: no model of their own.
    sandboxes: std::collections::HashSet<Arc<str>>,
    /// New containers whose verdicts wait for their name.
    holds: HashMap<Arc<str>, Hold>,
    held_bytes: usize,
    held_events: usize,
    /// Held events whose container's wait ended, to judge next (in order).
    ready: VecDeque<Ready>,
    pub hold_stats: HoldStats,
    /// Model key per host service unit or executable.
    host_keys: HashMap<Arc<str>, Arc<str>>,
    /// Ancestors kept with each audit in an incident.
    depth: usize,
    /// Incidents updated since the last flush.
    dirty: BTreeSet<u64>,
    pub freezes: Vec<Freeze>,
}

impl Analyzer {
    pub fn new(cfg: &AnalysisConfig, depth: usize) -> Self {
        Analyzer {
            enabled: cfg.enabled,
            detectors: Detectors::default(),
            detect_cfg: DetectConfig {
                window_ns: cfg.exfil_window.as_nanos() as u64,
                scan_threshold: cfg.scan_threshold.max(2),
                scan_window_ns: cfg.scan_window.as_nanos() as u64,
            },
            container_keys: HashMap::new(),
            sandboxes: std::collections::HashSet::new(),
            holds: HashMap::new(),
            held_bytes: 0,
            held_events: 0,
            ready: VecDeque::new(),
            hold_stats: HoldStats::default(),
            host_keys: HashMap::new(),
            depth,
            dirty: BTreeSet::new(),
            freezes: Vec::new(),
        }
    }

    fn key(&mut self, ev: &Event, state: &Shared<'_>) -> Arc<str> {
        let Scope::Container(id) = &ev.scope else {
            // Keyed by what `key_for` uses: the service unit, else the
            // executable (an exec's: the program that ran it).
            let src = match (&ev.unit, &ev.record.detail) {
                (Some(u), _) if u.ends_with(".service") => u,
                (_, Detail::Exec { .. }) => match &ev.image.parent {
                    Some(p) => &p.exe,
                    None => return model::key_for(ev, None),
                },
                _ => &ev.image.exe,
            };
            if let Some(k) = self.host_keys.get(src) {
                return k.clone();
            }
            if self.host_keys.len() >= 8192 {
                self.host_keys.clear();
            }
            let key = model::key_for(ev, None);
            self.host_keys.insert(src.clone(), key.clone());
            return key;
        };
        if let Some((key, at, final_)) = self.container_keys.get(id) {
            if *final_ || ev.time_ns.saturating_sub(*at) < META_RECHECK_NS {
                return key.clone();
            }
        }
        let meta = lock(state.containers).get(id);
        if let Some(m) = &meta {
            self.adopt(id, m, state);
            if let Some((key, _, _)) = self.container_keys.get(id) {
                return key.clone();
            }
        }
        let key = model::key_for(ev, meta.as_deref());
        self.container_keys
            .insert(id.clone(), (key.clone(), ev.time_ns, meta.is_some()));
        key
    }

    /// The runtime named container `id`: its model key becomes the
    /// image's (what it learned under its own id moves there; a sandbox's
    /// is dropped), and its incidents name its pod.
    fn adopt(&mut self, id: &Arc<str>, meta: &Arc<ContainerMeta>, state: &Shared<'_>) {
        if matches!(self.container_keys.get(id), Some((_, _, true))) {
            return;
        }
        let key = model::container_key(id, Some(meta));
        if let Some((old, _, false)) = self.container_keys.get(id) {
            if *old != key {
                let mut models = lock(state.models);
                if meta.sandbox {
                    models.remove(old);
                } else {
                    // What the container did before belongs to the
                    // image's model.
                    models.merge_into(old, &key);
                }
            }
        }
        if meta.sandbox {
            if self.sandboxes.len() >= 65_536 {
                self.sandboxes.clear();
            }
            self.sandboxes.insert(id.clone());
        }
        self.container_keys
            .insert(id.clone(), (key.clone(), util::now_ns(), true));
        let renamed = lock(state.incidents).name_container(id, meta, &key);
        for inc in renamed {
            self.dirty.insert(inc.serial);
            if state.incident_live.receiver_count() > 0 {
                let _ = state.incident_live.send(Arc::new(inc));
            }
        }
    }

    /// Whether `ev`'s verdict waits for its container's name (then it is
    /// held, or queued behind held ones).
    fn hold(&mut self, ev: &Arc<Event>, id: &Arc<str>, state: &Shared<'_>) -> bool {
        if self.container_keys.contains_key(id) {
            return false; // named, or judged without a name already
        }
        if !self.holds.contains_key(id) {
            let naming = lock(state.containers).naming(id);
            match naming {
                Naming::Pending => {}
                Naming::Named(m) => {
                    self.adopt(id, &m, state);
                    return false;
                }
                Naming::Unnamed => {
                    let key = model::container_key(id, None);
                    self.container_keys
                        .insert(id.clone(), (key, ev.time_ns, false));
                    return false;
                }
            }
            self.holds.insert(
                id.clone(),
                Hold {
                    since_ns: ev.time_ns,
                    events: VecDeque::new(),
                    bytes: 0,
                },
            );
            self.hold_stats.held += 1;
        }
        let Some(h) = self.holds.get_mut(id) else {
            return false;
        };
        if ev.time_ns.saturating_sub(h.since_ns) >= HOLD_NS {
            self.hold_stats.timed_out += 1;
            self.release(id);
            self.ready.push_back(Ready::Event(ev.clone()));
            return true;
        }
        let bytes = ev.approx_bytes();
        h.events.push_back(ev.clone());
        h.bytes += bytes;
        self.held_bytes += bytes;
        self.held_events += 1;
        self.hold_stats.events += 1;
        while self.held_bytes > HOLD_BYTES || self.held_events > HOLD_EVENTS {
            // The container held longest is judged now, without its name.
            let Some(oldest) = self
                .holds
                .iter()
                .min_by_key(|(_, h)| h.since_ns)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            tracing::warn!(container = %oldest, held_bytes = self.held_bytes, held_events = self.held_events,
                "container verdicts held for its name: memory full, judged without it");
            self.hold_stats.overflowed += 1;
            self.release(&oldest);
        }
        true
    }

    /// Ends container `id`'s hold: its events are judged next, in order.
    fn release(&mut self, id: &str) {
        let Some((id, h)) = self.holds.remove_entry(id) else {
            return;
        };
        // Not held again: judged under its name if it has one, else under
        // its own id until it gets one (looked up again at once).
        self.container_keys
            .entry(id.clone())
            .or_insert_with(|| (model::container_key(&id, None), 0, false));
        self.held_bytes -= h.bytes;
        self.held_events -= h.events.len();
        self.ready.extend(h.events.into_iter().map(Ready::Event));
    }

    /// Ends every hold (the agent is stopping): their events are judged
    /// with what is known.
    pub fn release_all(&mut self) {
        let ids: Vec<Arc<str>> = self.holds.keys().cloned().collect();
        for id in ids {
            self.hold_stats.timed_out += 1;
            self.release(&id);
        }
    }

    /// Ends the holds whose container is named (the runtime did not
    /// announce it: it was running before the agent) or whose time is up.
    fn expire_holds(&mut self, state: &Shared<'_>, now_ns: u64) {
        if self.holds.is_empty() {
            return;
        }
        let ids: Vec<Arc<str>> = self.holds.keys().cloned().collect();
        for id in ids {
            let naming = lock(state.containers).naming(&id);
            let timed_out = self
                .holds
                .get(&id)
                .is_some_and(|h| now_ns.saturating_sub(h.since_ns) >= HOLD_NS);
            match naming {
                Naming::Named(m) => {
                    self.adopt(&id, &m, state);
                    self.hold_stats.named += 1;
                }
                Naming::Unnamed => self.hold_stats.named += 1,
                Naming::Pending if timed_out => self.hold_stats.timed_out += 1,
                Naming::Pending => continue,
            }
            self.release(&id);
        }
    }

    /// Whether held events wait to be judged ([`Analyzer::next_released`]).
    pub fn has_released(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next held event whose wait ended, with the details it raises
    /// (recorded with seqs from `first_seq` on). The pipeline calls it
    /// after each event it records and after `flush`, until `None`.
    pub fn next_released(
        &mut self,
        state: &Shared<'_>,
        first_seq: u64,
    ) -> Option<(Arc<Event>, Vec<Detail>)> {
        loop {
            match self.ready.pop_front()? {
                Ready::Forget(scope, id) => self.forget(&scope, &id),
                Ready::Event(ev) => {
                    let out = self.judge(&ev, state, first_seq);
                    return Some((ev, out));
                }
            }
        }
    }

    fn forget(&mut self, scope: &Scope, id: &Arc<str>) {
        self.detectors.forget(scope);
        self.container_keys.remove(id);
        self.sandboxes.remove(id);
    }

    /// The details of the events `ev` raises (learned items, audits), in
    /// order; the pipeline records them with seqs from `first_seq` on.
    /// A new container's events wait for its name (see `HOLD_NS`): their
    /// details come from [`Analyzer::next_released`] later.
    pub fn analyze(&mut self, ev: &Arc<Event>, state: &Shared<'_>, first_seq: u64) -> Vec<Detail> {
        if !self.enabled {
            return Vec::new();
        }
        if let Detail::Container(c) = &ev.record.detail {
            if c.change == crate::attribution::containers::Change::Started {
                // Named (or known to stay unnamed): its held events are
                // judged now, under its image.
                // The registry's lock is let go before adopting (which
                // takes the models' and incidents' locks).
                let naming = lock(state.containers).naming(&c.id);
                if let Naming::Named(m) = naming {
                    self.adopt(&c.id, &m, state);
                }
                if self.holds.contains_key(&c.id) {
                    self.hold_stats.named += 1;
                    self.release(&c.id);
                }
            } else if self.holds.contains_key(&c.id) {
                self.release(&c.id);
                self.ready
                    .push_back(Ready::Forget(ev.scope.clone(), c.id.clone()));
            } else {
                self.forget(&ev.scope, &c.id);
            }
            return Vec::new();
        }
        if matches!(ev.record.detail, Detail::Learned(_) | Detail::Audit(_)) {
            return Vec::new();
        }
        if let Scope::Container(id) = &ev.scope {
            if self.hold(ev, id, state) {
                return Vec::new();
            }
        }
        self.judge(ev, state, first_seq)
    }

    /// The details `ev` raises now.
    fn judge(&mut self, ev: &Event, state: &Shared<'_>, first_seq: u64) -> Vec<Detail> {
        let mut out = Vec::new();
        let mut drafts = Vec::new();
        // The model key, computed only for events a model or an audit
        // needs it for (no allocation for forks, exits…).
        let mut key: Option<Arc<str>> = None;
        let sandbox = ev
            .scope
            .container_id()
            .is_some_and(|id| self.sandboxes.contains(id));
        if let Some(obs) = (!sandbox).then(|| items::observe(ev)).flatten() {
            let k = self.key(ev, state);
            match lock(state.models).check(&k, &obs, ev, ev.time_ns) {
                Verdict::Normal => {}
                Verdict::Learned => out.push(Detail::Learned(Box::new(LearnedDetail {
                    model: k.clone(),
                    section: obs.section.name(),
                    item: obs.item.into_owned(),
                }))),
                Verdict::Audit(d) => drafts.push(d),
            }
            key = Some(k);
        }
        let audited = !drafts.is_empty();
        drafts.extend(self.detectors.observe(ev, audited, &self.detect_cfg));
        if drafts.is_empty() {
            return out;
        }
        let key = match key {
            Some(k) => k,
            None => self.key(ev, state),
        };
        for d in drafts {
            let seq = first_seq + out.len() as u64;
            let detail = AuditDetail {
                model: key.clone(),
                section: d.section,
                rule: d.rule.clone(),
                severity: d.severity,
                message: d.message.clone(),
                item: d.item.clone(),
                incident: 0,
                trigger_seq: ev.seq,
            };
            let serial = self.place(d, seq, ev, &key, state);
            out.push(Detail::Audit(Box::new(AuditDetail {
                incident: serial,
                ..detail
            })));
        }
        out
    }

    /// Puts an audit into its incident (opening one when needed) and
    /// returns the incident's serial.
    fn place(
        &mut self,
        d: model::AuditDraft,
        seq: u64,
        ev: &Event,
        key: &Arc<str>,
        state: &Shared<'_>,
    ) -> u64 {
        let kind = d.incident;
        let entry = AuditEntry::new(seq, d, ev, self.depth);
        let mut incs = lock(state.incidents);
        let raised = incs.raise(&ev.scope, kind, ev.time_ns);
        let meta = ev
            .scope
            .container_id()
            .and_then(|id| lock(state.containers).get(id));
        let next = incs.next_serial();
        let inc = incs.add(raised.serial, entry, ev, key, meta);
        if raised.opened {
            tracing::warn!(serial = inc.serial, kind = inc.kind.name(), summary = %inc.summary, "incident opened");
            // Queued for the store at once; the serial itself is covered by
            // the persisted serial lease, so it is never reused.
            state.store.note_serial(next);
            if !store_incidents(state, &[inc], next) {
                self.dirty.insert(inc.serial);
            }
            self.freezes.push(Freeze {
                scope: ev.scope.clone(),
                serial: inc.serial,
                at_ns: ev.time_ns,
                reason: format!("incident #{}: {}", inc.serial, inc.kind.name()),
            });
        } else {
            self.dirty.insert(inc.serial);
        }
        // Announced to listeners without its audits: each stream reads the
        // ones it has not sent from the record.
        if state.incident_live.receiver_count() > 0 {
            let _ = state.incident_live.send(Arc::new(inc.header()));
        }
        raised.serial
    }

    /// Records the snapshot frozen for an incident.
    pub fn snapshot_frozen(&mut self, state: &Shared<'_>, serial: u64, snapshot_id: u64) {
        let inc = lock(state.incidents)
            .set_snapshot(serial, snapshot_id)
            .map(Incident::header);
        if let Some(inc) = inc {
            self.dirty.insert(serial);
            let _ = state.incident_live.send(Arc::new(inc));
        }
    }

    /// Containers modelled by their id whose image the runtime has named
    /// since: their model moves to the image's, their incidents name it.
    fn adopt_named_images(&mut self, state: &Shared<'_>) {
        let pending: Vec<Arc<str>> = self
            .container_keys
            .iter()
            .filter(|(_, (_, _, named))| !named)
            .map(|(id, _)| id.clone())
            .collect();
        for id in pending {
            let Some(meta) = lock(state.containers).get(&id) else {
                continue;
            };
            self.adopt(&id, &meta, state);
        }
    }

    /// Stores updated incidents and changed models; forgets incidents
    /// past their window; ends the holds whose time is up (the pipeline
    /// then takes their verdicts with [`Analyzer::next_released`]).
    pub fn flush(&mut self, state: &Shared<'_>, now_ns: u64) {
        self.expire_holds(state, now_ns);
        self.adopt_named_images(state);
        // Encoded under the lock, written by the committer.
        let (changed, encoded) = {
            let mut m = lock(state.models);
            let (changed, removed) = m.take_dirty();
            let models: Vec<&model::Model> = changed.iter().filter_map(|k| m.get(k)).collect();
            let encoded = persist::models::Encoded::new(&models, &removed);
            (changed, encoded)
        };
        if !encoded.is_empty() {
            let bytes = encoded.approx_bytes();
            let write = Box::new(move |store: &Store| encoded.write(store));
            if let Err(err) = state.committer.submit_write("models", bytes, write) {
                tracing::warn!(%err, "storing models: kept for the next flush");
                let mut m = lock(state.models);
                for k in changed {
                    m.mark_dirty(k);
                }
            }
        }
        let (incidents, next) = {
            let mut incs = lock(state.incidents);
            let list: Vec<Incident> = std::mem::take(&mut self.dirty)
                .into_iter()
                .filter_map(|s| incs.get(s).cloned())
                .collect();
            incs.expire(now_ns);
            (list, incs.next_serial())
        };
        if !incidents.is_empty() {
            let refs: Vec<&Incident> = incidents.iter().collect();
            if !store_incidents(state, &refs, next) {
                self.dirty.extend(incidents.iter().map(|i| i.serial));
            }
        }
    }
}

/// Queues incidents for the store (encoded now, written by the committer,
/// retried there on failure). False when the committer cannot take them
/// (the store failing with its queue full): the caller keeps them dirty.
fn store_incidents(state: &Shared<'_>, incidents: &[&Incident], next: u64) -> bool {
    let encoded: Vec<(u64, Vec<u8>)> = incidents
        .iter()
        .map(|i| (i.serial, incident_to_pb(i).encode_to_vec()))
        .collect();
    let bytes = encoded.iter().map(|(_, b)| b.len() + 64).sum();
    let outbox = state.export.cloned();
    let write = Box::new(move |store: &Store| {
        persist::incidents::put_encoded(store, &encoded, next, outbox.as_deref())
    });
    match state.committer.submit_write("incidents", bytes, write) {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(%err, "storing incidents: kept for the next flush");
            false
        }
    }
}

/// Models and open incidents from the store, for a starting agent.
pub fn restore(
    store: &Store,
    cfg: &AnalysisConfig,
    now_ns: u64,
) -> Result<(ModelSet, Incidents), RestoreError> {
    let mut models = ModelSet::new(cfg)?;
    let loaded = persist::models::load(store)?;
    let n = loaded.len();
    for m in loaded {
        models.insert(m);
    }
    let window = cfg.incident_window.as_nanos() as u64;
    let mut incidents = Incidents::new(
        persist::incidents::next_serial(store)?,
        window,
        cfg.max_audits_per_incident,
    );
    let recent = persist::incidents::recent(store, now_ns.saturating_sub(window))?;
    let open = recent.len();
    for p in recent {
        if let Some(i) = crate::analysis::wire::incident_from_pb(&p) {
            incidents.restore(i);
        }
    }
    tracing::info!(
        models = n,
        open_incidents = open,
        next_serial = incidents.next_serial(),
        "models and incidents restored"
    );
    Ok((models, incidents))
}

/// A channel of incidents as they open and change, for `StreamIncidents`.
pub fn incident_channel() -> broadcast::Sender<Arc<Incident>> {
    broadcast::channel(256).0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        analysis::model::{IncidentType, Model, Section},
        attribution::containers::{Change, ContainerMeta},
        event::{test_support, ContainerDetail},
        store::Retention,
    };

    const S: u64 = 1_000_000_000;

    struct Fixture {
        dir: std::path::PathBuf,
        store: Store,
        committer: Committer,
        containers: std::sync::Mutex<ContainerRegistry>,
        models: std::sync::Mutex<ModelSet>,
        incidents: std::sync::Mutex<Incidents>,
        live: broadcast::Sender<Arc<Incident>>,
    }

    impl Fixture {
        /// A model `image:app` that has learned nothing and is active.
        fn new(tag: &str) -> Fixture {
            let dir = std::env::temp_dir().join(format!("fdr-hold-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let retention = Retention {
                max_snapshots: 10,
                max_bytes: 1 << 20,
            };
            let store = Store::open(&dir, retention).expect("store");
            let committer = Committer::spawn(
                Arc::new(Store::open(&dir.join("c"), retention).expect("store")),
                8 << 20,
            );
            let cfg = AnalysisConfig::default();
            let mut models = ModelSet::new(&cfg).expect("models");
            models.insert(Model::restored(
                Arc::from("image:app"),
                0,
                1,
                Default::default(),
                0,
            ));
            Fixture {
                dir,
                store,
                committer,
                containers: std::sync::Mutex::new(ContainerRegistry::new(Duration::from_secs(60))),
                models: std::sync::Mutex::new(models),
                incidents: std::sync::Mutex::new(Incidents::new(1, 60 * S, 100)),
                live: incident_channel(),
            }
        }

        fn shared(&self) -> Shared<'_> {
            Shared {
                containers: &self.containers,
                models: &self.models,
                incidents: &self.incidents,
                incident_live: &self.live,
                store: &self.store,
                committer: &self.committer,
                export: None,
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn in_container(id: &str, seq: u64, time_ns: u64, detail: Detail) -> Arc<Event> {
        let mut ev = test_support::event(seq, 7, detail);
        ev.time_ns = time_ns;
        ev.scope = Scope::Container(Arc::from(id));
        Arc::new(ev)
    }

    fn started(id: &str, seq: u64, time_ns: u64) -> Arc<Event> {
        in_container(
            id,
            seq,
            time_ns,
            Detail::Container(Box::new(ContainerDetail {
                id: Arc::from(id),
                change: Change::Started,
                source: "cri",
            })),
        )
    }

    fn meta(id: &str, sandbox: bool) -> ContainerMeta {
        ContainerMeta {
            id: Arc::from(id),
            name: "web".into(),
            image: "app".into(),
            pod_name: "web-0".into(),
            pod_namespace: "shop".into(),
            sandbox,
            ..Default::default()
        }
    }

    fn analyzer() -> Analyzer {
        Analyzer::new(&AnalysisConfig::default(), 4)
    }

    #[test]
    fn verdicts_wait_for_the_name_then_judge_under_the_image() {
        let f = Fixture::new("named");
        let st = f.shared();
        let mut a = analyzer();
        let id: Arc<str> = Arc::from("c1");
        lock(&f.containers).sighted(&id, 9, "kubepods/p/c1".into());
        let ev = in_container("c1", 1, 10 * S, test_support::listen_detail());
        assert!(a.analyze(&ev, &st, 2).is_empty(), "held");
        assert!(a.next_released(&st, 2).is_none());
        assert_eq!(a.hold_stats.held, 1);

        let notice = lock(&f.containers).running(meta("c1", false), true);
        assert!(notice.is_some());
        assert!(a.analyze(&started("c1", 3, 10 * S + 5), &st, 4).is_empty());
        let (trigger, raised) = a.next_released(&st, 4).expect("released");
        assert_eq!(trigger.seq, 1);
        let [Detail::Audit(audit)] = raised.as_slice() else {
            panic!("{raised:?}");
        };
        assert_eq!(&*audit.model, "image:app");
        assert_eq!(audit.section, Section::Listen.name());
        let inc = lock(&f.incidents)
            .get(audit.incident)
            .cloned()
            .expect("incident");
        assert_eq!(inc.kind, IncidentType::BackdoorListener);
        assert_eq!(inc.container.expect("named").pod_name, "web-0");
        assert!(a.next_released(&st, 5).is_none());
        assert!(lock(&f.models).get("container:c1").is_none());
        assert_eq!(a.hold_stats.named, 1);
        // Named: later events are judged at once.
        let later = in_container("c1", 6, 11 * S, test_support::listen_detail());
        assert!(
            a.analyze(&later, &st, 7).is_empty(),
            "flagged once per window"
        );
        assert!(a.next_released(&st, 7).is_none());
    }

    #[test]
    fn an_unnamed_container_is_judged_under_its_id_when_the_hold_times_out() {
        let f = Fixture::new("timeout");
        let st = f.shared();
        let mut a = analyzer();
        let id: Arc<str> = Arc::from("c2");
        lock(&f.containers).sighted(&id, 9, "kubepods/p/c2".into());
        // Its own model, active (as if it had learned long ago).
        lock(&f.models).insert(Model::restored(
            Arc::from("container:c2"),
            0,
            1,
            Default::default(),
            0,
        ));
        let first = in_container("c2", 1, 10 * S, test_support::listen_detail());
        assert!(a.analyze(&first, &st, 2).is_empty());
        // Its time is up at the next housekeeping flush.
        a.flush(&st, 10 * S + HOLD_NS);
        let (_, raised) = a.next_released(&st, 2).expect("released");
        let [Detail::Audit(audit)] = raised.as_slice() else {
            panic!("{raised:?}");
        };
        assert_eq!(&*audit.model, "container:c2");
        assert_eq!(a.hold_stats.timed_out, 1);
        let inc = lock(&f.incidents)
            .get(audit.incident)
            .cloned()
            .expect("incident");
        assert!(inc.container.is_none());
        let next = in_container("c2", 3, 10 * S + HOLD_NS + 1, Detail::Exit { status: 0 });
        assert!(a.analyze(&next, &st, 4).is_empty(), "not held again");
        assert!(a.next_released(&st, 4).is_none());
        // Named later: its incident names the pod, its model is the image's.
        lock(&f.containers).running(meta("c2", false), true);
        a.flush(&st, 20 * S);
        assert!(lock(&f.models).get("container:c2").is_none());
        let inc = lock(&f.incidents)
            .get(audit.incident)
            .cloned()
            .expect("incident");
        assert_eq!(inc.container.expect("named").pod_name, "web-0");
        assert_eq!(&*inc.model, "image:app");
        assert!(inc.summary.contains("shop/web-0"), "{}", inc.summary);
    }

    #[test]
    fn holds_are_bounded_and_sandboxes_get_no_model() {
        let f = Fixture::new("bounded");
        let st = f.shared();
        let mut a = analyzer();
        for n in 0..=HOLD_EVENTS as u64 {
            let id = format!("c{}", n % 3);
            if n < 3 {
                lock(&f.containers).sighted(&Arc::from(id.as_str()), n, id.clone().into());
            }
            let ev = in_container(&id, n + 1, 10 * S + n, Detail::Exit { status: 0 });
            assert!(a.analyze(&ev, &st, n + 2).is_empty());
        }
        assert_eq!(a.hold_stats.overflowed, 1, "{:?}", a.hold_stats);
        assert!(a.held_events <= HOLD_EVENTS);
        let mut released = 0;
        while a.next_released(&st, 1).is_some() {
            released += 1;
        }
        assert!(released > 0);

        let sb: Arc<str> = Arc::from("sb");
        lock(&f.containers).sighted(&sb, 1, "kubepods/p/sb".into());
        let ev = in_container("sb", 1, 30 * S, test_support::listen_detail());
        assert!(a.analyze(&ev, &st, 2).is_empty());
        lock(&f.containers).named_by(meta("sb", true), "cri");
        a.analyze(&started("sb", 3, 30 * S + 1), &st, 4);
        let (_, raised) = a.next_released(&st, 4).expect("released");
        assert!(raised.is_empty(), "{raised:?}");
        assert!(lock(&f.models).get("container:sb").is_none());
        assert_eq!(
            lock(&f.models).get("image:app").map(Model::item_count),
            Some(0)
        );
    }
}
