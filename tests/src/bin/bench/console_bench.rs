//! `--only console`: the release `fdr-console` copying incidents and their
//! snapshots from release `fdr-agent`s, as users run them.
//!
//! Ingest: one real agent (own data directory and socket; incident window
//! and snapshot after-window 1 s, so that each spaced account change is an
//! incident of its own with a snapshot of its own) records a paced
//! background load (an exec, 16 new files written and 16 removed in a
//! private directory per operation) while interactive `useradd`s in a private mount namespace
//! (a copy of /etc) raise backdoor-account incidents, until
//! `--console-snapshots` of them have a stored snapshot; the pace is set
//! so that a snapshot holds about `--console-events` events. Then a console with a fresh data directory
//! is started on the agent's `unix://` URL and timed until it holds every
//! incident and snapshot (its `ListAgents` says the agent is synced up to
//! the last serial): time, the console's CPU (utime + stime of its
//! process), bytes copied.
//!
//! Fan-in: the agent's data directory as it was after its first
//! `--console-fan-in-incidents` incidents (the agent stopped for the copy,
//! then started again on it) is copied `--console-agents` times, each copy
//! given an instance id and node name of its own
//! (`fdr_agent::store::reset_identity`: the console keys agents by
//! instance id) and served by `fdr-agent --offline`. A fresh console with
//! all their URLs is timed until it holds everything, then its CPU is
//! measured while it sits connected and idle (streams open, a stats call
//! to every agent each 5 s). From the CPU per incident ingested (session
//! set-up included: conservative) and the idle CPU per agent: how many
//! agents one core keeps in sync at one incident per agent per minute.
//! The copies' snapshots are the same bytes, so the evidence store keeps
//! each object once (each is still received, decoded, hashed and
//! written; the index holds one entry per copy). Bytes copied are the
//! console's: `ExportSnapshot` in `protobuf` format, the plain `fdr.v1`
//! messages, several times the agent's compressed stored form (both are
//! printed).

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use fdr_cli::client::{self, Target};
use fdr_proto::v1 as pb;
use serde_json::{json, Value};

/// How much the case runs.
pub struct Opts {
    /// Incident snapshots the agent holds for the ingest part.
    pub snapshots: u32,
    /// Agents (copies of the database) of the fan-in part.
    pub agents: u32,
    /// Seconds the connected, idle console is measured.
    pub idle_secs: u64,
    /// Events a snapshot should hold (the load is paced for it).
    pub events: u64,
    /// Incidents in the database each fan-in agent serves.
    pub fan_in_incidents: u32,
}

/// The agent's snapshot windows: history before the incident, and after.
const BEFORE: Duration = Duration::from_secs(6);
const AFTER: Duration = Duration::from_secs(1);
/// Spacing of the account changes: above the incident window (1 s).
const SPACING: Duration = Duration::from_millis(1200);
/// Waits for processes and answers on a busy 2-core machine.
const SLOW: Duration = Duration::from_secs(120);

