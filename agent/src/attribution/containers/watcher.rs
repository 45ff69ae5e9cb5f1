//! The task that keeps the container registry current: it reads the
//! runtime's container list on a timer, and at once when the pipeline sees
//! a container it does not know, and reports starts and stops as
//! [`Notice`]s for the pipeline to record. Containers the CRI does not
//! know are asked of containerd's own API and of the Docker Engine API,
//! else known by their cgroup alone. It never runs on the event path; the
//! registry lock is never held across a runtime call.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};

use super::{
    cri::{self, Cri},
    engine::Engine,
    sockets::SocketWatch,
    Notice,
};
use crate::{attribution::containers::ContainerRegistry, config::AttributionConfig, util::lock};

/// How often a missing or failed runtime is tried again.
const RECONNECT: Duration = Duration::from_secs(10);
/// A sighted container the CRI does not list yet is given this long
/// before it is taken for one no runtime knows: the kernel shows a pod's
/// sandbox, and a container being created, before the CRI lists them.
const CRI_GRACE: Duration = Duration::from_secs(1);
/// How soon a container left for the CRI to list is looked for again;
/// also how often a runtime whose socket just appeared is tried until it
/// answers.
const RELOOK: Duration = Duration::from_millis(100);
/// How long a runtime whose socket just appeared is tried every `RELOOK`
/// (it binds its socket before it answers).
const APPEARED_RETRY: Duration = Duration::from_secs(30);

struct Watcher {
    containers: Arc<Mutex<ContainerRegistry>>,
    cfg: AttributionConfig,
    cri: Option<Cri>,
    /// containerd's own API on the same socket, when the runtime is
    /// containerd: names containers the CRI does not know.
    native: Option<super::native::Native>,
    last_attempt: Option<Instant>,
    /// The Docker Engine API (dockerd, podman), when one answers.
    engine: Option<Engine>,
    engine_attempt: Option<Instant>,
    /// Engine containers whose cgroup went before the engine recorded
    /// their exit: given one more look for their exit code.
    engine_pending: HashSet<Arc<str>>,
    /// The first look after connecting: containers already running are
    /// registered without start events.
    first: bool,
    /// Runtime state of each listed container at the last look.
    seen: HashMap<Arc<str>, cri::State>,
    cgroup_root: Option<PathBuf>,
    /// A sighted container was left unnamed for the CRI to list it, or a
    /// runtime's socket appeared and it did not answer yet: look again
    /// soon.
    again: bool,
    /// A runtime socket appeared at this time: connecting is retried every
    /// `RELOOK` for `APPEARED_RETRY`.
    appeared: Option<Instant>,
    /// Whose socket appeared, not connected yet: the CRI runtime's, the
    /// engine's.
    awaited: (bool, bool),
}

impl Watcher {
    /// How long after a failed attempt to try connecting again.
    fn backoff(&self) -> Duration {
        match self.appeared {
            Some(t) if t.elapsed() < APPEARED_RETRY => RELOOK,
            _ => RECONNECT,
        }
    }

    /// Runtime sockets were (re)created: a runtime started or restarted.
    /// Connected anew at once (a connection to the one before is stale).
    fn sockets_appeared(&mut self, paths: &[PathBuf]) {
        tracing::info!(?paths, "container runtime socket appeared");
        if paths.iter().any(|p| self.cfg.runtime_endpoints.contains(p)) {
            if self
                .cri
                .as_ref()
                .is_some_and(|c| paths.iter().any(|p| Path::new(c.endpoint()) == p))
            {
                self.forget_runtime();
            }
            self.last_attempt = None;
            self.awaited.0 = true;
        }
        if paths.iter().any(|p| self.cfg.engine_endpoints.contains(p)) {
            if self
                .engine
                .as_ref()
                .is_some_and(|e| paths.iter().any(|p| e.endpoint() == p))
            {
                self.engine = None;
                lock(&self.containers).engine = None;
            }
            self.engine_attempt = None;
            self.awaited.1 = true;
        }
        self.appeared = Some(Instant::now());
    }

