//! Copying from the agents: one task per agent. Each connects, learns the
//! agent's identity, pulls the incidents after what the console holds
//! (`ListIncidents`, then `StreamIncidents` while connected), and copies
//! every committed snapshot (`ExportSnapshot` as its `fdr.v1.Snapshot`
//! encoding, stored compressed and named by that encoding's SHA-256)
//! into the evidence store before it records the incident that points at
//! it. An agent that cannot be reached is retried with backoff and shown
//! as such; the copying itself takes one of a bounded number of slots, so
//! one slow agent never holds the others up.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use fdr_cli::client::{self, Client, ClientTls, Target};
use fdr_proto::v1 as pb;
use prost::Message;
use tokio::sync::{broadcast, watch, Semaphore};
use tonic::Code;

use crate::{
    config::{AgentsConfig, Config},
    evidence::Evidence,
    index::{Index, IndexError, SnapshotRef},
    verify,
};

use crate::error::SyncError;

fn call_err(what: &str, s: tonic::Status) -> SyncError {
    SyncError::Call(format!("{what}: {}: {}", s.code(), s.message()))
}

/// What the console shows of an agent besides its stored record.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub url: String,
    pub source: String,
    pub instance_id: String,
    pub node: String,
    pub version: String,
    pub reachable: bool,
    pub error: String,
    pub last_contact: Option<SystemTime>,
    pub agent_last_serial: u64,
    pub kernel_drops: u64,
    /// The container runtimes of its containers.
    pub runtimes: Vec<String>,
    /// The last time everything it had was copied (kept in the index at
    /// most once a minute: see [`mark_synced`]).
    pub last_sync: Option<SystemTime>,
    persisted_sync: Option<std::time::Instant>,
}

/// What every part of the console shares.
pub struct Console {
    pub index: Arc<Index>,
    pub evidence: Evidence,
    pub cfg: Config,
    /// Incidents as they are ingested or change (fleet serials).
    pub live: broadcast::Sender<Arc<pb::Incident>>,
    /// By URL.
    pub agents: Mutex<HashMap<String, Live>>,
    /// Copy slots (`agents.concurrency`).
    pub slots: Semaphore,
    pub started: SystemTime,
    /// Objects found corrupt on read since start.
    pub corrupt_reads: std::sync::atomic::AtomicU64,
    /// Held from an object's put to its index entry, and around deleting
    /// an evicted one.
    pub store_lock: tokio::sync::Mutex<()>,
    /// Instance id → the URL whose session copies it now: a second
    /// address claiming the same id (a cloned data directory, an agent
    /// reached twice) is refused, never merged into the first.
    pub claims: Mutex<HashMap<String, String>>,
}

impl Console {
    pub fn new(cfg: Config, index: Index, evidence: Evidence) -> Arc<Console> {
        let (live, _) = broadcast::channel(1024);
        Arc::new(Console {
            index: Arc::new(index),
            evidence,
            slots: Semaphore::new(cfg.agents.concurrency),
            cfg,
            live,
            agents: Mutex::new(HashMap::new()),
            started: SystemTime::now(),
            corrupt_reads: Default::default(),
            store_lock: tokio::sync::Mutex::new(()),
            claims: Mutex::new(HashMap::new()),
        })
    }

    fn set_live(&self, url: &str, f: impl FnOnce(&mut Live)) {
        let mut m = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = m.get_mut(url) {
            f(l);
        }
    }

    /// Registers an agent URL (static, discovered); false when known.
    pub fn register(&self, url: &str, source: &str) -> bool {
        let mut m = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if m.contains_key(url) {
            return false;
        }
        m.insert(
            url.to_owned(),
            Live {
                url: url.to_owned(),
                source: source.to_owned(),
                ..Default::default()
            },
        );
        true
    }

    /// The live state of every agent, by URL.
    pub fn live_agents(&self) -> Vec<Live> {
        let m = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        m.values().cloned().collect()
    }