/// A binary next to fdr-bench (or named by `env`).
fn sibling(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A child process with its output in a log file; killed when dropped.
struct Proc {
    child: Option<Child>,
    what: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str, log: &Path) -> Result<Proc> {
        let out = std::fs::File::create(log).with_context(|| log.display().to_string())?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env_remove("RUST_LOG");
        // SAFETY: prctl only, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // Gone with the bench, however it ends.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("start {what}"))?;
        Ok(Proc {
            child: Some(child),
            what: what.to_owned(),
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// An error (with the end of its log) when it has exited.
    fn alive(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(st) = c.try_wait()? {
                bail!("{} exited ({st}): {}", self.what, tail(&self.log));
            }
        }
        Ok(())
    }

    /// CPU time (user + system, every thread) so far, in ms.
    fn cpu_ms(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .with_context(|| format!("{}: /proc stat", self.what))?;
        // After the command name (which may hold spaces): field 3 on.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("/proc/PID/stat without a command name")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> Result<u64> {
            f.get(i)
                .and_then(|v| v.parse().ok())
                .context("/proc/PID/stat: utime/stime")
        };
        // utime and stime: fields 14 and 15.
        let t = ticks(11)? + ticks(12)?;
        // SAFETY: no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(t as f64 * 1e3 / hz)
    }

    /// VmRSS (KiB).
    fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    }

    /// SIGTERM, as systemd stops it; killed after `SLOW`.
    fn stop(mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: our child, not yet waited for.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + SLOW;
        while c.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("{} did not stop within {SLOW:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Polls `f` every `step` until it gives a value, at most `limit`.
fn poll<T>(
    what: &str,
    limit: Duration,
    step: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(step);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Every incident the agent (or console) at `c` holds, a few audits each.
async fn incidents(c: &mut client::Client, after: u64) -> Result<Vec<pb::Incident>> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let r = c
            .list_incidents(pb::ListIncidentsRequest {
                after_serial: after,
                limit: 1000,
                audit_limit: 1,
            })
            .await?
            .into_inner();
        if r.incidents.is_empty() {
            return Ok(out);
        }
        after = r.last_serial;
        out.extend(r.incidents);
    }
}

/// Every snapshot listed.
async fn snapshots(c: &mut client::Client) -> Result<Vec<pb::SnapshotInfo>> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = c
            .list_snapshots(pb::ListSnapshotsRequest {
                cursor: cursor.clone(),
                limit: 0,
            })
            .await?
            .into_inner();
        out.extend(r.snapshots);
        if r.next_cursor.is_empty() {
            return Ok(out);
        }
        cursor = r.next_cursor;
    }
}

/// Events the agent's pipeline has seen so far (every kind).
fn seen(rt: &tokio::runtime::Runtime, socket: &Path) -> Result<u64> {
    let st = rt.block_on(crate::monitors::stats(socket))?;
    Ok(st.kinds.iter().map(|k| k.seen).sum())
}

/// Files each operation of the load writes.
const WRITES: u64 = 16;

/// One operation of the background load: an exec, `WRITES` new files
/// written in `dir` and the previous operation's removed.
fn load_op(dir: &Path, i: u64) -> Result<()> {
    crate::exec_true(1)?;
    for j in 0..WRITES {
        std::fs::write(dir.join(format!("f{i}-{j}")), i.to_le_bytes())?;
        if i > 0 {
            let _ = std::fs::remove_file(dir.join(format!("f{}-{j}", i - 1)));
        }
    }
    Ok(())
}

/// The background load, paced at `rate` operations per second (f64 bits).
struct Load {
    stop: Arc<AtomicBool>,
    rate: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<u64>>>,
}