    async fn ensure_connected(&mut self) {
        if self.cri.is_some() || self.cfg.runtime_endpoints.is_empty() {
            return;
        }
        if self
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.backoff())
        {
            return;
        }
        self.last_attempt = Some(Instant::now());
        match Cri::connect(&self.cfg.runtime_endpoints).await {
            Ok(c) => {
                tracing::info!(runtime = %c.runtime, endpoint = c.endpoint(), "container runtime connected");
                {
                    let mut reg = lock(&self.containers);
                    reg.runtime = Some(format!("{} at {}", c.runtime, c.endpoint()));
                    reg.runtime_since_ns = crate::util::now_ns();
                }
                self.native = None;
                if c.runtime.starts_with("containerd") {
                    let socket = std::path::Path::new(c.endpoint());
                    match super::native::Native::connect(socket, &c.runtime).await {
                        Ok(n) => self.native = Some(n),
                        Err(err) => tracing::debug!(%err, "containerd metadata API"),
                    }
                }
                self.cri = Some(c);
                self.first = true;
                self.seen.clear();
            }
            Err(cri::CriError::NoSocket(_)) => {}
            Err(err) => tracing::debug!(%err, "container runtime not available"),
        }
    }

    fn disconnect(&mut self, err: &cri::CriError) {
        tracing::warn!(%err, "container runtime lost; events keep their container ids");
        self.forget_runtime();
    }

    /// Drops the runtime connection and what was listed through it.
    fn forget_runtime(&mut self) {
        self.cri = None;
        self.native = None;
        self.seen.clear();
        let mut reg = lock(&self.containers);
        reg.runtime = None;
        reg.runtime_since_ns = 0;
    }

    async fn ensure_engine(&mut self) {
        if self.engine.is_some() || self.cfg.engine_endpoints.is_empty() {
            return;
        }
        if self
            .engine_attempt
            .is_some_and(|t| t.elapsed() < self.backoff())
        {
            return;
        }
        self.engine_attempt = Some(Instant::now());
        match Engine::connect(&self.cfg.engine_endpoints).await {
            Ok(e) => {
                tracing::info!(runtime = %e.runtime, endpoint = %e.endpoint().display(), "Docker Engine API connected");
                lock(&self.containers).engine =
                    Some(format!("{} at {}", e.runtime, e.endpoint().display()));
                self.engine = Some(e);
            }
            Err(super::engine::EngineError::NoSocket(_)) => {}
            Err(err) => tracing::debug!(%err, "Docker Engine API not available"),
        }
    }

    /// Sighted containers the CRI did not list (all of them without a
    /// CRI): containerd's own API, the engine, else their cgroup alone.
    async fn resolve_others(&mut self, out: &mut Vec<Notice>) {
        let unknown: Vec<(Arc<str>, Option<PathBuf>)> = {
            let reg = lock(&self.containers);
            reg.unresolved()
                .into_iter()
                .filter(|id| !self.seen.contains_key(id))
                .map(|id| {
                    let path = reg.cgroup_path(&id);
                    (id, path)
                })
                .collect()
        };
        for (id, path) in unknown {
            let ns = path.as_deref().and_then(super::native::namespace_of);
            if let (Some(n), Some(ns)) = (self.native.as_mut(), ns) {
                if let Some(m) = n.lookup(&ns, &id).await {
                    out.extend(lock(&self.containers).named_by(m, "containerd"));
                    continue;
                }
            }
            if let Some(c) = self.engine_lookup(&id).await {
                out.extend(lock(&self.containers).named_by(c.meta, "docker"));
                continue;
            }
            if self.cri.is_some()
                && lock(&self.containers)
                    .sighted_for(&id, Instant::now())
                    .is_some_and(|d| d < CRI_GRACE)
            {
                // Perhaps a sandbox or container the CRI lists in a moment.
                self.again = true;
                continue;
            }
            out.extend(lock(&self.containers).unknown_to_runtime(&id));
        }
    }

    async fn engine_lookup(&mut self, id: &str) -> Option<super::engine::EngineContainer> {
        let e = self.engine.as_ref()?;
        match e.lookup(id).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(%err, "Docker Engine API lost");
                self.engine = None;
                lock(&self.containers).engine = None;
                None
            }
        }
    }

    /// Engine containers whose cgroup is gone: their stop with the exit
    /// code the engine recorded. Returns the cgroup paths to treat as
    /// still there for one more look (the engine has not recorded the
    /// exit yet).
    async fn engine_stops(&mut self, out: &mut Vec<Notice>) -> HashSet<PathBuf> {
        let mut hold = HashSet::new();
        if self.engine.is_none() {
            return hold;
        }
        let root = self.cgroup_root.clone();
        let gone = lock(&self.containers).gone_named_by("docker", |p| {
            root.as_ref().is_none_or(|r| r.join(p).exists())
        });
        for (id, path) in gone {
            match self.engine_lookup(&id).await {
                Some(c) if !c.running => {
                    let n = lock(&self.containers).exited(
                        &id,
                        Some(c.meta),
                        Some(c.exit_code),
                        c.reason,
                        c.finished_ns,
                    );
                    out.extend(n.map(|mut n| {
                        n.source = "docker";
                        n
                    }));
                    self.engine_pending.remove(&id);
                }
                Some(_) if self.engine_pending.insert(id.clone()) => {
                    hold.insert(path);
                }
                _ => {
                    self.engine_pending.remove(&id);
                }
            }
        }
        hold
    }

    /// One look at the runtime and the cgroups; returns what changed.
    async fn refresh(&mut self) -> Vec<Notice> {
        self.again = false;
        self.ensure_connected().await;
        self.ensure_engine().await;
        let mut out = Vec::new();
        let listed = match self.cri.as_mut() {
            Some(c) => c.list().await.map(Some),
            None => Ok(None),
        };
        let listed = listed.unwrap_or_else(|err| {
            self.disconnect(&err);
            None
        });
        if let Some(listed) = listed {
            if let Err(err) = self.apply_list(listed, &mut out).await {
                self.disconnect(&err);
            }
            self.first = false;
        }
        self.resolve_others(&mut out).await;
        // A runtime whose socket just appeared and that did not answer yet:
        // tried again soon.
        self.awaited.0 &= self.cri.is_none();
        self.awaited.1 &= self.engine.is_none();
        if (self.awaited.0 || self.awaited.1) && self.backoff() == RELOOK {
            self.again = true;
        }
        let hold = self.engine_stops(&mut out).await;
        let root = self.cgroup_root.clone();
        let mut reg = lock(&self.containers);
        out.extend(reg.gone_cgroups(|p| {
            hold.contains(p) || root.as_ref().is_none_or(|r| r.join(p).exists())
        }));
        let pruned = reg.prune(Instant::now());
        if pruned > 0 {
            tracing::debug!(pruned, "container tombstones expired");
        }
        out
    }

    async fn apply_list(
        &mut self,
        listed: Vec<cri::Listed>,
        out: &mut Vec<Notice>,
    ) -> Result<(), cri::CriError> {
        let Some(c) = self.cri.as_mut() else {
            return Ok(());
        };
        let announce = !self.first;
        let mut now_seen = HashMap::with_capacity(listed.len());
        for l in listed {
            let prev = self.seen.get(&l.id).copied();
            now_seen.insert(l.id.clone(), l.state);
            let (known, needs_name) = {
                let reg = lock(&self.containers);
                (reg.get(&l.id).is_some(), reg.needs_name(&l.id))
            };
            let changed = prev != Some(l.state);
            let wanted = match l.state {
                cri::State::Running | cri::State::Exited => !known || changed,
                // Created, and the kernel already shows its process (runc
                // init, or its command before the CRI marks it running):
                // named now, not at the next look.
                cri::State::Created => needs_name,
                cri::State::Unknown => false,
            };
            if !wanted {
                continue;
            }
            let Some(st) = c.status(&l.id).await? else {
                continue;
            };
            let mut reg = lock(&self.containers);
            match st.state {
                cri::State::Running | cri::State::Created => {
                    out.extend(reg.running(st.meta, announce))
                }
                cri::State::Exited => {
                    if announce && !known {
                        // Started and stopped between two looks.
                        out.extend(reg.running(st.meta.clone(), true));
                    }
                    out.extend(reg.exited(
                        &l.id,
                        Some(st.meta),
                        Some(st.exit_code),
                        st.reason,
                        st.finished_ns,
                    ));
                }
                cri::State::Unknown => {}
            }
        }
        // Pod sandboxes the kernel showed: the CRI does not list them as
        // containers; named as their pod's sandbox.
        for id in c.sandbox_ids() {
            if !lock(&self.containers).unnamed(&id) {
                continue;
            }
            if let Some(meta) = c.sandbox_meta(&id).await {
                out.extend(lock(&self.containers).named_by(meta, "cri"));
            }
        }
        // Running containers the CRI no longer lists.
        let gone: Vec<Arc<str>> = lock(&self.containers)
            .running_ids()
            .into_iter()
            .filter(|id| !now_seen.contains_key(id))
            .collect();
        let mut reg = lock(&self.containers);
        for id in gone {
            out.extend(reg.exited(&id, None, None, "removed".into(), 0));
        }
        self.seen = now_seen;
        Ok(())
    }
}

