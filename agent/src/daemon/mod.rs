//! The assembly: builds every stage from the config, shares them in the
//! API's [`crate::api::state::State`], and runs the per-record step
//! ([`flow`]: rings → decode → process → attribution → derive → analysis →
//! recorder), the container watcher, the API and the OTLP export (when
//! `[export.otlp]` is on). The only module that may
//! import all the others; nothing imports it.

pub mod flow;
pub mod reload;
pub mod watched;

use std::{path::PathBuf, sync::Arc};

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    api,
    api::state::{lock, Parts, State},
    attribution::containers::ContainerRegistry,
    config::Config,
    probes::{ProbeError, ProbeOptions, Probes},
    process::table::ProcessTable,
    recorder::{
        snapshot::{SnapshotLimits, Snapshots, Window},
        Limits, ScopeBuffers,
    },
    store::{commit::Committer, Retention, Store},
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Restore(#[from] crate::analysis::RestoreError),
    #[error("attaching the ring buffer to the event loop: {0}")]
    Ring(std::io::Error),
}

/// How the agent treats its own process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfFilter {
    /// The agent's own events never leave the kernel (production).
    ExcludeSelf,
    /// Record everything (tests and benchmarks that run the agent in the
    /// process that generates the load).
    RecordAll,
}

/// How long shutdown waits for the API and the pipeline to finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A running agent. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub state: Arc<State>,
    pub socket: PathBuf,
    /// The TCP listener's address, when there is one.
    pub tcp: Option<std::net::SocketAddr>,
    /// The health and metrics listeners' addresses, when configured.
    pub health: Option<std::net::SocketAddr>,
    pub metrics: Option<std::net::SocketAddr>,
    /// The socket file, removed at shutdown if it is still ours.
    unix_socket: api::UnixSocket,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), AgentError>>>,
    /// The settings in force (those a reload applied included).
    config: Config,
    /// Rules for the pipeline to swap in (see [`Running::reload`]).
    rules: watch::Sender<Arc<crate::analysis::model::rules::Rules>>,
}

/// Loads and attaches the probes, seeds the process table, starts the
/// pipeline and the API. Must run inside a tokio runtime.
pub async fn start(cfg: &Config, self_filter: SelfFilter) -> Result<Running, AgentError> {
    // Out-of-bounds values would panic (or allocate without bound) later.
    cfg.validate()?;
    // Where the host's files are, and the node's name: decided once, here.
    let host = cfg.host.host_root();
    let node = crate::util::host::NodeName::resolve(&cfg.host.node_name, &host);
    tracing::info!(
        node = %node.name,
        from = node.source,
        host_root = %host.root().display(),
        "node identity"
    );
    let opts = ProbeOptions {
        ring_bytes: cfg.probes.ring_buffer_bytes,
        critical_ring_bytes: cfg.probes.critical_ring_buffer_bytes,
        agent_tgid: match self_filter {
            SelfFilter::ExcludeSelf => std::process::id(),
            SelfFilter::RecordAll => 0,
        },
        kinds: cfg.capture.kinds().map_err(AgentError::Config)?,
        prefixes: crate::probes::watch::prefixes(&cfg.capture, &cfg.recorder.data_dir),
    };
    // The socket path first: a second agent on it stops here, before it
    // touches the store or the kernel.
    let socket_claim = api::claim_unix(&cfg.api.socket)?;
    // The store next: a data directory we cannot use is a clear error
    // before any probe is loaded.
    let store = open_store(cfg)?;
    // Whose database this is, for a reader of a copy (`--offline`, a
    // console). Not worth refusing to record over.
    if let Err(err) = store.set_node(&node.name) {
        tracing::warn!(%err, "keeping the node name in the database");
    }
    let stored = Stored::restore(cfg, store, &node.name, &host)?;
    let (mut probes, rings) = Probes::load(&opts)?;
    let ring_bytes = ring_size(opts.ring_bytes);
    let critical_ring_bytes = ring_size(opts.critical_ring_bytes);
    // Watched files first, so that the first events already honour them.
    probes.set_watch(&crate::probes::watch::watched_inodes(
        &cfg.capture,
        &cfg.recorder.data_dir,
        &host,
    ))?;
    // Attach before the /proc scan, so a process started during the scan
    // is seen by one or the other.
    probes.attach()?;
    // The API appears only now: a client that finds the socket can rely on
    // what it does next being recorded.
    let listeners = Listeners::bind(cfg, socket_claim).await?;
    let health = api::health::Health::new(cfg.health.stall_after).await;
    let proc_root = host.proc();
    let procs = ProcessTable::seeded_from(&proc_root);
    tracing::info!(processes = procs.len(), proc = %proc_root.display(), "process table seeded");
    let state = stored.into_state(cfg, procs, (ring_bytes, critical_ring_bytes), host.clone());
    *lock(&state.probes) = Some(probes);
    // The OTLP export (when enabled): its sender, and the raw-event tap.
    api::export::start(&cfg.export.otlp, &state)
        .map_err(|e| AgentError::Config(crate::config::ConfigError::Invalid(e)))?;

    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let pipe_state = state.clone();
    let pipe_cfg = flow::PipelineConfig::from_config(cfg);
    let pipe_rx = rx.clone();
    let (wake_containers, wake_rx) = tokio::sync::mpsc::channel(1);
    let (notice_tx, notices) = tokio::sync::mpsc::unbounded_channel();
    let (rules, rules_rx) = watch::channel(Arc::default());
    let io = flow::ContainerIo {
        wake_containers,
        notices,
        rules: rules_rx,
    };
    tasks.push(tokio::spawn(async move {
        flow::run(rings, pipe_state, pipe_cfg, io, pipe_rx)
            .await
            .map_err(AgentError::Ring)
    }));
    let watch_state = state.containers.clone();
    // The runtimes' sockets are the host's.
    let mut watch_cfg = cfg.attribution.clone();
    for e in watch_cfg
        .runtime_endpoints
        .iter_mut()
        .chain(watch_cfg.engine_endpoints.iter_mut())
    {
        *e = host.resolve(&*e);
    }
    let cgroup_root = crate::attribution::scope::cgroup2_root(&host);
    let watch_rx = rx.clone();
    tasks.push(tokio::spawn(async move {
        crate::attribution::containers::watcher::run(
            watch_state,
            watch_cfg,
            cgroup_root,
            wake_rx,
            notice_tx,
            watch_rx,
        )
        .await;
        Ok(())
    }));
    let running = listeners.serve(cfg, state, health, (shutdown, rx), tasks, rules);
    tracing::info!(socket = %cfg.api.socket.display(), "fdr agent running");
    Ok(running)
}