impl Load {
    fn start(dir: PathBuf, rate: f64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let rate = Arc::new(AtomicU64::new(rate.to_bits()));
        let (s, r) = (stop.clone(), rate.clone());
        let thread = std::thread::spawn(move || -> Result<u64> {
            let mut next = Instant::now();
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                // Behind by more than a moment (the machine was busy): no
                // burst to catch up.
                if now - next > Duration::from_millis(200) {
                    next = now;
                }
                load_op(&dir, n)?;
                n += 1;
                let per = f64::from_bits(r.load(Ordering::Relaxed)).max(1.0);
                next += Duration::from_secs_f64(1.0 / per);
            }
            Ok(n)
        });
        Load {
            stop,
            rate,
            thread: Some(thread),
        }
    }

    fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    fn set_rate(&self, r: f64) {
        self.rate.store(r.to_bits(), Ordering::Relaxed);
    }

    fn finish(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("the load thread panicked"),
            None => Ok(0),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An interactive `useradd` of `user` in a private mount namespace over
/// the copy of /etc in `etc` (under a pseudo-terminal): a backdoor-account
/// incident on the agent; the machine's accounts are never touched.
fn interactive_useradd(etc: &Path, user: &str) -> Result<()> {
    let inner = format!(
        "mount --bind {} /etc && useradd -M -s /bin/false {user}",
        etc.display()
    );
    let wrapped = format!("unshare -m --propagation private sh -c '{inner}'");
    let out = Command::new("script")
        .args(["-qec", &wrapped, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .context("script (util-linux)")?;
    if !out.status.success() {
        bail!(
            "useradd in a private /etc: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

/// The live agent whose database the ingest part copies, and the copy
/// of its data directory the fan-in part serves.
struct Source {
    agent: Proc,
    socket: PathBuf,
    /// The agent's data directory as it was after the first
    /// `--console-fan-in-incidents` incidents (the agent stopped for the
    /// copy, then started again on it).
    template: PathBuf,
    /// Incidents it holds (every one, also any other process on the
    /// machine raised meanwhile) and the last serial.
    incidents: u64,
    last_serial: u64,
    /// The distinct stored snapshots of those incidents.
    snaps: Vec<pb::SnapshotInfo>,
    load_ops: u64,
    load_rate: f64,
    raise_secs: f64,
}

/// Starts the agent on `config` and waits for its API.
fn start_agent(
    rt: &tokio::runtime::Runtime,
    config: &Path,
    socket: &Path,
    log: &Path,
) -> Result<Proc> {
    let _ = std::fs::remove_file(socket);
    let mut cmd = Command::new(crate::agent_bench::agent_binary());
    cmd.arg("--config").arg(config);
    let mut agent = Proc::spawn(cmd, "fdr-agent", log)?;
    poll("the agent's API", SLOW, Duration::from_millis(50), || {
        agent.alive()?;
        Ok(rt.block_on(crate::monitors::stats(socket)).ok())
    })?;
    Ok(agent)
}

/// Raises incidents until `snaps` holds `want` distinct stored snapshots.
struct Raiser<'a> {
    rt: &'a tokio::runtime::Runtime,
    etc: PathBuf,
    last: Instant,
    next_user: u32,
    snaps: Vec<pb::SnapshotInfo>,
    events: u64,
    full_rate: f64,
}

impl Raiser<'_> {
    fn raise_until(
        &mut self,
        want: usize,
        agent: &mut Proc,
        socket: &Path,
        load: &Load,
    ) -> Result<()> {
        let rt = self.rt;
        let mut c = rt.block_on(client::connect_unix(socket))?;
        let deadline = Instant::now() + Duration::from_secs(60 + 10 * want as u64);
        while self.snaps.len() < want {
            if Instant::now() > deadline {
                bail!("only {} incident snapshots of {want}", self.snaps.len());
            }
            agent.alive()?;
            let before = rt
                .block_on(incidents(&mut c, 0))?
                .iter()
                .map(|i| i.serial)
                .max()
                .unwrap_or(0);
            std::thread::sleep(SPACING.saturating_sub(self.last.elapsed()));
            let user = format!("fdb{}x{}", std::process::id(), self.next_user);
            self.next_user += 1;
            interactive_useradd(&self.etc, &user)?;
            self.last = Instant::now();
            let sid = poll(
                &format!("the incident of {user} with its snapshot"),
                SLOW,
                Duration::from_millis(100),
                || {
                    let list = rt.block_on(incidents(&mut c, before))?;
                    Ok(list
                        .iter()
                        .find(|i| i.accounts.iter().any(|a| a.account == user))
                        .and_then(|i| (i.snapshot_id > 0).then_some(i.snapshot_id)))
                },
            )?;
            let info = poll(
                &format!("snapshot {sid} stored"),
                SLOW,
                Duration::from_millis(100),
                || {
                    let list = rt.block_on(snapshots(&mut c))?;
                    Ok(list.into_iter().find(|s| s.id == sid && !s.open))
                },
            )?;
            if self.snaps.iter().any(|s| s.id == sid) {
                // Joined an open snapshot: spaced too closely.
                continue;
            }
            // Toward the wanted events per snapshot (the account change
            // and other processes on the machine add theirs).
            let got = info.event_count.max(1) as f64;
            let factor = (self.events as f64 * 1.05 / got).clamp(0.5, 2.0);
            load.set_rate((load.rate() * factor).min(self.full_rate * 0.9));
            self.snaps.push(info);
        }
        Ok(())
    }
}

/// Starts the agent and raises incidents until `opts.snapshots` of them
/// have stored snapshots; the data directory is copied (the agent
/// stopped) after the first `opts.fan_in_incidents`.
fn prepare(rt: &tokio::runtime::Runtime, opts: &Opts, dir: &Path) -> Result<Source> {
    let socket = dir.join("agent.sock");
    let data = dir.join("agent-data");
    std::fs::create_dir_all(&data)?;
    let mut cfg = fdr_agent::config::Config::default();
    cfg.api.socket = socket.clone();
    cfg.recorder.data_dir = data.clone();
    cfg.recorder.snapshot_before = BEFORE;
    cfg.recorder.snapshot_after = AFTER;
    cfg.recorder.max_snapshots = (opts.snapshots as usize * 2).max(100);
    cfg.analysis.incident_window = Duration::from_secs(1);
    cfg.host.node_name = "bench-node".into();
    let file = dir.join("agent.toml");
    std::fs::write(&file, toml::to_string(&cfg)?)?;
    // The /etc the account changes go to (copied before the agent runs:
    // not in the snapshots).
    let etc = dir.join("etc");
    let st = Command::new("cp")
        .args(["-a", "/etc/."])
        .arg(&etc)
        .status()?;
    if !st.success() {
        bail!("cp -a /etc {}: {st}", etc.display());
    }
    let log = dir.join("agent.log");
    let mut agent = start_agent(rt, &file, &socket, &log)?;
    let t = Instant::now();
    let work = dir.join("load");
    std::fs::create_dir_all(&work)?;
    // Calibration: the events one operation of the load makes.
    let s0 = seen(rt, &socket)?;
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(1) {
        load_op(&work, n)?;
        n += 1;
    }
    let full_rate = n as f64 / t0.elapsed().as_secs_f64();
    // The pipeline drains.
    std::thread::sleep(Duration::from_millis(300));
    let per_op = ((seen(rt, &socket)? - s0) as f64 / n.max(1) as f64).max(1.0);
    let window = (BEFORE + AFTER).as_secs_f64();
    let load = Load::start(
        work,
        (opts.events as f64 / window / per_op).min(full_rate * 0.9),
    );
    println!(
        "console bench: {per_op:.1} events per load operation, {full_rate:.0} operations/s at most; \
         pacing {:.0}/s for {} events per snapshot",
        load.rate(),
        opts.events
    );
    // A full before-window of load ahead of the first incident.
    std::thread::sleep(BEFORE);
    let mut raiser = Raiser {
        rt,
        etc,
        last: Instant::now() - SPACING,
        next_user: 0,
        snaps: Vec::new(),
        events: opts.events,
        full_rate,
    };
    let first = (opts.fan_in_incidents.min(opts.snapshots)) as usize;
    raiser.raise_until(first, &mut agent, &socket, &load)?;
    // The fan-in's database: copied with the agent stopped, then the
    // agent goes on with it.
    agent.stop()?;
    let template = dir.join("template");
    copy_dir(&data, &template)?;
    let mut agent = start_agent(rt, &file, &socket, &log)?;
    if raiser.snaps.len() < opts.snapshots as usize {
        // A full before-window of load again.
        std::thread::sleep(BEFORE);
        raiser.raise_until(opts.snapshots as usize, &mut agent, &socket, &load)?;
    }
    let load_rate = load.rate();
    let load_ops = load.finish()?;
    let raise_secs = t.elapsed().as_secs_f64();
    // Whatever the agent holds is what a console must copy: every
    // incident, each with its snapshot stored.
    let mut c = rt.block_on(client::connect_unix(&socket))?;
    let (all, stored) = poll(
        "every incident's snapshot stored",
        SLOW,
        Duration::from_millis(200),
        || {
            let all = rt.block_on(incidents(&mut c, 0))?;
            let stored = rt.block_on(snapshots(&mut c))?;
            let ok = all.iter().all(|i| {
                i.snapshot_id == 0 || stored.iter().any(|s| s.id == i.snapshot_id && !s.open)
            });
            Ok(ok.then_some((all, stored)))
        },
    )?;
    let mut ids: Vec<u64> = all
        .iter()
        .map(|i| i.snapshot_id)
        .filter(|&s| s > 0)
        .collect();
    ids.sort();
    ids.dedup();
    let snaps: Vec<pb::SnapshotInfo> = stored
        .into_iter()
        .filter(|s| ids.binary_search(&s.id).is_ok())
        .collect();
    Ok(Source {
        agent,
        socket,
        template,
        incidents: all.len() as u64,
        last_serial: all.iter().map(|i| i.serial).max().unwrap_or(0),
        snaps,
        load_ops,
        load_rate,
        raise_secs,
    })
}

/// A console with its own data directory, on `urls`.
struct Console {
    proc: Proc,
    target: Target,
    /// One connection for the polls (not one per poll).
    client: Option<client::Console>,
}

impl Console {
    fn start(dir: &Path, urls: Vec<String>, snapshots: u64) -> Result<Console> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut cfg = fdr_console::config::Config::default();
        cfg.api.listen = format!("127.0.0.1:{port}").parse()?;
        // Not measured here (its default port is fixed).
        cfg.web.enabled = false;
        cfg.agents.urls = urls;
        cfg.evidence.dir = dir.join("data");
        // Nothing evicted while measured.
        cfg.retention.max_snapshots = cfg.retention.max_snapshots.max(snapshots * 2);
        cfg.retention.max_snapshot_bytes = u64::MAX / 2;
        let file = dir.join("console.toml");
        std::fs::write(&file, toml::to_string(&cfg)?)?;
        let mut cmd = Command::new(sibling("fdr-console", "FDR_CONSOLE_BIN"));
        cmd.arg("--config").arg(&file);
        let proc = Proc::spawn(cmd, "fdr-console", &dir.join("console.log"))?;
        Ok(Console {
            proc,
            target: Target::Tcp {
                url: format!("http://127.0.0.1:{port}"),
                token: None,
                tls: Default::default(),
            },
            client: None,
        })
    }

    fn agents(&mut self, rt: &tokio::runtime::Runtime) -> Result<Vec<pb::Agent>> {
        self.proc.alive()?;
        let target = self.target.clone();
        let mut c = match self.client.take() {
            Some(c) => c,
            None => rt.block_on(client::connect_console(&target))?,
        };
        let list = rt
            .block_on(c.list_agents(pb::ListAgentsRequest {}))?
            .into_inner()
            .agents;
        self.client = Some(c);
        Ok(list)
    }

    /// Polls until every agent is synced up to `serial` with `snaps`
    /// snapshots held; the time from `t0` and the CPU then.
    fn wait_synced(
        &mut self,
        rt: &tokio::runtime::Runtime,
        agents: usize,
        serial: u64,
        snaps: u64,
        t0: Instant,
    ) -> Result<(Duration, f64)> {
        let mut cpu = 0.0;
        let took = poll(
            "the console to hold every incident and snapshot",
            SLOW * 2,
            Duration::from_millis(100),
            || {
                // Before the console answers: not yet.
                let Ok(list) = self.agents(rt) else {
                    self.proc.alive()?;
                    return Ok(None);
                };
                let done = list.len() == agents
                    && list
                        .iter()
                        .all(|a| a.synced_serial >= serial && a.snapshots >= snaps);
                if done {
                    cpu = self.proc.cpu_ms()?;
                    return Ok(Some(t0.elapsed()));
                }
                Ok(None)
            },
        )?;
        Ok((took, cpu))
    }

    /// Bytes and events of the snapshots it holds.
    fn held(&self, rt: &tokio::runtime::Runtime) -> Result<(u64, u64, u64)> {
        let target = self.target.clone();
        rt.block_on(async move {
            let mut c = client::connect(&target).await?;
            let list = snapshots(&mut c).await?;
            Ok((
                list.len() as u64,
                list.iter().map(|s| s.bytes).sum(),
                list.iter().map(|s| s.event_count).sum(),
            ))
        })
    }
}

/// Copies every file of `from` into a new `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut bytes = 0;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            bytes += std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(bytes)
}

/// Runs the case; returns its entry of `results.json`.
pub fn run(rt: &tokio::runtime::Runtime, opts: &Opts) -> Result<Value> {
    for (name, env) in [
        ("fdr-agent", "FDR_AGENT_BIN"),
        ("fdr-console", "FDR_CONSOLE_BIN"),
    ] {
        let p = sibling(name, env);
        anyhow::ensure!(
            p.exists(),
            "{} missing: `cargo xtask bench` builds it (cargo build --release -p fdr-agent -p fdr-console)",
            p.display()
        );
    }
    crate::monitors::remove_stale(&std::env::temp_dir(), "fdr-console-bench-");
    let dir = std::env::temp_dir().join(format!("fdr-console-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let r = run_in(rt, opts, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_in(rt: &tokio::runtime::Runtime, opts: &Opts, dir: &Path) -> Result<Value> {
    let started = Instant::now();
    let src = prepare(rt, opts, dir)?;
    let n_snaps = src.snaps.len() as u64;
    let agent_bytes: u64 = src.snaps.iter().map(|s| s.bytes).sum();
    let agent_events: u64 = src.snaps.iter().map(|s| s.event_count).sum();
    let ev = src.snaps.iter().map(|s| s.event_count as f64);
    let ev_min = ev.clone().fold(f64::INFINITY, f64::min);
    let ev_max = ev.fold(0.0, f64::max);
    println!(
        "console bench: the agent holds {} incidents, {n_snaps} snapshots ({:.1} MB, {:.0} events \
         each on average, {ev_min:.0}–{ev_max:.0}); {} load operations, {:.0}/s at the end; {:.0} s",
        src.incidents,
        agent_bytes as f64 / 1e6,
        agent_events as f64 / n_snaps.max(1) as f64,
        src.load_ops,
        src.load_rate,
        src.raise_secs
    );

    // Ingest: a fresh console on the live agent.
    let url = format!("unix://{}", src.socket.display());
    let t0 = Instant::now();
    let mut con = Console::start(&dir.join("console-ingest"), vec![url], n_snaps)?;
    let (took, cpu) = con.wait_synced(rt, 1, src.last_serial, n_snaps, t0)?;
    let (held, bytes, events) = con.held(rt)?;
    let ingest_rss = con.proc.rss_kib();
    con.proc.stop()?;
    let secs = took.as_secs_f64();
    let ingest = json!({
        "incidents": src.incidents,
        "snapshots": held,
        "bytes": bytes,
        "agent_stored_bytes": agent_bytes,
        "events": events,
        "events_per_snapshot": events as f64 / held.max(1) as f64,
        "events_per_snapshot_min": ev_min,
        "events_per_snapshot_max": ev_max,
        "seconds": secs,
        "snapshots_per_s": held as f64 / secs,
        "mb_per_s": bytes as f64 / 1e6 / secs,
        "console_cpu_ms": cpu,
        "console_cpu_ms_per_snapshot": cpu / held.max(1) as f64,
        "console_cpu_ms_per_mb": cpu / (bytes as f64 / 1e6).max(1e-9),
        "console_rss_kib": ingest_rss,
    });
    println!(
        "console bench: ingest of {held} snapshots ({:.1} MB) from one agent in {:.2} s: \
         {:.1} snapshots/s, {:.1} MB/s, console CPU {:.0} ms ({:.1} ms per snapshot)",
        bytes as f64 / 1e6,
        secs,
        held as f64 / secs,
        bytes as f64 / 1e6 / secs,
        cpu,
        cpu / held.max(1) as f64
    );

    // Fan-in: copies of the database, each another agent.
    src.agent.stop()?;
    let m = opts.agents as usize;
    let mut agents = Vec::with_capacity(m);
    let mut urls = Vec::with_capacity(m);
    let mut db_bytes = 0;
    for i in 0..m {
        let data = dir.join(format!("copy-{i}"));
        db_bytes = copy_dir(&src.template, &data)?;
        fdr_agent::store::reset_identity(&data, &format!("bench-node-{i}"))?;
        let socket = dir.join(format!("copy-{i}.sock"));
        let mut cmd = Command::new(crate::agent_bench::agent_binary());
        cmd.arg("--offline")
            .arg("--data-dir")
            .arg(&data)
            .arg("--socket")
            .arg(&socket);
        agents.push((
            Proc::spawn(
                cmd,
                &format!("fdr-agent --offline #{i}"),
                &dir.join(format!("copy-{i}.log")),
            )?,
            socket.clone(),
        ));
        urls.push(format!("unix://{}", socket.display()));
    }
    for (p, socket) in agents.iter_mut() {
        poll(
            "the offline agents' API",
            SLOW,
            Duration::from_millis(50),
            || {
                p.alive()?;
                Ok(rt.block_on(crate::monitors::stats(socket)).ok())
            },
        )?;
    }
    let agents_rss: u64 = agents.iter().filter_map(|(p, _)| p.rss_kib()).sum();
    // What each copy holds (the same for all): what the agent held when
    // it stopped, which may be more than measured above when some other
    // process on the machine raised an incident meanwhile.
    let (per_copy, last_serial, per_copy_snaps) = rt.block_on(async {
        let mut c = client::connect_unix(&agents[0].1).await?;
        let all = incidents(&mut c, 0).await?;
        let stored = snapshots(&mut c).await?;
        let mut ids: Vec<u64> = all
            .iter()
            .map(|i| i.snapshot_id)
            .filter(|&id| stored.iter().any(|s| s.id == id && !s.open))
            .collect();
        ids.sort();
        ids.dedup();
        anyhow::Ok((
            all.len() as u64,
            all.iter().map(|i| i.serial).max().unwrap_or(0),
            ids.len() as u64,
        ))
    })?;
    let t0 = Instant::now();
    let mut con = Console::start(&dir.join("console-fan-in"), urls, per_copy_snaps * m as u64)?;
    let (took, cpu) = con.wait_synced(rt, m, last_serial, per_copy_snaps, t0)?;
    let incidents_in = per_copy * m as u64;
    let snaps_in = per_copy_snaps * m as u64;
    let (held, bytes, held_events) = con.held(rt)?;
    // Idle: connected, streams open, a stats call to each agent per 5 s.
    std::thread::sleep(Duration::from_secs(2));
    let (c1, i1) = (con.proc.cpu_ms()?, Instant::now());
    std::thread::sleep(Duration::from_secs(opts.idle_secs));
    let (c2, idle) = (con.proc.cpu_ms()?, i1.elapsed());
    let reachable = con.agents(rt)?.iter().filter(|a| a.reachable).count();
    let fan_rss = con.proc.rss_kib();
    con.proc.stop()?;
    for (p, _) in agents {
        p.stop()?;
    }
    anyhow::ensure!(
        reachable == m,
        "only {reachable} of {m} agents reachable at the end"
    );
    let secs = took.as_secs_f64();
    let per_incident_ms = cpu / incidents_in.max(1) as f64;
    let idle_ms_per_agent_min = (c2 - c1) / m as f64 / (idle.as_secs_f64() / 60.0);
    let per_agent_min = per_incident_ms + idle_ms_per_agent_min;
    let agents_per_core = 60_000.0 / per_agent_min;
    let formula =
        "agents per core = 60 000 ms / (console CPU ms per incident ingested × 1 incident/min \
                   + idle console CPU ms per agent per minute)";
    println!(
        "console bench: fan-in of {m} agents ({incidents_in} incidents, {held} snapshots, {:.1} MB) \
         in {secs:.2} s: {:.1} snapshots/s, {:.1} MB/s, console CPU {cpu:.0} ms \
         ({per_incident_ms:.2} ms per incident); idle {:.3} ms CPU per agent per minute over {:.0} s; \
         console RSS {} MB, agents' {} MB",
        bytes as f64 / 1e6,
        held as f64 / secs,
        bytes as f64 / 1e6 / secs,
        idle_ms_per_agent_min,
        idle.as_secs_f64(),
        fan_rss.map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0)),
        agents_rss / 1024,
    );
    println!();
    println!(
        "| console | snapshots | events/snapshot | MB | time | snapshots/s | MB/s | CPU/snapshot | \
         idle CPU/agent/min | agents per core |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| ingest, 1 agent | {} | {:.0} | {:.1} | {:.2} s | {:.1} | {:.1} | {:.1} ms | – | – |",
        ingest["snapshots"],
        ingest["events_per_snapshot"].as_f64().unwrap_or(0.0),
        ingest["bytes"].as_f64().unwrap_or(0.0) / 1e6,
        ingest["seconds"].as_f64().unwrap_or(0.0),
        ingest["snapshots_per_s"].as_f64().unwrap_or(0.0),
        ingest["mb_per_s"].as_f64().unwrap_or(0.0),
        ingest["console_cpu_ms_per_snapshot"]
            .as_f64()
            .unwrap_or(0.0),
    );
    println!(
        "| fan-in, {m} agents | {held} | {:.0} | {:.1} | {secs:.2} s | {:.1} | {:.1} | {:.1} ms | \
         {idle_ms_per_agent_min:.2} ms | {agents_per_core:.0} |",
        held_events as f64 / held.max(1) as f64,
        bytes as f64 / 1e6,
        held as f64 / secs,
        bytes as f64 / 1e6 / secs,
        cpu / held.max(1) as f64,
    );
    println!();
    println!("({formula}; at 1 incident/agent/min: {per_incident_ms:.2} + {idle_ms_per_agent_min:.2} ms = {per_agent_min:.2} ms per agent per minute)");
    println!(
        "console bench: {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    Ok(json!({
        "case": "console",
        "what": "the release fdr-console copying incidents and snapshots from release fdr-agents \
                 (unix sockets): one live agent, then copies of its database served by \
                 fdr-agent --offline, each with its own instance id",
        "snapshot_window_s": [BEFORE.as_secs_f64(), AFTER.as_secs_f64()],
        "ingest": ingest,
        "fan_in": {
            "agents": m,
            "database_bytes": db_bytes,
            "incidents": incidents_in,
            "snapshots": held,
            "snapshots_expected": snaps_in,
            "bytes": bytes,
            "seconds": secs,
            "snapshots_per_s": held as f64 / secs,
            "mb_per_s": bytes as f64 / 1e6 / secs,
            "console_cpu_ms": cpu,
            "console_cpu_ms_per_incident": per_incident_ms,
            "console_cpu_ms_per_mb": cpu / (bytes as f64 / 1e6).max(1e-9),
            "idle_seconds": idle.as_secs_f64(),
            "idle_console_cpu_ms": c2 - c1,
            "idle_console_cpu_ms_per_agent_per_min": idle_ms_per_agent_min,
            "console_rss_kib": fan_rss,
            "agents_rss_kib": agents_rss,
        },
        "console_cpu_ms_per_agent_per_min_at_1_incident_per_min": per_agent_min,
        "agents_per_core": agents_per_core,
        "formula": formula,
    }))
}
