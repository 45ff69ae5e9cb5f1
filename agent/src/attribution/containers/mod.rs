//! Containers the agent knows of: metadata from the container runtime
//! (name, image, pod), where their cgroup is, and whether their start and
//! stop have been recorded. Stopped containers keep their metadata for a
//! while (tombstones), so events and queries still name their pod.
//!
//! The registry is filled off the event path: the pipeline reports
//! containers it sees in the kernel's records, the [`watcher`] asks the
//! runtime about them and reports starts and stops back as
//! [`Notice`]s. Events are enriched when they are read.

pub mod cri;
pub mod engine;
pub mod native;
pub mod sockets;
pub mod watcher;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

pub use crate::event::container::{Change, ContainerLookup, ContainerMeta};

/// A container start or stop, to be recorded as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub id: Arc<str>,
    pub change: Change,
    /// Where it was learned: `cri`, `containerd`, `docker` or `cgroup`.
    pub source: &'static str,
    /// cgroup v2 id, when the kernel showed the container.
    pub cgroup_id: u64,
    pub pid: u32,
}

impl Notice {
    fn started(id: Arc<str>, source: &'static str, cgroup_id: u64, pid: u32) -> Notice {
        Notice {
            id,
            change: Change::Started,
            source,
            cgroup_id,
            pid,
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    meta: Option<Arc<ContainerMeta>>,
    /// cgroup id and path (relative to the v2 root), from the kernel.
    cgroup: Option<(u64, PathBuf)>,
    /// Its stop is seen as its cgroup going away (the CRI does not track
    /// it: no runtime, another runtime, or a plain containerd container).
    stop_by_cgroup: bool,
    /// Which API named it, when not the CRI (`containerd`, `docker`).
    named_by: Option<&'static str>,
    started: bool,
    /// When the stop was recorded: the tombstone's age.
    stopped: Option<Instant>,
    /// The same, wall-clock ns, for listings.
    stopped_wall_ns: u64,
    /// When the kernel first showed it.
    sighted_at: Option<Instant>,
}

/// Whether a container is named yet, for whoever waits for its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// A runtime named it.
    Named(Arc<ContainerMeta>),
    /// Not yet: it is new, and the watcher has not had its answer.
    Pending,
    /// No runtime knows it (or it stopped unnamed): it stays unnamed.
    Unnamed,
}

/// One container as `ListContainers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub id: Arc<str>,
    /// `None` until (unless) a runtime names it.
    pub meta: Option<Arc<ContainerMeta>>,
    pub running: bool,
    /// Wall-clock ns its stop was recorded (0 while running).
    pub stopped_ns: u64,
    pub cgroup_id: u64,
}

/// Counts for `GetStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerCounts {
    pub running: u64,
    pub tombstones: u64,
    pub with_metadata: u64,
}

/// Marks a naming change (see `ContainerRegistry::changes`).
fn bump(generation: &mut u64) {
    *generation = generation.wrapping_add(1);
}

/// Every known container, by id.
#[derive(Debug)]
pub struct ContainerRegistry {
    entries: HashMap<Arc<str>, Entry>,
    tombstone_ttl: Duration,
    /// The runtime in use (`containerd 1.6.20 at /run/containerd/…`).
    pub runtime: Option<String>,
    /// When the runtime was connected (wall-clock ns; 0 while none is).
    pub runtime_since_ns: u64,
    /// The Docker Engine API in use (`docker 27.5.1 at /run/docker.sock`).
    pub engine: Option<String>,
    /// Bumped whenever a container's naming may have changed (named, or
    /// known to stay unnamed): live subscribers holding a container's
    /// events wait on it ([`ContainerRegistry::naming_changes`]).
    changes: tokio::sync::watch::Sender<u64>,
}

impl ContainerLookup for ContainerRegistry {
    fn meta(&self, id: &str) -> Option<Arc<ContainerMeta>> {
        self.get(id)
    }
}