/// Serves the API over the database in `recorder.data_dir` without
/// capturing anything: no probe, pipeline, container watcher or `/proc`
/// scan, so it runs unprivileged, on a copy of a dead node's data
/// directory too. Incidents, snapshots, models, the identity and the
/// stats (of empty buffers) are answered as the agent that wrote them
/// would; what needs capture (`CreateSnapshot`, `RelearnModel`) is
/// refused. The node's name is the one the database keeps (else the
/// configured one). Nothing stored is deleted or rewritten (opening the
/// store only finishes what a crash left, as any start does). Must run
/// inside a tokio runtime.
pub async fn start_offline(cfg: &Config) -> Result<Running, AgentError> {
    cfg.validate()?;
    let host = cfg.host.host_root();
    let socket_claim = api::claim_unix(&cfg.api.socket)?;
    let store = open_store_offline(cfg)?;
    let (node, from) = match store.stored_node()? {
        Some(n) => (n, "the database"),
        None => {
            let n = crate::util::host::NodeName::resolve(&cfg.host.node_name, &host);
            (n.name, n.source)
        }
    };
    tracing::info!(
        %node,
        from,
        data_dir = %cfg.recorder.data_dir.display(),
        instance_id = store.instance_id(),
        "offline: serving a stored database"
    );
    let stored = Stored::restore(cfg, store, &node, &host)?;
    let listeners = Listeners::bind(cfg, socket_claim).await?;
    let health = api::health::Health::new(cfg.health.stall_after).await;
    let state = stored.into_offline_state(cfg, host);
    let (shutdown, rx) = watch::channel(false);
    let (rules, _) = watch::channel(Arc::default());
    let running = listeners.serve(cfg, state, health, (shutdown, rx), Vec::new(), rules);
    tracing::info!(socket = %cfg.api.socket.display(), "fdr agent serving offline");
    Ok(running)
}

/// [`open_store`] for `--offline`: a key file is never created.
fn open_store_offline(cfg: &Config) -> Result<Arc<Store>, AgentError> {
    let r = &cfg.recorder;
    let store = Store::open_offline(
        &r.data_dir,
        Retention {
            max_snapshots: r.max_snapshots,
            max_bytes: r.max_snapshot_bytes,
        },
    )?;
    Ok(Arc::new(store))
}

/// Opens the database in `recorder.data_dir` with the configured
/// retention.
fn open_store(cfg: &Config) -> Result<Arc<Store>, AgentError> {
    let r = &cfg.recorder;
    let store = Store::open(
        &r.data_dir,
        Retention {
            max_snapshots: r.max_snapshots,
            max_bytes: r.max_snapshot_bytes,
        },
    )?;
    Ok(Arc::new(store))
}

