//! What the pipeline writes and the API reads.

use std::{
    sync::{Arc, Mutex},
    time::SystemTime,
};

use tokio::sync::broadcast;

use crate::{
    analysis::incidents::{Incident, Incidents},
    analysis::model::ModelSet,
    attribution::containers::ContainerRegistry,
    event::wire::Enrich,
    probes::Probes,
    process::table::ProcessTable,
    recorder::{
        live::Subscribers,
        naming::{NameWaitCounters, NameWaitLimits},
        snapshot::Snapshots,
        ScopeBuffers,
    },
    store::{commit::Committer, Store},
    util::stats::Counters,
};

/// Shared state. Lock order, where more than one is held: `procs`, then
/// `buffers`, then `snapshots`, then `containers`; and `procs`, then
/// `models`, then `incidents`, then `containers` (`models` / `incidents`
/// are never held with `buffers` / `snapshots`; `probes` is only ever held
/// alone).
pub struct State {
    /// One rolling buffer per scope.
    pub buffers: Mutex<ScopeBuffers>,
    /// Open snapshots and the store of committed ones.
    pub snapshots: Mutex<Snapshots>,
    pub procs: Arc<Mutex<ProcessTable>>,
    /// Container metadata and tombstones.
    pub containers: Arc<Mutex<ContainerRegistry>>,
    /// Ancestors listed with an event where the API includes ancestry.
    pub ancestry_depth: usize,
    /// The agent's database (snapshots, models, incidents).
    pub store: Arc<Store>,
    /// Every write to `store` goes through it, off the pipeline and the
    /// API's threads (the snapshots' committer).
    pub committer: Committer,
    /// Runtime models.
    pub models: Mutex<ModelSet>,
    /// Incidents still open for updates.
    pub incidents: Mutex<Incidents>,
    /// Incidents as they open and change.
    pub incident_live: broadcast::Sender<Arc<Incident>>,
    pub counters: Arc<Counters>,
    /// Live subscribers, each with its filter and bounded queue.
    pub live: Arc<Subscribers>,
    /// Bounds of one live subscriber's queue: events, bytes.
    pub stream_queue: (usize, usize),
    /// How live subscribers hold a new container's events for its name,
    /// and what the holds did (`recorder::naming`).
    pub name_wait: NameWaitLimits,
    pub name_wait_counters: Arc<NameWaitCounters>,
    /// The loaded programs (for their drop counters); `None` in tests that
    /// feed the pipeline without a kernel.
    pub probes: Mutex<Option<Probes>>,
    pub started: SystemTime,
    /// Sizes of the kernel rings: all but critical kinds, critical kinds.
    pub ring_bytes: u64,
    pub critical_ring_bytes: u64,
    /// The node name every event leaving the agent carries (see
    /// [`State::with_host`]; empty in tests that build a state by hand).
    pub node: Arc<str>,
    /// Where the host's filesystem is seen.
    pub host: crate::util::host::HostRoot,
    /// Serving a stored database without capture (`fdr-agent --offline`):
    /// calls that need capture are refused ([`State::refuse_offline`]).
    pub offline: bool,
    /// The OTLP logs export (`[export.otlp]`), when enabled.
    pub export: Option<Export>,
}

/// The OTLP export as the state knows it: the outbox incident writes queue
/// into, and where it sends (for GetStats and the metrics).
pub struct Export {
    pub outbox: Arc<fdr_export::Outbox>,
    pub endpoint: String,
}

/// What a `State` is made of.
pub struct Parts {
    pub buffers: ScopeBuffers,
    pub snapshots: Snapshots,
    pub stream_queue: usize,
    pub stream_queue_bytes: usize,
    pub procs: ProcessTable,
    pub containers: ContainerRegistry,
    pub ancestry_depth: usize,
    pub ring_bytes: u64,
    pub critical_ring_bytes: u64,
    pub store: Arc<Store>,
    pub models: ModelSet,
    pub incidents: Incidents,
}