    /// A blocking index call, off the async threads.
    pub async fn with_index<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Index) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        self.index.blocking(f).await
    }
}

/// How the console reaches an agent's URL.
pub fn target(url: &str, cfg: &AgentsConfig) -> Result<Target, SyncError> {
    if let Some(path) = url.strip_prefix("unix://") {
        return Ok(Target::Unix(path.into()));
    }
    let token = match &cfg.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| {
                    SyncError::Call(format!("reading agents.token_file {}: {e}", p.display()))
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let tls = if url.starts_with("https://") {
        ClientTls {
            ca_file: cfg.ca_file.clone(),
            cert_file: cfg.cert_file.clone(),
            key_file: cfg.key_file.clone(),
            server_name: cfg.server_name.clone(),
        }
    } else {
        ClientTls::default()
    };
    Ok(Target::Tcp {
        url: url.to_owned(),
        token,
        tls,
    })
}

async fn timed<T>(
    what: &'static str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, SyncError>>,
) -> Result<T, SyncError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(SyncError::Timeout {
            what,
            secs: limit.as_secs(),
        }),
    }
}

/// Copies from the agent at `url` until `stop`; reconnects with backoff.
/// Once `departed` (it left the DNS answer: its pod is terminating, its
/// node going away), it goes on copying while it answers, and ends after
/// [`DEPARTED_TRIES`] failed sessions in a row.
pub async fn run_agent(
    con: Arc<Console>,
    url: String,
    mut stop: watch::Receiver<bool>,
    departed: Arc<std::sync::atomic::AtomicBool>,
) {
    let cfg = con.cfg.agents.clone();
    let mut backoff = cfg.retry_min;
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        let r = tokio::select! {
            r = session(&con, &url, stop.clone(), true) => r,
            _ = stop.changed() => return,
        };
        match r {
            Ok(()) => {
                if *stop.borrow() {
                    return;
                }
                // The agent ended the stream (it is shutting down).
                con.set_live(&url, |l| {
                    l.reachable = false;
                    l.error = "the agent closed the connection".into();
                });
            }
            Err(e) => {
                failures += 1;
                if departed.load(std::sync::atomic::Ordering::Relaxed) && failures >= DEPARTED_TRIES
                {
                    tracing::info!(agent = %url, error = %e, "agent gone from the DNS answer and unreachable: no longer synced");
                    con.set_live(&url, |l| {
                        l.reachable = false;
                        l.error = format!("no longer in the DNS answer and unreachable: {e}");
                    });
                    return;
                }
                let text = e.to_string();
                tracing::warn!(agent = %url, error = %text, retry_in = ?backoff, "agent sync failed");
                con.set_live(&url, |l| {
                    l.reachable = false;
                    l.error = text;
                });
            }
        }
        // A session that ran a while resets the backoff.
        if started.elapsed() > cfg.retry_max {
            backoff = cfg.retry_min;
            failures = 0;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = backoff.saturating_mul(2).min(cfg.retry_max);
    }
}

/// Copies everything the agent at `url` holds now, once (an import).
pub async fn sync_once(con: &Arc<Console>, url: &str, source: &str) -> Result<(), SyncError> {
    con.register(url, source);
    let (_tx, rx) = watch::channel(false);
    session(con, url, rx, false).await
}

/// Failed sessions in a row after which an agent that left the DNS
/// answer is no longer tried.
pub const DEPARTED_TRIES: u32 = 3;

/// Audits the agent's chain of seals (see [`verify::audit_chain`]).
async fn audit(con: &Console, c: &mut Client, agent: &AgentRef) -> Result<(), SyncError> {
    verify::audit_chain(
        &con.index,
        con.cfg.agents.call_timeout,
        c,
        &agent.instance,
        &agent.node,
        &agent.key,
    )
    .await
}

