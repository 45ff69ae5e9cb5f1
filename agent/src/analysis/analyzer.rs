//! Runs every recorded event past the runtime models, the rules and the
//! detectors, and turns what they find into audit events that belong to
//! incidents; learned items become events too. Persists what changed.

use std::{
    collections::{BTreeSet, HashMap},
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
    attribution::{containers::ContainerRegistry, scope::Scope},
    config::AnalysisConfig,
    config::ConfigError,
    event::{AuditDetail, Detail, Event, LearnedDetail},
    store::{commit::Committer, Store, StoreError},
    util::lock,
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
        let key = model::key_for(ev, meta.as_deref());
        if let Some((old, _, false)) = self.container_keys.get(id) {
            if *old != key {
                // The runtime named the image: what the container did
                // before belongs to the image's model.
                lock(state.models).merge_into(old, &key);
            }
        }
        self.container_keys
            .insert(id.clone(), (key.clone(), ev.time_ns, meta.is_some()));
        key
    }

    /// The details of the events `ev` raises (learned items, audits), in
    /// order; the pipeline records them with seqs from `first_seq` on.
    pub fn analyze(&mut self, ev: &Event, state: &Shared<'_>, first_seq: u64) -> Vec<Detail> {
        if !self.enabled {
            return Vec::new();
        }
        if let Detail::Container(c) = &ev.record.detail {
            if c.change != crate::attribution::containers::Change::Started {
                self.detectors.forget(&ev.scope);
                self.container_keys.remove(&c.id);
            }
            return Vec::new();
        }
        if matches!(ev.record.detail, Detail::Learned(_) | Detail::Audit(_)) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut drafts = Vec::new();
        // The model key, computed only for events a model or an audit
        // needs it for (no allocation for forks, exits…).
        let mut key: Option<Arc<str>> = None;
        if let Some(obs) = items::observe(ev) {
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
    /// since: their model moves to the image's.
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
            let key = model::container_key(&id, Some(&meta));
            if let Some((old, _, named)) = self.container_keys.get_mut(&id) {
                if *old != key {
                    lock(state.models).merge_into(old, &key);
                }
                *old = key;
                *named = true;
            }
        }
    }

    /// Stores updated incidents and changed models; forgets incidents
    /// past their window.
    pub fn flush(&mut self, state: &Shared<'_>, now_ns: u64) {
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
    let write =
        Box::new(move |store: &Store| persist::incidents::put_encoded(store, &encoded, next));
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