impl State {
    /// What the analysis stage works on.
    pub fn analysis(&self) -> crate::analysis::Shared<'_> {
        crate::analysis::Shared {
            containers: &self.containers,
            models: &self.models,
            incidents: &self.incidents,
            incident_live: &self.incident_live,
            store: &self.store,
            committer: &self.committer,
            export: self.export.as_ref().map(|e| &e.outbox),
        }
    }

    pub fn new(p: Parts) -> Self {
        let counters = Arc::new(Counters::default());
        let committer = p.snapshots.committer().clone();
        State {
            committer,
            buffers: Mutex::new(p.buffers),
            snapshots: Mutex::new(p.snapshots),
            procs: Arc::new(Mutex::new(p.procs)),
            containers: Arc::new(Mutex::new(p.containers)),
            ancestry_depth: p.ancestry_depth,
            store: p.store,
            models: Mutex::new(p.models),
            incidents: Mutex::new(p.incidents),
            incident_live: crate::analysis::incident_channel(),
            live: Arc::new(Subscribers::new(counters.clone())),
            counters,
            stream_queue: (p.stream_queue, p.stream_queue_bytes),
            name_wait: NameWaitLimits::from_config(&crate::config::LiveConfig::default()),
            name_wait_counters: Arc::default(),
            probes: Mutex::new(None),
            started: SystemTime::now(),
            node: Arc::from(""),
            host: crate::util::host::HostRoot::default(),
            offline: false,
            export: None,
            ring_bytes: p.ring_bytes,
            critical_ring_bytes: p.critical_ring_bytes,
        }
    }
}

pub use crate::util::lock;

/// Why an offline agent refuses a call that needs capture.
pub const OFFLINE: &str = "offline: serving a stored database";

impl State {
    /// The same, with live subscribers holding new containers' events
    /// within `limits` (the default is `[live]`'s).
    pub fn with_name_wait(mut self, limits: NameWaitLimits) -> Self {
        self.name_wait = limits;
        self
    }

    /// The same, on the host seen at `host`, named `node`.
    pub fn with_host(mut self, host: crate::util::host::HostRoot, node: &str) -> Self {
        self.host = host;
        self.node = Arc::from(node);
        self
    }

    /// The same, with the OTLP export's outbox when `cfg` enables it
    /// (its records are keyed by the store's instance id).
    pub fn with_export(mut self, cfg: &fdr_export::OtlpConfig) -> Self {
        if cfg.enabled {
            self.export = Some(Export {
                outbox: Arc::new(fdr_export::Outbox::new(
                    self.store.instance_id(),
                    cfg.max_bytes,
                )),
                endpoint: cfg.endpoint.clone(),
            });
        }
        self
    }

    /// The same, serving a stored database without capture.
    pub fn offline(mut self) -> Self {
        self.offline = true;
        self
    }

    /// FAILED_PRECONDITION for a call that needs capture, when offline.
    pub fn refuse_offline(&self) -> Result<(), tonic::Status> {
        if self.offline {
            return Err(tonic::Status::failed_precondition(OFFLINE));
        }
        Ok(())
    }

    /// Runs `f` with container metadata (the `containers` lock held) and
    /// ancestry up to `depth`.
    pub fn with_enrich<R>(&self, depth: usize, f: impl FnOnce(&Enrich) -> R) -> R {
        let containers = lock(&self.containers);
        f(&Enrich {
            containers: Some(&*containers),
            ancestry_depth: depth,
            node: &self.node,
        })
    }

    /// Kernel drops of every kind, summed.
    pub fn total_kernel_drops(&self) -> u64 {
        self.kernel_drops().iter().map(|(_, n)| n).sum()
    }

    /// Kernel drops per cgroup and kind (empty when no probes are loaded).
    pub fn scope_drops(&self) -> Vec<(u64, fdr_common::EventKind, u64)> {
        match lock(&self.probes).as_ref().map(Probes::scope_drops) {
            Some(Ok(d)) => d,
            Some(Err(err)) => {
                tracing::warn!(%err, "reading per-cgroup kernel drop counters");
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Kernel drops per kind (zeros when no probes are loaded).
    pub fn kernel_drops(&self) -> Vec<(fdr_common::EventKind, u64)> {
        match lock(&self.probes).as_ref().map(Probes::drops) {
            Some(Ok(d)) => d,
            Some(Err(err)) => {
                tracing::warn!(%err, "reading kernel drop counters");
                Vec::new()
            }
            None => Vec::new(),
        }
    }
}