/// One connection: identity, catch-up, then (`follow`) the live stream.
async fn session(
    con: &Arc<Console>,
    url: &str,
    mut stop: watch::Receiver<bool>,
    follow: bool,
) -> Result<(), SyncError> {
    let limit = con.cfg.agents.call_timeout;
    let tgt = target(url, &con.cfg.agents)?;
    let mut c = timed("connecting", limit, async {
        Ok(client::connect(&tgt).await?)
    })
    .await?;
    let id = timed("GetIdentity", limit, async {
        c.get_identity(pb::GetIdentityRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| call_err("GetIdentity", s))
    })
    .await?;
    if id.instance_id.is_empty() {
        return Err(SyncError::Call("the agent has no instance id".into()));
    }
    let _claim = Claim::take(con, &id.instance_id, url)?;
    let source = {
        let m = con.agents.lock().unwrap_or_else(|p| p.into_inner());
        m.get(url).map(|l| l.source.clone()).unwrap_or_default()
    };
    let (inst, u, node, version) = (
        id.instance_id.clone(),
        url.to_owned(),
        id.node.clone(),
        id.version.clone(),
    );
    con.with_index(move |ix| {
        ix.update_agent(&inst, |a| {
            a.url = u;
            a.node = node;
            a.version = version;
            a.source = source;
        })
    })
    .await?;
    con.set_live(url, |l| {
        l.instance_id = id.instance_id.clone();
        l.node = id.node.clone();
        l.version = id.version.clone();
        l.reachable = true;
        l.error.clear();
        l.last_contact = Some(SystemTime::now());
    });
    // The key its seals are checked with: pinned at first contact.
    let key = verify::pin_key(&con.index, &id.instance_id, &id.node, &id.signing_key).await?;
    let agent = AgentRef {
        url: url.to_owned(),
        instance: id.instance_id.clone(),
        node: id.node.clone(),
        key,
    };
    stats(con, &mut c, &agent).await?;
    catch_up(con, &mut c, &agent).await?;
    audit(con, &mut c, &agent).await?;
    if !follow {
        return Ok(());
    }
    // Live: incidents after what is held, and their updates.
    let after = agent.synced(con).await?;
    let mut stream = timed("StreamIncidents", limit, async {
        c.stream_incidents(pb::StreamIncidentsRequest {
            after_serial: after,
            audit_limit: 1000,
            // Changes of the incidents held that are still open.
            all_updates: true,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| call_err("StreamIncidents", s))
    })
    .await?;
    // Every 5 s: snapshots that were still filling; every 30 s, the
    // agent's counters (which also tells a silently vanished node: the
    // call times out and the session ends).
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(inc) = msg.map_err(|s| call_err("StreamIncidents", s))? else {
                    return Ok(());
                };
                con.set_live(url, |l| l.last_contact = Some(SystemTime::now()));
                let _slot = con.slots.acquire().await;
                handle(con, &mut c, &agent, inc).await?;
                mark_synced(con, &agent).await?;
            }
            _ = tick.tick() => {
                ticks += 1;
                let _slot = con.slots.acquire().await;
                if ticks.is_multiple_of(6) {
                    stats(con, &mut c, &agent).await?;
                }
                // Every 5 minutes: the agent's chain of seals again.
                if ticks.is_multiple_of(60) {
                    audit(con, &mut c, &agent).await?;
                }
                retry_pending(con, &mut c, &agent).await?;
                mark_synced(con, &agent).await?;
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// This session's hold on its agent's instance id (released when the
/// session ends).
struct Claim {
    con: Arc<Console>,
    instance: String,
    url: String,
}

impl Claim {
    fn take(con: &Arc<Console>, instance: &str, url: &str) -> Result<Claim, SyncError> {
        let mut m = con.claims.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(instance) {
            Some(other) if other != url => {
                return Err(SyncError::Call(format!(
                    "instance id {instance} is already copied from {other}: a cloned \
                     data directory, or the same agent at two addresses; not merged"
                )))
            }
            _ => {}
        }
        m.insert(instance.to_owned(), url.to_owned());
        Ok(Claim {
            con: con.clone(),
            instance: instance.to_owned(),
            url: url.to_owned(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut m = self.con.claims.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(&self.instance) == Some(&self.url) {
            m.remove(&self.instance);
        }
    }
}

struct AgentRef {
    url: String,
    instance: String,
    node: String,
    /// Its signing key as the console pinned it.
    key: Vec<u8>,
}

impl AgentRef {
    async fn synced(&self, con: &Console) -> Result<u64, SyncError> {
        let inst = self.instance.clone();
        Ok(con
            .with_index(move |ix| ix.agent(&inst))
            .await?
            .map_or(0, |a| a.synced_serial))
    }
}

/// Kernel drops and the agent's own state, for ListAgents.
async fn stats(con: &Console, c: &mut Client, agent: &AgentRef) -> Result<(), SyncError> {
    let limit = con.cfg.agents.call_timeout;
    let st = timed("GetStats", limit, async {
        c.get_stats(pb::GetStatsRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| call_err("GetStats", s))
    })
    .await?;
    let drops: u64 = st.kinds.iter().map(|k| k.kernel_drops).sum();
    // The runtimes in use: the first page of containers names them.
    let containers = timed("ListContainers", limit, async {
        c.list_containers(pb::ListContainersRequest {
            cursor: String::new(),
            limit: 1000,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| call_err("ListContainers", s))
    })
    .await
    .unwrap_or_default();
    let mut runtimes: Vec<String> = containers
        .containers
        .iter()
        .filter_map(|c| c.info.as_ref())
        .map(|i| i.runtime.clone())
        .filter(|r| !r.is_empty())
        .collect();
    runtimes.sort();
    runtimes.dedup();
    con.set_live(&agent.url, |l| {
        l.kernel_drops = drops;
        l.runtimes = runtimes;
        l.last_contact = Some(SystemTime::now());
    });
    Ok(())
}

/// A page of the agent's incidents after `after`.
async fn list_page(
    c: &mut Client,
    after: u64,
    limit: Duration,
) -> Result<pb::ListIncidentsResponse, SyncError> {
    timed("ListIncidents", limit, async {
        c.list_incidents(pb::ListIncidentsRequest {
            after_serial: after,
            limit: 100,
            audit_limit: 1000,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| call_err("ListIncidents", s))
    })
    .await
}

/// Incidents before the agent's position read again at each connection
/// (for the changes made while the console was away).
const REFRESH: u64 = 256;

/// Every incident after the agent's position, in order, each with its
/// snapshot copied first; then the snapshots still pending.
async fn catch_up(con: &Arc<Console>, c: &mut Client, agent: &AgentRef) -> Result<(), SyncError> {
    let limit = con.cfg.agents.call_timeout;
    // Incidents held may have changed while the console was away (more
    // audits, accounts, a later snapshot): the most recent ones are read
    // again and what changed is applied.
    let synced = agent.synced(con).await?;
    let mut after = synced.saturating_sub(REFRESH);
    while after < synced {
        let page = list_page(c, after, limit).await?;
        if page.incidents.is_empty() {
            break;
        }
        after = page.last_serial;
        let _slot = con.slots.acquire().await;
        for inc in page.incidents.into_iter().filter(|i| i.serial <= synced) {
            handle(con, c, agent, inc).await?;
        }
    }
    loop {
        let after = agent.synced(con).await?;
        let page = list_page(c, after, limit).await?;
        if page.incidents.is_empty() {
            break;
        }
        let _slot = con.slots.acquire().await;
        for inc in page.incidents {
            handle(con, c, agent, inc).await?;
        }
    }
    let _slot = con.slots.acquire().await;
    retry_pending(con, c, agent).await?;
    mark_synced(con, agent).await
}

/// Caught up: the time, for ListAgents.
/// The time is kept in memory; in the index (a write, an fsync) at most
/// once a minute per agent, so that a thousand idle agents cost no disk.
async fn mark_synced(con: &Console, agent: &AgentRef) -> Result<(), SyncError> {
    let now = SystemTime::now();
    let mut persist = false;
    con.set_live(&agent.url, |l| {
        l.last_sync = Some(now);
        if l.persisted_sync
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            l.persisted_sync = Some(std::time::Instant::now());
            persist = true;
        }
    });
    if persist {
        let inst = agent.instance.clone();
        let ts = unix_timestamp(now);
        con.with_index(move |ix| ix.update_agent(&inst, |a| a.last_sync = Some(ts)))
            .await?;
    }
    Ok(())
}

pub fn unix_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// One incident message from the agent: a new incident (its snapshot
/// first), or an update of one held.
async fn handle(
    con: &Arc<Console>,
    c: &mut Client,
    agent: &AgentRef,
    mut inc: pb::Incident,
) -> Result<(), SyncError> {
    con.set_live(&agent.url, |l| {
        l.agent_last_serial = l.agent_last_serial.max(inc.serial)
    });
    let (inst, s) = (agent.instance.clone(), inc.serial);
    let held = con.with_index(move |ix| ix.fleet_serial(&inst, s)).await?;
    if let Some(fleet) = held {
        return update(con, c, agent, fleet, inc).await;
    }
    if inc.update {
        // An update of an incident not held (its record aged out here):
        // nothing to apply it to.
        return Ok(());
    }
    let snap = match inc.snapshot_id {
        0 => SnapshotRef::None,
        id => copy_snapshot(con, c, agent, id).await?.held_as(id),
    };
    // Every kept audit, not only the first page.
    if inc.next_audit_offset != 0 {
        let from = inc.audits_offset + inc.audits.len() as u64;
        let rest = fetch_audits(con, c, inc.serial, from).await?;
        inc.audits.extend(rest);
        inc.audits.truncate(MAX_HELD_AUDITS);
        inc.next_audit_offset = 0;
    }
    inc.node = agent.node.clone();
    inc.agent_instance = agent.instance.clone();
    let (fleet, new) = con
        .with_index(move |ix| ix.ingest_incident(inc, snap))
        .await?;
    if new {
        if let Some(rec) = con.with_index(move |ix| ix.incident(fleet)).await? {
            tracing::info!(fleet, agent_serial = rec.agent_serial, node = %agent.node, r#type = %rec.r#type, "incident ingested");
            let _ = con.live.send(Arc::new(rec));
        }
    }
    Ok(())
}

/// The most audits an incident record holds here: an agent's own cap
/// (`analysis.max_audits_per_incident`) is at most this, so a record
/// never outgrows it whatever an agent sends.
const MAX_HELD_AUDITS: usize = 100_000;

/// The agent's kept audits of incident `serial` from `from` on, page
/// after page.
async fn fetch_audits(
    con: &Console,
    c: &mut Client,
    serial: u64,
    mut from: u64,
) -> Result<Vec<pb::Audit>, SyncError> {
    let limit = con.cfg.agents.call_timeout;
    let mut out = Vec::new();
    loop {
        let page = timed("GetIncident", limit, async {
            c.get_incident(pb::GetIncidentRequest {
                serial,
                audit_limit: 0,
                audit_offset: from,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| call_err("GetIncident", s))
        })
        .await?;
        let n = page.audits.len() as u64;
        out.extend(page.audits);
        // An agent keeps at most MAX_HELD_AUDITS per incident; one that
        // pages on beyond that, or does not move forward, is not followed.
        if page.next_audit_offset <= from || out.len() >= MAX_HELD_AUDITS {
            out.truncate(MAX_HELD_AUDITS);
            return Ok(out);
        }
        if page.next_audit_offset == 0 || n == 0 {
            return Ok(out);
        }
        from = page.next_audit_offset;
    }
}

/// Applies an agent's update (StreamIncidents `update`, or a record read
/// again) to the held incident.
async fn update(
    con: &Arc<Console>,
    c: &mut Client,
    agent: &AgentRef,
    fleet: u64,
    mut inc: pb::Incident,
) -> Result<(), SyncError> {
    let before = con.with_index(move |ix| ix.incident(fleet)).await?;
    let Some(before) = before else {
        return Ok(());
    };
    // Audits the console does not hold between its last and this page's
    // first (a page cut short, or a record read again): read from the
    // agent, so that the record holds every kept audit in order.
    let held = before.audits.len() as u64;
    let gap = if inc.update {
        inc.audits_offset > held
    } else {
        inc.audits_kept > held && inc.audits.len() as u64 <= held
    };
    if gap {
        inc.audits = fetch_audits(con, c, inc.serial, held).await?;
        inc.audits_offset = held;
        inc.update = true;
    }
    // Its snapshot, when it has one now that is not held.
    let mut snap = None;
    if inc.snapshot_id != 0 && before.snapshot_id == 0 {
        let id = inc.snapshot_id;
        snap = Some(copy_snapshot(con, c, agent, id).await?.held_as(id));
    }
    let changed = !inc.audits.is_empty() && inc.update
        || inc.audits.len() > before.audits.len()
        || inc.audit_count != before.audit_count
        || inc.last != before.last
        || inc.severity != before.severity
        || inc.account_count != before.account_count
        || snap.is_some();
    if !changed {
        return Ok(());
    }
    let rec = con
        .with_index(move |ix| {
            let r = ix.update_incident(fleet, |h| merge(h, &inc))?;
            match snap {
                Some(s) => ix.set_incident_snapshot(fleet, s),
                None => Ok(r),
            }
        })
        .await?;
    if let Some(rec) = rec {
        let _ = con.live.send(Arc::new(pb::Incident {
            update: true,
            ..rec
        }));
    }
    Ok(())
}

/// The held record `h` brought up to date with `inc` (a whole record, or
/// a stream update carrying the audits added since `audits_offset`).
fn merge(h: &mut pb::Incident, inc: &pb::Incident) {
    if inc.update {
        // Audits from `audits_offset` on; those already held are skipped.
        let held = h.audits.len() as u64;
        let skip = held.saturating_sub(inc.audits_offset) as usize;
        let room = MAX_HELD_AUDITS.saturating_sub(h.audits.len());
        h.audits
            .extend(inc.audits.iter().skip(skip).take(room).cloned());
    } else if inc.audits.len() > h.audits.len() {
        h.audits = inc.audits.iter().take(MAX_HELD_AUDITS).cloned().collect();
    }
    h.audit_count = h.audit_count.max(inc.audit_count);
    h.audits_kept = h
        .audits_kept
        .max(inc.audits_kept)
        .max(h.audits.len() as u64);
    if inc.last.is_some() {
        h.last = inc.last;
    }
    h.severity = h.severity.max(inc.severity);
    if !inc.summary.is_empty() {
        h.summary = inc.summary.clone();
    }
    if inc.account.is_some() {
        h.account = inc.account.clone();
    }
    if !inc.accounts.is_empty() {
        h.accounts = inc.accounts.clone();
    }
    h.account_count = h.account_count.max(inc.account_count);
}

/// Snapshots that were not committed when their incident was ingested.
async fn retry_pending(
    con: &Arc<Console>,
    c: &mut Client,
    agent: &AgentRef,
) -> Result<(), SyncError> {
    let inst = agent.instance.clone();
    let pending = con.with_index(move |ix| ix.pending(&inst)).await?;
    if pending.is_empty() {
        return Ok(());
    }
    for (fleet, _agent_serial, agent_id) in pending {
        let s = match copy_snapshot(con, c, agent, agent_id).await? {
            Copied::NotYet => continue,
            copied => copied.held_as(agent_id),
        };
        let rec = con
            .with_index(move |ix| ix.set_incident_snapshot(fleet, s))
            .await?;
        if let Some(rec) = rec {
            let _ = con.live.send(Arc::new(pb::Incident {
                update: true,
                ..rec
            }));
        }
    }
    Ok(())
}

impl Copied {
    /// Where the incident's snapshot (the agent's `agent_id`) is now.
    fn held_as(self, agent_id: u64) -> SnapshotRef {
        match self {
            Copied::Held(cid) => SnapshotRef::Held(cid),
            Copied::NotYet => SnapshotRef::Pending(agent_id),
            Copied::Gone => SnapshotRef::None,
        }
    }
}

/// The largest snapshot copied: far above what an agent freezes (its
/// open snapshots hold 32 MiB by default), so that a hostile or broken
/// agent cannot make the console hold more.
const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

enum Copied {
    /// Held under this console id (copied now or before).
    Held(u64),
    /// Still open or not committed on the agent: try later.
    NotYet,
    /// The agent does not have it (retention evicted it first).
    Gone,
}

/// Copies the agent's snapshot `agent_id` unless held: its stored
/// encoding, hashed, into the evidence store, then into the index.
async fn copy_snapshot(
    con: &Arc<Console>,
    c: &mut Client,
    agent: &AgentRef,
    agent_id: u64,
) -> Result<Copied, SyncError> {
    let inst = agent.instance.clone();
    if let Some(id) = con
        .with_index(move |ix| ix.snapshot_key(&inst, agent_id))
        .await?
    {
        return Ok(Copied::Held(id));
    }
    // The call's timeout applies to each message: a large snapshot may
    // take longer than one timeout as long as it keeps coming.
    let limit = con.cfg.agents.call_timeout;
    let data = async {
        let mut s = timed("ExportSnapshot", limit, async {
            Ok(c.export_snapshot(pb::ExportSnapshotRequest {
                id: agent_id,
                format: "protobuf".into(),
            })
            .await?
            .into_inner())
        })
        .await?;
        let mut data = Vec::new();
        while let Some(chunk) =
            timed("ExportSnapshot", limit, async { Ok(s.message().await?) }).await?
        {
            if data.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
                return Err(SyncError::BadSnapshot(format!(
                    "snapshot {agent_id} is larger than {} MiB: not copied",
                    MAX_SNAPSHOT_BYTES >> 20
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        Ok(data)
    }
    .await;
    let data = match data {
        Ok(d) => d,
        Err(SyncError::Status(s)) if s.code() == Code::FailedPrecondition => {
            return Ok(Copied::NotYet)
        }
        Err(SyncError::Status(s)) if s.code() == Code::NotFound => {
            tracing::warn!(agent = %agent.url, agent_id, "the agent no longer has the snapshot of an incident");
            return Ok(Copied::Gone);
        }
        // The connection or the agent's load: the session is tried again.
        Err(SyncError::Status(s)) if transient(s.code()) => {
            return Err(call_err("ExportSnapshot", s))
        }
        // The agent cannot give it (its store is corrupt, …): the incident
        // is kept without it rather than holding up everything after it.
        Err(SyncError::Status(s)) => {
            tracing::error!(agent = %agent.url, agent_id, code = ?s.code(), error = %s.message(), "snapshot not copied");
            if s.code() == Code::DataLoss {
                verify::note_problems(
                    &con.index,
                    &agent.instance,
                    &agent.node,
                    vec![format!(
                        "snapshot {agent_id}: its stored data cannot be read on the node ({}): \
                         altered or damaged",
                        s.message()
                    )],
                )
                .await?;
            }
            return Ok(Copied::Gone);
        }
        Err(SyncError::BadSnapshot(why)) => {
            // Never copyable: the incident is kept without it rather than
            // holding up everything after it.
            tracing::error!(agent = %agent.url, agent_id, %why, "snapshot not copied");
            return Ok(Copied::Gone);
        }
        Err(e) => return Err(e),
    };
    let seal = verify::fetch_seal(c, agent_id, limit).await?;
    match copy_encoded(con, agent, agent_id, Bytes::from(data), seal).await {
        Err(SyncError::BadSnapshot(why)) => {
            tracing::error!(agent = %agent.url, agent_id, %why, "snapshot not copied");
            Ok(Copied::Gone)
        }
        r => r,
    }
}

/// A status that says nothing about the snapshot itself: try again.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unauthenticated
            | Code::PermissionDenied
    )
}

impl From<tonic::Status> for SyncError {
    fn from(s: tonic::Status) -> Self {
        SyncError::Status(s)
    }
}

/// Stores an encoded snapshot of the agent (after checking it decodes).
async fn copy_encoded(
    con: &Arc<Console>,
    agent: &AgentRef,
    agent_id: u64,
    data: Bytes,
    seal: Option<pb::SnapshotSeal>,
) -> Result<Copied, SyncError> {
    let snap =
        pb::Snapshot::decode(data.clone()).map_err(|e| SyncError::BadSnapshot(e.to_string()))?;
    let mut info = snap.info.unwrap_or_default();
    // Checked against the agent's seal before it is stored (and stored
    // whatever the check says: it is evidence either way).
    let data_sha = crate::evidence::sha256_hex(&data);
    let prev_copy = match seal.as_ref().map(|s| s.prev_id).filter(|&p| p != 0) {
        Some(prev) => {
            let inst = agent.instance.clone();
            con.with_index(move |ix| {
                let Some(cid) = ix.snapshot_key(&inst, prev)? else {
                    return Ok(None);
                };
                Ok(ix.snapshot(cid)?.map(|i| i.sha256))
            })
            .await?
        }
        None => None,
    };
    let verification = verify::check_copy(
        &agent.instance,
        &agent.key,
        agent_id,
        &data_sha,
        seal.as_ref(),
        prev_copy.as_deref(),
    );
    info.seal = seal;
    info.verification = verification.clone();
    let verified = verification == "verified";
    let unsealed = verification.starts_with(verify::UNSEALED);
    // One store step at a time: an evicted object is deleted only while no
    // copy of the same content is between its put and its index entry.
    let _store = con.store_lock.lock().await;
    // `bytes`: what it takes in the store (retention counts that).
    let (sha, bytes) = con.evidence.put(data).await?;
    info.sha256 = sha;
    info.bytes = bytes;
    info.node = agent.node.clone();
    info.agent_instance = agent.instance.clone();
    info.agent_snapshot_id = agent_id;
    // The incidents it is evidence of, by fleet serial where held.
    let agent_serials = std::mem::take(&mut info.incidents);
    let inst = agent.instance.clone();
    let stored = con
        .with_index(move |ix| {
            for s in &agent_serials {
                if let Some(f) = ix.fleet_serial(&inst, *s)? {
                    info.incidents.push(f);
                }
            }
            info.incident = info.incidents.first().copied().unwrap_or(0);
            let stored = ix.add_snapshot(info)?;
            if stored.new {
                let ok = verified;
                ix.update_agent(&inst, |a| {
                    a.snapshots += 1;
                    if ok {
                        a.snapshots_verified += 1;
                    } else if !unsealed {
                        a.snapshots_unverified += 1;
                    }
                })?;
            }
            Ok(stored)
        })
        .await?;
    if stored.new && !verified && !unsealed {
        verify::note_problems(
            &con.index,
            &agent.instance,
            &agent.node,
            vec![format!("snapshot {agent_id}: {verification}")],
        )
        .await?;
    }
    for sha in &stored.unreferenced {
        let s = sha.clone();
        if con.with_index(move |ix| ix.object_referenced(&s)).await? {
            continue;
        }
        if let Err(e) = con.evidence.delete(sha).await {
            tracing::warn!(%sha, error = %e, "evicted snapshot's object not deleted (removed at next start)");
        }
    }
    if !stored.evicted.is_empty() {
        tracing::info!(evicted = ?stored.evicted, "snapshots evicted by retention");
    }
    Ok(Copied::Held(stored.id))
}