/// Runs until `shutdown`: looks every `runtime_poll`, and soon after a
/// `wake` (a container the pipeline has not seen before). `cfg`'s
/// endpoints are where the agent finds the sockets (under the host root);
/// `cgroup_root` is the host's cgroup2 mount as the agent sees it.
pub async fn run(
    containers: Arc<Mutex<ContainerRegistry>>,
    cfg: AttributionConfig,
    cgroup_root: Option<PathBuf>,
    mut wake: mpsc::Receiver<()>,
    notices: mpsc::UnboundedSender<Notice>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(cfg.runtime_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut w = Watcher {
        containers,
        cfg,
        cri: None,
        native: None,
        last_attempt: None,
        engine: None,
        engine_attempt: None,
        engine_pending: HashSet::new(),
        first: true,
        seen: HashMap::new(),
        cgroup_root,
        again: false,
        appeared: None,
        awaited: (false, false),
    };
    let endpoints: Vec<PathBuf> = w
        .cfg
        .runtime_endpoints
        .iter()
        .chain(&w.cfg.engine_endpoints)
        .cloned()
        .collect();
    let mut sockets = if endpoints.is_empty() {
        None
    } else {
        match SocketWatch::new(endpoints) {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::warn!(%err, "cannot watch the runtime sockets' directories: a runtime that starts later is found within {RECONNECT:?}");
                None
            }
        }
    };
    let mut watch_failed = false;
    loop {
        let relook = tokio::time::sleep(RELOOK);
        let appeared = async {
            match sockets.as_mut() {
                Some(s) => s.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.wait_for(|&v| v) => return,
            _ = tick.tick() => {}
            Some(()) = wake.recv() => {}
            _ = relook, if w.again => {}
            paths = appeared => match paths {
                Ok(paths) => w.sockets_appeared(&paths),
                Err(err) => {
                    tracing::warn!(%err, "watching the runtime sockets' directories: stopped");
                    watch_failed = true;
                }
            },
        }
        if std::mem::take(&mut watch_failed) {
            sockets = None;
        }
        for n in w.refresh().await {
            if notices.send(n).is_err() {
                return; // the pipeline is gone
            }
        }
    }
}
