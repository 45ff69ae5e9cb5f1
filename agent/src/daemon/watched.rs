//! Keeps the kernel's watched inodes (`FDR_WATCH`) up to date: the host's
//! configured files and, for every running container, its own sensitive
//! files resolved in its root (`/proc/<pid>/root` of a process in its
//! cgroup; see [`crate::probes::watch`] for how a key matches what the
//! probe reads).
//!
//! The filesystem walks run on a thread of their own, never on the
//! pipeline's task: the pipeline only wakes it (a bounded channel of one
//! pending request, so wake-ups coalesce). It is woken on the periodic
//! `capture.watch_refresh`, after an account change, when a container is
//! first seen and when one starts or stops; a stopped container's keys are
//! forgotten on the next pass.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{mpsc, Arc},
};

use fdr_common::InodeKey;

use crate::{
    api::state::{lock, State},
    attribution::scope::cgroup2_root,
    config::CaptureConfig,
    probes::watch::{self, Root},
};

/// Keys one container may have in the map (its share): with the default
/// list a container has a handful (`/etc/shadow`, `/etc/passwd`, …).
pub const MAX_PER_CONTAINER: usize = 64;

/// Processes of a container's cgroup tried for a root that is its own
/// (the first may still be the runtime's `runc init`, on the host's root).
const PIDS_TRIED: usize = 4;

/// Wakes the resolver thread; dropping it stops the thread.
pub struct WatchRefresher {
    tx: mpsc::SyncSender<()>,
}

impl WatchRefresher {
    /// Starts the resolver thread for `state`'s probes and containers.
    pub fn spawn(
        state: Arc<State>,
        capture: CaptureConfig,
        data_dir: PathBuf,
    ) -> std::io::Result<WatchRefresher> {
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("fdr-watch".into())
            .spawn(move || {
                let mut r = Resolver {
                    capture,
                    data_dir,
                    containers: BTreeMap::new(),
                    applied: HashMap::new(),
                    warned: false,
                    cgroup_root: cgroup2_root(&state.host),
                    state,
                };
                while rx.recv().is_ok() {
                    r.pass();
                }
            })?;
        Ok(WatchRefresher { tx })
    }

    /// Asks for a pass (at once when none is pending; never blocks).
    pub fn wake(&self) {
        let _ = self.tx.try_send(());
    }
}

/// The resolver thread's state.
struct Resolver {
    state: Arc<State>,
    capture: CaptureConfig,
    data_dir: PathBuf,
    /// Each running container's own keys, by id (sorted: what the map has
    /// no room for is the same from one pass to the next).
    containers: BTreeMap<Arc<str>, HashMap<InodeKey, u32>>,
    /// What the kernel's map holds.
    applied: HashMap<InodeKey, u32>,
    /// The map overflowed once (logged once as a warning).
    warned: bool,
    cgroup_root: Option<PathBuf>,
}

/// A running container as the resolver needs it.
struct Live {
    id: Arc<str>,
    cgroup: Option<PathBuf>,
    pid: Option<u32>,
}

impl Resolver {
    fn pass(&mut self) {
        let began = std::time::Instant::now();
        let host_at = &self.state.host;
        let host = watch::watched_inodes(&self.capture, &self.data_dir, host_at);
        let host_root = Root::host_at(host_at).ok().and_then(|r| r.identity());
        let live: Vec<Live> = {
            let reg = lock(&self.state.containers);
            reg.list()
                .into_iter()
                .filter(|k| k.running)
                .map(|k| Live {
                    cgroup: reg.cgroup_path(&k.id),
                    pid: k.meta.as_ref().and_then(|m| m.pid),
                    id: k.id,
                })
                .collect()
        };
        // Gone containers are forgotten.
        self.containers
            .retain(|id, _| live.iter().any(|l| l.id == *id));
        for l in &live {
            match self.container_root(l, host_root) {
                Some(root) => {
                    let keys = watch::container_inodes(&root, &self.capture);
                    self.containers.insert(l.id.clone(), keys);
                }
                // Not yet in its own root (or on the host's): the host's
                // keys cover it; a later pass looks again.
                None => {
                    self.containers.remove(&l.id);
                }
            }
        }
        let capacity = fdr_common::MAX_WATCH as usize;
        let (entries, left) =
            watch::merge(&host, self.containers.values(), MAX_PER_CONTAINER, capacity);
        if left.total() > 0 {
            if self.warned {
                tracing::debug!(
                    over_share = left.over_share,
                    over_capacity = left.over_capacity,
                    "watched files left out"
                );
            } else {
                self.warned = true;
                tracing::warn!(
                    over_share = left.over_share,
                    over_capacity = left.over_capacity,
                    per_container = MAX_PER_CONTAINER,
                    capacity,
                    containers = self.containers.len(),
                    "watched files left out: the kernel's map has no room for them \
                     (their reads are not reported)"
                );
            }
        }
        if entries == self.applied {
            return;
        }
        if let Some(p) = lock(&self.state.probes).as_mut() {
            if let Err(err) = p.set_watch(&entries) {
                tracing::warn!(%err, "updating watched files");
                return;
            }
        }
        tracing::debug!(
            keys = entries.len(),
            containers = self.containers.len(),
            took_us = began.elapsed().as_micros() as u64,
            "watched files updated"
        );
        self.applied = entries;
    }

    /// The root of a process of the container that is not the host's.
    fn container_root(&self, l: &Live, host_root: Option<(u64, u64)>) -> Option<Root> {
        let proc = self.state.host.proc();
        let from_cgroup = self
            .cgroup_root
            .as_ref()
            .zip(l.cgroup.as_ref())
            .and_then(|(root, rel)| {
                std::fs::read_to_string(root.join(rel).join("cgroup.procs")).ok()
            })
            .map(|text| {
                text.lines()
                    .filter_map(|p| p.trim().parse::<u32>().ok())
                    .take(PIDS_TRIED)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        from_cgroup
            .into_iter()
            .chain(l.pid)
            .filter_map(|pid| Root::of_process_in(&proc, pid).ok())
            .find(|r| {
                let id = r.identity();
                id.is_some() && id != host_root
            })
    }
}