/// What both modes build around the database: the models and incidents
/// restored from it, the (empty) buffers, the snapshots with the committer
/// every write goes through.
struct Stored {
    store: Arc<Store>,
    buffers: ScopeBuffers,
    snapshots: Snapshots,
    models: crate::analysis::model::ModelSet,
    incidents: crate::analysis::incidents::Incidents,
    node: String,
}

impl Stored {
    fn restore(
        cfg: &Config,
        store: Arc<Store>,
        node: &str,
        host: &crate::util::host::HostRoot,
    ) -> Result<Stored, AgentError> {
        let r = &cfg.recorder;
        let now_ns = crate::util::now_ns();
        let (models, incidents) = crate::analysis::restore(&store, &cfg.analysis, now_ns)?;
        let incidents = incidents.with_node(node);
        let quota = r.scope_quota_bytes as usize;
        let buffers = ScopeBuffers::new(Limits {
            scope_quota: quota,
            critical_reserve: quota / 100 * r.critical_reserve_percent as usize,
            budget: r.budget_bytes as usize,
            grace_ns: r.exited_container_grace.as_nanos() as u64,
        });
        // Every write goes through the committer thread; while the disk
        // fails it keeps up to half the memory budget of work queued.
        let committer = Committer::spawn(store.clone(), (r.budget_bytes / 2) as usize);
        let snapshots = Snapshots::with_committer(
            committer,
            Window {
                before_ns: r.snapshot_before.as_nanos() as u64,
                after_ns: r.snapshot_after.as_nanos() as u64,
            },
        )
        .with_node(node, host.proc(), host.resolve("/etc/passwd"))
        .with_limits(
            SnapshotLimits {
                // Open snapshots take at most half the budget, whatever the
                // configured limits: the buffers keep the other half.
                max_bytes: r.snapshot_max_bytes.min(r.budget_bytes / 2) as usize,
                open_bytes: r.snapshots_open_bytes.min(r.budget_bytes / 2) as usize,
                reserve_percent: r.critical_reserve_percent,
            },
            buffers.charge_handle(),
        );
        Ok(Stored {
            store,
            buffers,
            snapshots,
            models,
            incidents,
            node: node.to_owned(),
        })
    }

    /// The API's state, with `procs` and the kernel rings' sizes.
    fn into_state(
        self,
        cfg: &Config,
        procs: ProcessTable,
        (ring_bytes, critical_ring_bytes): (u64, u64),
        host: crate::util::host::HostRoot,
    ) -> Arc<State> {
        Arc::new(
            self.state(cfg, procs, (ring_bytes, critical_ring_bytes), host)
                .with_export(&cfg.export.otlp),
        )
    }

    /// The API's state without capture (see [`start_offline`]).
    fn into_offline_state(self, cfg: &Config, host: crate::util::host::HostRoot) -> Arc<State> {
        Arc::new(
            self.state(cfg, ProcessTable::default(), (0, 0), host)
                .offline(),
        )
    }

    fn state(
        self,
        cfg: &Config,
        procs: ProcessTable,
        (ring_bytes, critical_ring_bytes): (u64, u64),
        host: crate::util::host::HostRoot,
    ) -> State {
        let state = State::new(Parts {
            buffers: self.buffers,
            snapshots: self.snapshots,
            stream_queue: cfg.api.stream_queue,
            stream_queue_bytes: cfg.api.stream_queue_bytes as usize,
            procs,
            containers: ContainerRegistry::new(cfg.attribution.tombstone_ttl),
            ancestry_depth: cfg.attribution.ancestry_depth,
            ring_bytes,
            critical_ring_bytes,
            store: self.store,
            models: self.models,
            incidents: self.incidents,
        });
        let name_wait = crate::recorder::naming::NameWaitLimits::from_config(&cfg.live);
        state.with_name_wait(name_wait).with_host(host, &self.node)
    }
}

/// The API's listeners, bound.
struct Listeners {
    unix: tokio::net::UnixListener,
    unix_socket: api::UnixSocket,
    tcp: Option<api::Tcp>,
    health: Option<std::net::TcpListener>,
    metrics: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds the unix socket claimed, the TCP, health and metrics
    /// listeners configured.
    async fn bind(cfg: &Config, claim: api::UnixClaim) -> Result<Listeners, AgentError> {
        let (unix, unix_socket) = claim.bind()?;
        let tcp = api::bind_tcp(&cfg.api).await?;
        let health = match cfg.health.addr()? {
            Some(a) => Some(api::health::bind(a)?),
            None => None,
        };
        let metrics = match cfg.metrics.addr()? {
            Some(a) => Some(api::metrics::bind(a).await?),
            None => None,
        };
        Ok(Listeners {
            unix,
            unix_socket,
            tcp,
            health,
            metrics,
        })
    }

