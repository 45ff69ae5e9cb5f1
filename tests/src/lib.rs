//! Helpers for the privileged integration tests: a capture running in the
//! test process, waiting with deadlines, unique markers, cgroups, and a
//! private containerd running CRI pods ([`containerd`]).

pub mod containerd;
pub mod docker;
pub mod fleet;
pub mod pki;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use fdr_agent::{
    config::Config,
    daemon::{self, Running, SelfFilter},
    event::Event,
};

/// How long a test waits for an event before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A string no other process on the machine will have in its argv.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("fdr-test-{tag}-{}-{nanos:x}", std::process::id())
}

/// A private temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real agent (probes, pipeline, API on a private socket) running in
/// the test process, recording everything including the test's own forks.
pub struct Capture {
    pub agent: Option<Running>,
    pub live: fdr_agent::recorder::live::Subscription,
    _dir: TempDir,
}

impl Capture {
    pub async fn start(tag: &str) -> Self {
        Self::start_with(tag, |_| {}).await
    }

    pub async fn start_with(tag: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = TempDir::new(tag);
        let mut cfg = Config::default();
        cfg.api.socket = dir.path().join("fdr.sock");
        cfg.recorder.data_dir = dir.path().join("data");
        tweak(&mut cfg);
        let agent = daemon::start(&cfg, SelfFilter::RecordAll)
            .await
            .expect("agent starts (root, eBPF, BTF and tracefs needed)");
        // A deep queue: the tests' own receiver; what it loses anyway is
        // searched for in the buffer.
        let live = agent
            .state
            .live
            .subscribe(Default::default(), 1 << 18, 256 << 20)
            .expect("a live subscription");
        Capture {
            agent: Some(agent),
            live,
            _dir: dir,
        }
    }

    /// The `container-start` event of container `id`, which must come
    /// from `source` (`cri`, `containerd`, `docker`, `cgroup`).
    pub async fn container_start(&mut self, id: &str, source: &str) -> Arc<Event> {
        let start = self
            .wait_for(&format!("the start of {id}, from {source}"), |e| {
                e.kind() == fdr_agent::event::EventKind::ContainerStart
                    && e.scope.container_id() == Some(id)
            })
            .await;
        assert!(
            matches!(&start.record.detail, fdr_agent::event::Detail::Container(c) if c.source == source),
            "{:?}",
            start.record.detail
        );
        start
    }

    /// Events in the host buffer matching `pred`, oldest first.
    pub fn recorded(&self, pred: impl Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        let state = &self.agent.as_ref().expect("running").state;
        let all = state.buffers.lock().expect("buffer lock").all();
        all.into_iter().filter(|e| pred(e)).collect()
    }

    pub fn socket(&self) -> PathBuf {
        self.agent.as_ref().expect("running").socket.clone()
    }

    /// The first event matching `pred`: already in the host buffer, or live
    /// (searching the buffer again when the test's own receiver fell
    /// behind), within [`DEADLINE`].
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Arc<Event> {
        // Already recorded?
        if let Some(ev) = self.recorded(&pred).into_iter().next() {
            return ev;
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.live.recv()).await {
                Ok(Some(ev)) => {
                    if !self.live.take_lost().is_empty() {
                        if let Some(ev) = self.recorded(&pred).into_iter().next() {
                            return ev;
                        }
                    }
                    if pred(&ev) {
                        return ev;
                    }
                }
                Ok(None) => panic!("capture stopped before {what}"),
                Err(_) => panic!("no {what} within {DEADLINE:?}"),
            }
        }
    }

    /// When the model `key` stops learning (its `learning_until`, wall ns),
    /// once the agent has created it, within [`DEADLINE`].
    pub async fn model_learning_until(&self, key: &str) -> u64 {
        let state = self.agent.as_ref().expect("running").state.clone();
        wait_until(&format!("the model {key}"), || {
            state.models.lock().ok()?.get(key).map(|m| m.learning_until)
        })
        .await
    }

    pub async fn stop(mut self) {
        if let Some(a) = self.agent.take() {
            a.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Polls `f` until it returns `Some`, within [`DEADLINE`].
pub fn poll_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` until it gives a value, without blocking the runtime.
pub async fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The mount point of the cgroup v2 hierarchy.
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read mounts");
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        .expect("a cgroup v2 hierarchy is mounted")
}

/// A cgroup v2 directory created for a test, removed (after its processes
/// are gone) on drop.
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    /// Creates `relative` (which may have several components) under the v2 root.
    pub fn create(relative: &str) -> Self {
        let path = cgroup2_root().join(relative);
        std::fs::create_dir_all(&path).expect("create cgroup");
        Cgroup { path }
    }

    /// The id the kernel reports for tasks in it: the directory's inode.
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).expect("stat cgroup").ino()
    }

    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // rmdir fails while exiting tasks are still accounted: retry briefly.
        let start = Instant::now();
        while std::fs::remove_dir(&self.path).is_err() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Remove now-empty parents created for the test (never the root).
        let root = cgroup2_root();
        let mut p = self.path.parent();
        while let Some(dir) = p {
            if dir == root || std::fs::remove_dir(dir).is_err() {
                break;
            }
            p = dir.parent();
        }
    }
}

/// The `fdr-agent` binary built next to the test binaries (or `FDR_AGENT_BIN`).
pub fn agent_binary() -> PathBuf {
    built_binary("fdr-agent", "FDR_AGENT_BIN")
}

/// The `fdrctl` binary (crate `fdr-cli`) built next to the test binaries
/// (or `FDRCTL_BIN`).
pub fn fdrctl_binary() -> PathBuf {
    built_binary("fdrctl", "FDRCTL_BIN")
}

/// The `fdr-console` binary built next to the test binaries (or
/// `FDR_CONSOLE_BIN`).
pub fn console_binary() -> PathBuf {
    built_binary("fdr-console", "FDR_CONSOLE_BIN")
}

fn built_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> → target/<profile>/<name>; a binary
    // of this crate (the bench) is in target/<profile> itself.
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .map(|d| d.join(name))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p fdr-agent -p fdr-cli --bins` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// A running agent process, killed when dropped.
pub struct AgentProcess(pub std::process::Child);

impl AgentProcess {
    /// Starts the agent with `args` and waits for its socket.
    pub fn start(socket: &Path, args: &[&std::ffi::OsStr]) -> Self {
        let _ = std::fs::remove_file(socket);
        let child = std::process::Command::new(agent_binary())
            .args(args)
            .arg("--socket")
            .arg(socket)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start fdr-agent");
        let agent = AgentProcess(child);
        poll_until("agent socket", || socket.exists().then_some(()));
        agent
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's `ListContainers` entry for container `id`.
pub async fn listed_container(socket: &Path, id: &str) -> fdr_proto::v1::KnownContainer {
    let mut client = fdr_cli::client::connect_unix(socket)
        .await
        .expect("connect");
    client
        .list_containers(fdr_proto::v1::ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .into_iter()
        .find(|k| k.info.as_ref().is_some_and(|c| c.id == id))
        .unwrap_or_else(|| panic!("container {id} listed"))
}

/// Every incident an agent (or console) stores, paging `ListIncidents`.
pub async fn all_incidents(c: &mut fdr_cli::client::Client) -> Vec<fdr_proto::v1::Incident> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let r = c
            .list_incidents(fdr_proto::v1::ListIncidentsRequest {
                after_serial: after,
                ..Default::default()
            })
            .await
            .expect("ListIncidents")
            .into_inner();
        if r.incidents.is_empty() {
            return out;
        }
        after = r.last_serial;
        out.extend(r.incidents);
    }
}