impl ContainerRegistry {
    pub fn new(tombstone_ttl: Duration) -> Self {
        ContainerRegistry {
            entries: HashMap::new(),
            tombstone_ttl,
            runtime: None,
            runtime_since_ns: 0,
            engine: None,
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Fires after a container's [`Naming`] may have left `Pending`.
    pub fn naming_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The container's metadata, also after it stopped (until its
    /// tombstone expires).
    pub fn get(&self, id: &str) -> Option<Arc<ContainerMeta>> {
        self.entries.get(id)?.meta.clone()
    }

    /// The kernel showed a process in this container's cgroup. Returns
    /// whether the container was new to the registry.
    pub fn sighted(&mut self, id: &Arc<str>, cgroup_id: u64, path: PathBuf) -> bool {
        let new = !self.entries.contains_key(id);
        let e = self.entries.entry(id.clone()).or_default();
        if e.cgroup.is_none() {
            e.cgroup = Some((cgroup_id, path));
        }
        e.sighted_at.get_or_insert_with(Instant::now);
        new
    }

    /// Whether the container is named, or still may be. A container the
    /// registry has not heard of is pending: the pipeline reports it after
    /// the batch that showed it.
    pub fn naming(&self, id: &str) -> Naming {
        match self.entries.get(id) {
            None => Naming::Pending,
            Some(e) => match &e.meta {
                Some(m) => Naming::Named(m.clone()),
                None if e.stop_by_cgroup || e.stopped.is_some() => Naming::Unnamed,
                None => Naming::Pending,
            },
        }
    }

    /// The kernel showed it and no runtime has named it yet (nor said it
    /// does not know it).
    pub fn needs_name(&self, id: &str) -> bool {
        self.entries.get(id).is_some_and(|e| {
            e.cgroup.is_some() && e.meta.is_none() && !e.stop_by_cgroup && e.stopped.is_none()
        })
    }

    /// The kernel showed it, it runs, and no runtime has named it (also
    /// when it was taken for one no runtime knows: a pod sandbox the CRI
    /// listed late).
    pub fn unnamed(&self, id: &str) -> bool {
        self.entries
            .get(id)
            .is_some_and(|e| e.cgroup.is_some() && e.meta.is_none() && e.stopped.is_none())
    }

    /// How long ago the kernel first showed it.
    pub fn sighted_for(&self, id: &str, now: Instant) -> Option<Duration> {
        let at = self.entries.get(id)?.sighted_at?;
        Some(now.saturating_duration_since(at))
    }

    fn cgroup_id(&self, id: &str) -> u64 {
        self.entries
            .get(id)
            .and_then(|e| e.cgroup.as_ref())
            .map_or(0, |c| c.0)
    }

    /// The runtime reports the container running with this metadata.
    /// Returns the start notice the first time, unless `announce` is false
    /// (containers already running when the agent started).
    pub fn running(&mut self, meta: ContainerMeta, announce: bool) -> Option<Notice> {
        let id = meta.id.clone();
        let pid = meta.pid.unwrap_or(0);
        let cgroup_id = self.cgroup_id(&id);
        let e = self.entries.entry(id.clone()).or_default();
        e.meta = Some(Arc::new(meta));
        e.stop_by_cgroup = false;
        self.changes.send_modify(bump);
        if e.started || e.stopped.is_some() {
            return None;
        }
        e.started = true;
        if !announce {
            return None;
        }
        Some(Notice::started(id, "cri", cgroup_id, pid))
    }

    /// The runtime reports the container exited (metadata refreshed when
    /// given) or no longer lists it. Returns the stop notice once.
    /// A container that was never seen running (it exited before the
    /// agent started, or between two looks) is kept as a tombstone without
    /// a notice.
    pub fn exited(
        &mut self,
        id: &Arc<str>,
        meta: Option<ContainerMeta>,
        exit_code: Option<i32>,
        reason: String,
        finished_ns: u64,
    ) -> Option<Notice> {
        let cgroup_id = self.cgroup_id(id);
        let e = self.entries.entry(id.clone()).or_default();
        if let Some(m) = meta {
            e.meta = Some(Arc::new(m));
        }
        self.changes.send_modify(bump);
        if e.stopped.is_some() {
            return None;
        }
        e.stopped = Some(Instant::now());
        e.stopped_wall_ns = crate::util::now_ns();
        if !e.started && e.cgroup.is_none() {
            return None;
        }
        Some(Notice {
            id: id.clone(),
            change: Change::Stopped {
                exit_code,
                reason,
                finished_ns,
            },
            source: "cri",
            cgroup_id,
            pid: e.meta.as_ref().and_then(|m| m.pid).unwrap_or(0),
        })
    }

    /// The runtime was asked about a sighted container and does not know
    /// it (a container of another runtime, or no runtime at all): its start
    /// is recorded from the cgroup alone.
    pub fn unknown_to_runtime(&mut self, id: &Arc<str>) -> Option<Notice> {
        let cgroup_id = self.cgroup_id(id);
        let e = self.entries.get_mut(id)?;
        if e.meta.is_some() || e.started || e.stopped.is_some() {
            return None;
        }
        e.stop_by_cgroup = true;
        e.started = true;
        self.changes.send_modify(bump);
        Some(Notice::started(id.clone(), "cgroup", cgroup_id, 0))
    }

    /// Another API than the CRI named a container the CRI does not know:
    /// containerd's own (`ctr run`, nerdctl), the Docker Engine's (docker,
    /// podman). Its start, with its metadata and `source`; its stop will
    /// come from its cgroup.
    pub fn named_by(&mut self, meta: ContainerMeta, source: &'static str) -> Option<Notice> {
        let id = meta.id.clone();
        let cgroup_id = self.cgroup_id(&id);
        let e = self.entries.entry(id.clone()).or_default();
        e.meta = Some(Arc::new(meta));
        e.stop_by_cgroup = true;
        e.named_by = Some(source);
        self.changes.send_modify(bump);
        if e.started || e.stopped.is_some() {
            return None;
        }
        e.started = true;
        Some(Notice::started(id, source, cgroup_id, 0))
    }

    /// The cgroup path (relative to the v2 root) the kernel showed the
    /// container in.
    pub fn cgroup_path(&self, id: &str) -> Option<PathBuf> {
        self.entries.get(id)?.cgroup.as_ref().map(|c| c.1.clone())
    }

    /// Running containers named by `source` whose cgroup is gone: that API
    /// may know how they ended.
    pub fn gone_named_by(
        &self,
        source: &str,
        exists: impl Fn(&std::path::Path) -> bool,
    ) -> Vec<(Arc<str>, PathBuf)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.stopped.is_none() && e.named_by == Some(source))
            .filter_map(|(id, e)| {
                let (_, path) = e.cgroup.as_ref()?;
                (!exists(path)).then(|| (id.clone(), path.clone()))
            })
            .collect()
    }