    /// Serves the health check, the metrics and the API over `state`
    /// (besides `tasks`) until `stop` is sent.
    fn serve(
        self,
        cfg: &Config,
        state: Arc<State>,
        health: Arc<api::health::Health>,
        (shutdown, rx): (watch::Sender<bool>, watch::Receiver<bool>),
        mut tasks: Vec<JoinHandle<Result<(), AgentError>>>,
        rules: watch::Sender<Arc<crate::analysis::model::rules::Rules>>,
    ) -> Running {
        let tcp_addr = self.tcp.as_ref().and_then(api::Tcp::local_addr);
        let health_addr = self.health.as_ref().and_then(|l| l.local_addr().ok());
        let metrics_addr = self.metrics.as_ref().and_then(|l| l.local_addr().ok());
        let h = api::health::spawn(health.clone(), state.clone(), self.health, rx.clone());
        tasks.push(tokio::spawn(async move {
            h.await
                .map_err(|join| {
                    AgentError::Api(api::ApiError::HealthRuntime(std::io::Error::other(join)))
                })?
                .map_err(AgentError::Api)
        }));
        if let Some(l) = self.metrics {
            let (st, h, stop) = (state.clone(), health.clone(), rx.clone());
            tasks.push(tokio::spawn(async move {
                api::metrics::serve(l, st, h, stop)
                    .await
                    .map_err(AgentError::Api)
            }));
        }
        let (api_state, unix, tcp) = (state.clone(), self.unix, self.tcp);
        tasks.push(tokio::spawn(async move {
            api::serve(unix, tcp, api_state, health, rx)
                .await
                .map_err(AgentError::Api)
        }));
        Running {
            state,
            socket: cfg.api.socket.clone(),
            tcp: tcp_addr,
            health: health_addr,
            metrics: metrics_addr,
            unix_socket: self.unix_socket,
            shutdown,
            tasks,
            config: cfg.clone(),
            rules,
        }
    }
}

fn ring_size(bytes: u32) -> u64 {
    u64::from(bytes.next_power_of_two().max(4096))
}

impl Running {
    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies what can change at run time of `new` (the file read again,
    /// with the command line's overrides): the analysis rules, handed to
    /// the pipeline, which swaps them in between two steps (never waiting
    /// for it here). The caller applies `log.level` (it owns the
    /// subscriber). Checked first: a bad file (a value out of bounds, a
    /// rule that does not compile) changes nothing. Says what was applied
    /// and which changed keys need a restart.
    pub fn reload(&mut self, new: &Config) -> Result<reload::Outcome, reload::ReloadError> {
        new.validate()?;
        crate::analysis::model::rules::check(&new.analysis)?;
        let rules = crate::analysis::model::rules::Rules::from_config(&new.analysis.rules)?;
        let outcome = reload::plan(&mut self.config, new)?;
        if outcome.changed("analysis.rules") {
            self.rules.send_replace(Arc::new(rules));
        }
        Ok(outcome)
    }

    /// Waits until a task ends by itself (an error) — normally never.
    pub async fn wait_failure(&mut self) -> Result<(), AgentError> {
        first_finished(&mut self.tasks).await
    }

    /// Stops the API and the pipeline, detaches the probes, removes the socket
    /// (if it is still ours) and releases its lock.
    pub async fn shutdown(self) -> Result<(), AgentError> {
        let _ = self.shutdown.send(true);
        let mut first_err = Ok(());
        for mut t in self.tasks {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut t).await {
                Ok(Ok(Err(e))) if first_err.is_ok() => first_err = Err(e),
                Ok(Err(join)) => tracing::error!(%join, "agent task panicked"),
                Err(_) => {
                    tracing::warn!("a task did not stop within {SHUTDOWN_GRACE:?}; aborting it");
                    t.abort();
                }
                _ => {}
            }
        }
        // What the pipeline queued last (open snapshots, models,
        // incidents) is written before the database closes.
        let committer = self.state.committer.clone();
        let _ = tokio::task::spawn_blocking(move || committer.shutdown(SHUTDOWN_GRACE)).await;
        if let Some(mut p) = lock(&self.state.probes).take() {
            if let Err(err) = p.detach() {
                tracing::warn!(%err, "detaching probes");
            }
        }
        // Only our own socket: never a file someone put in its place.
        self.unix_socket.remove();
        first_err
    }
}

/// The result of the first of `tasks` to finish.
async fn first_finished(
    tasks: &mut [JoinHandle<Result<(), AgentError>>],
) -> Result<(), AgentError> {
    use std::{future::Future, pin::Pin, task::Poll};
    std::future::poll_fn(|cx| {
        for t in tasks.iter_mut() {
            if let Poll::Ready(res) = Pin::new(t).poll(cx) {
                return Poll::Ready(res.unwrap_or_else(|join| {
                    Err(AgentError::Ring(std::io::Error::other(join.to_string())))
                }));
            }
        }
        Poll::Pending
    })
    .await
}