    /// Containers whose stop is their cgroup going away, and it is gone:
    /// their stop notices.
    pub fn gone_cgroups(&mut self, exists: impl Fn(&std::path::Path) -> bool) -> Vec<Notice> {
        let mut out = Vec::new();
        for (id, e) in &mut self.entries {
            if e.stopped.is_some() || !e.stop_by_cgroup {
                continue;
            }
            let Some((cgroup_id, path)) = &e.cgroup else {
                continue;
            };
            if exists(path) {
                continue;
            }
            e.stopped = Some(Instant::now());
            e.stopped_wall_ns = crate::util::now_ns();
            out.push(Notice {
                id: id.clone(),
                change: Change::Stopped {
                    exit_code: None,
                    reason: "cgroup removed".into(),
                    finished_ns: 0,
                },
                source: "cgroup",
                cgroup_id: *cgroup_id,
                pid: 0,
            });
        }
        if !out.is_empty() {
            self.changes.send_modify(bump);
        }
        out
    }

    /// Ids of containers the registry believes are running and whose
    /// metadata and stop come from the CRI (not those whose stop is their
    /// cgroup going away: the CRI not listing them says nothing).
    pub fn running_ids(&self) -> Vec<Arc<str>> {
        self.entries
            .iter()
            .filter(|(_, e)| {
                e.stopped.is_none() && e.meta.is_some() && e.started && !e.stop_by_cgroup
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Sighted containers the runtime has not been asked about yet.
    pub fn unresolved(&self) -> Vec<Arc<str>> {
        self.entries
            .iter()
            .filter(|(_, e)| e.meta.is_none() && !e.stop_by_cgroup && e.stopped.is_none())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Drops tombstones older than the TTL. Returns how many.
    pub fn prune(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        let ttl = self.tombstone_ttl;
        self.entries
            .retain(|_, e| e.stopped.is_none_or(|at| now.duration_since(at) < ttl));
        before - self.entries.len()
    }

    /// Every known container, running ones first, then by id.
    pub fn list(&self) -> Vec<Known> {
        let mut out: Vec<Known> = self
            .entries
            .iter()
            .map(|(id, e)| Known {
                id: id.clone(),
                meta: e.meta.clone(),
                running: e.stopped.is_none(),
                stopped_ns: e.stopped_wall_ns,
                cgroup_id: e.cgroup.as_ref().map_or(0, |c| c.0),
            })
            .collect();
        out.sort_by(|a, b| b.running.cmp(&a.running).then_with(|| a.id.cmp(&b.id)));
        out
    }

    pub fn counts(&self) -> ContainerCounts {
        let mut c = ContainerCounts::default();
        for e in self.entries.values() {
            if e.stopped.is_some() {
                c.tombstones += 1;
            } else {
                c.running += 1;
            }
            if e.meta.is_some() {
                c.with_metadata += 1;
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str) -> ContainerMeta {
        ContainerMeta {
            id: Arc::from(id),
            name: "web".into(),
            image: "nginx:1.27".into(),
            pod_name: "web-0".into(),
            pod_namespace: "shop".into(),
            ..Default::default()
        }
    }

    #[test]
    fn start_and_stop_are_noticed_once_and_tombstones_expire() {
        let mut r = ContainerRegistry::new(Duration::from_secs(60));
        let id: Arc<str> = Arc::from("c1");
        assert!(r.sighted(&id, 7, "kubepods/x/c1".into()));
        assert!(!r.sighted(&id, 7, "kubepods/x/c1".into()));
        assert_eq!(r.unresolved(), vec![id.clone()]);
        let n = r.running(meta("c1"), true).expect("start");
        assert_eq!(
            (n.change, n.cgroup_id, n.source),
            (Change::Started, 7, "cri")
        );
        assert!(r.running(meta("c1"), true).is_none());
        assert_eq!(r.running_ids(), vec![id.clone()]);
        let n = r
            .exited(&id, None, Some(3), "Error".into(), 9)
            .expect("stop");
        assert!(matches!(
            n.change,
            Change::Stopped {
                exit_code: Some(3),
                ..
            }
        ));
        assert!(r.exited(&id, None, Some(3), "Error".into(), 9).is_none());
        assert_eq!(r.get("c1").unwrap().pod_name, "web-0", "tombstone");
        let listed = r.list();
        assert_eq!(listed.len(), 1);
        assert!(!listed[0].running && listed[0].stopped_ns > 0);
        assert_eq!(listed[0].cgroup_id, 7);
        assert_eq!(r.counts().tombstones, 1);
        assert_eq!(r.prune(Instant::now()), 0);
        assert_eq!(r.prune(Instant::now() + Duration::from_secs(61)), 1);
        assert!(r.get("c1").is_none());
    }

    #[test]
    fn containers_unknown_to_the_runtime_live_and_die_with_their_cgroup() {
        let mut r = ContainerRegistry::new(Duration::from_secs(60));
        let id: Arc<str> = Arc::from("c2");
        r.sighted(&id, 9, "default/c2".into());
        let n = r.unknown_to_runtime(&id).expect("start from cgroup");
        assert_eq!(n.source, "cgroup");
        assert!(r.unknown_to_runtime(&id).is_none());
        assert!(r.gone_cgroups(|_| true).is_empty());
        let stops = r.gone_cgroups(|_| false);
        assert_eq!(stops.len(), 1);
        assert_eq!(stops[0].cgroup_id, 9);
        assert!(r.gone_cgroups(|_| false).is_empty());
    }

    #[test]
    fn naming_is_pending_until_a_runtime_answers_and_a_late_sandbox_is_named() {
        let mut r = ContainerRegistry::new(Duration::from_secs(60));
        let id: Arc<str> = Arc::from("p1");
        assert_eq!(r.naming("p1"), Naming::Pending, "not reported yet");
        r.sighted(&id, 5, "kubepods/besteffort/podu/p1".into());
        assert_eq!(r.naming("p1"), Naming::Pending);
        assert!(r.needs_name("p1") && r.unnamed("p1"));
        assert!(r.sighted_for("p1", Instant::now()).is_some());
        assert!(r.unknown_to_runtime(&id).is_some());
        assert_eq!(r.naming("p1"), Naming::Unnamed);
        assert!(!r.needs_name("p1") && r.unnamed("p1"));
        let sandbox = ContainerMeta {
            sandbox: true,
            ..meta("p1")
        };
        assert!(
            r.named_by(sandbox, "cri").is_none(),
            "its start is recorded"
        );
        match r.naming("p1") {
            Naming::Named(m) => assert!(m.sandbox && m.pod_name == "web-0"),
            other => panic!("{other:?}"),
        }
        assert!(!r.unnamed("p1"));
    }

    #[test]
    fn containers_named_by_another_api_stop_with_their_cgroup_only() {
        let mut r = ContainerRegistry::new(Duration::from_secs(60));
        let id: Arc<str> = Arc::from("d1");
        r.sighted(&id, 9, "docker/d1".into());
        let n = r.named_by(meta("d1"), "docker").expect("start");
        assert_eq!((n.change, n.source), (Change::Started, "docker"));
        assert!(
            r.running_ids().is_empty(),
            "the CRI not listing it is no stop"
        );
        assert!(r.gone_cgroups(|_| true).is_empty());
        let stops = r.gone_cgroups(|_| false);
        assert_eq!(stops.len(), 1);
        assert_eq!(stops[0].source, "cgroup");
        assert_eq!(r.get("d1").expect("tombstone").image, "nginx:1.27");
    }
}
