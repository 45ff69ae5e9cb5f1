//! The recorder holds up when it matters: four processes flood the host
//! with create+write+unlink for 30 s while markers happen (an exec every
//! 100 ms, a listen every 500 ms, account changes), with a host snapshot
//! and an incident frozen early in the flood. The real agent binary, with
//! a small memory budget:
//! - its RSS stays under its idle RSS + budget + a fixed allowance;
//! - no pipeline step (ring reading, commits, housekeeping) lasts > 100 ms;
//! - `GetStats` answers in < 100 ms at the 99th percentile;
//! - every marker is in both snapshots and in a filtered live stream;
//! - each snapshot's gaps account, per kind, for every flood event it
//!   does not hold.
//!
//! Alone in its test binary, so no other test's events share the rings.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fdr_cli::client;
use fdr_proto::v1 as pb;
use fdr_tests::{unique, AgentProcess, TempDir};

const FLOOD: Duration = Duration::from_secs(30);
const WRITERS: usize = 4;
const BUDGET: u64 = 64 << 20;
/// What the agent may use beyond its idle RSS and its budget: queues of
/// live subscribers and of the transport, allocator slack, conversion of a
/// snapshot being committed.
const ALLOWANCE: u64 = 96 << 20;

/// One writer: create+write+close+unlink in a loop for `secs`; prints
/// how many rounds it made.
const WRITER: &str = r#"
import os, sys, time
d, secs = sys.argv[1], float(sys.argv[2])
p = os.path.join(d, "f")
end = time.monotonic() + secs
n = 0
while True:
    for _ in range(64):
        fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(fd, b"x")
        os.close(fd)
        os.unlink(p)
    n += 64
    if time.monotonic() >= end:
        break
print(n)
"#;

/// Runs `f` on a thread and runtime of its own (the test's runtime blocks
/// on processes, which must not delay what `f` measures).
fn on_own_thread<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    })
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A copy of /etc to change accounts in (bind-mounted in a private mount
/// namespace).
fn copy_etc(dir: &Path) -> PathBuf {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    for f in ["passwd", "group", "shadow", "gshadow", "login.defs"] {
        let _ = std::fs::copy(Path::new("/etc").join(f), etc.join(f));
    }
    etc
}

fn useradd_in_private_etc(etc: &Path, user: &str) {
    let inner = format!(
        "mount --bind {} /etc && useradd -M -s /bin/false {user}",
        etc.display()
    );
    let st = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &inner])
        .status()
        .expect("run useradd");
    assert!(st.success(), "useradd in a private /etc: {st}");
}

fn argv_last(e: &pb::Event) -> Option<&str> {
    e.process
        .as_ref()
        .and_then(|p| p.argv.last())
        .map(String::as_str)
}

fn listen_port(e: &pb::Event) -> Option<u32> {
    match &e.detail {
        Some(pb::event::Detail::Net(n)) if e.kind == pb::EventKind::NetListen as i32 => {
            Some(n.local_port)
        }
        _ => None,
    }
}

/// The command of an account change (the `useradd` line, with the
/// account it made).
fn account_command(e: &pb::Event) -> Option<String> {
    match &e.detail {
        Some(pb::event::Detail::Account(a)) => Some(a.command.join(" ")),
        _ => None,
    }
}

/// What the markers left in a list of events.
#[derive(Default, Debug)]
struct Seen {
    execs: HashSet<String>,
    ports: HashSet<u32>,
    /// Commands of account changes.
    accounts: Vec<String>,
}

impl Seen {
    /// Whether an account change made `user`.
    fn made(&self, user: &str) -> bool {
        self.accounts
            .iter()
            .any(|c| c.split_whitespace().any(|w| w == user))
    }

    fn add(&mut self, e: &pb::Event) {
        if e.kind == pb::EventKind::Exec as i32 {
            if let Some(a) = argv_last(e) {
                self.execs.insert(a.to_owned());
            }
        }
        if let Some(p) = listen_port(e) {
            self.ports.insert(p);
        }
        if let Some(c) = account_command(e) {
            self.accounts.push(c);
        }
    }
}

struct Snapshot {
    info: pb::SnapshotInfo,
    events: Vec<pb::Event>,
    gaps: Vec<pb::Gap>,
}

async fn wait_committed(c: &mut client::Client, id: u64, within: Duration) -> Snapshot {
    // Listed closed once its window closed; readable once committed.
    let deadline = Instant::now() + within;
    let mut out = Snapshot {
        info: pb::SnapshotInfo::default(),
        events: Vec::new(),
        gaps: Vec::new(),
    };
    let mut cursor = String::new();
    let mut first = true;
    loop {
        let mut s = match c
            .get_snapshot(pb::GetSnapshotRequest {
                id,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(e) if first && e.code() == tonic::Code::FailedPrecondition => {
                assert!(Instant::now() < deadline, "snapshot {id} never committed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => panic!("GetSnapshot {id}: {e}"),
        };
        cursor.clear();
        while let Some(m) = s.message().await.expect("snapshot stream") {
            match m.item {
                Some(pb::get_snapshot_response::Item::Info(i)) => out.info = i,
                Some(pb::get_snapshot_response::Item::Event(e)) => out.events.push(e),
                Some(pb::get_snapshot_response::Item::Gap(g)) if first => out.gaps.push(g),
                Some(pb::get_snapshot_response::Item::NextCursor(n)) => cursor = n,
                _ => {}
            }
        }
        first = false;
        if cursor.is_empty() {
            return out;
        }
    }
}

/// For each flood kind: the writers' events kept plus the gaps' counts of
/// that kind must reach the events the writers caused in the window.
fn assert_gaps_account(name: &str, s: &Snapshot, writers: &HashSet<u32>, caused: u64) {
    for kind in [pb::EventKind::FileWrite, pb::EventKind::FileUnlink] {
        let kept = s
            .events
            .iter()
            .filter(|e| e.kind == kind as i32)
            .filter(|e| e.process.as_ref().is_some_and(|p| writers.contains(&p.pid)))
            .count() as u64;
        let lost: u64 = s
            .gaps
            .iter()
            .filter(|g| g.kind == kind as i32)
            .map(|g| g.lost)
            .sum();
        eprintln!("{name}: {kind:?}: {kept} kept + {lost} in gaps, {caused} caused");
        assert!(
            kept + lost >= caused,
            "{name}: {} {kind:?} events neither kept nor in a gap (kept {kept}, gaps {lost}, \
             gaps {:?})",
            caused - kept - lost,
            s.gaps
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_holds_up_under_a_flood() {
    let dir = TempDir::new("holds-up");
    let data = dir.path().join("data");
    let config = dir.path().join("fdr.toml");
    std::fs::write(
        &config,
        format!(
            "[recorder]\n\
             data_dir = {data:?}\n\
             scope_quota_bytes = {quota}\n\
             budget_bytes = {BUDGET}\n\
             snapshot_max_bytes = {snap}\n\
             snapshots_open_bytes = {open}\n\
             snapshot_after = \"36s\"\n",
            quota = 8 << 20,
            snap = 12 << 20,
            open = 32 << 20,
        ),
    )
    .unwrap();
    let socket = dir.path().join("fdr.sock");
    let agent = AgentProcess::start(&socket, &["--config".as_ref(), config.as_os_str()]);
    let agent_pid = agent.0.id();
    let mut c = client::connect_unix(&socket).await.expect("connect");

    // The filtered live stream of the markers' kinds, on a thread and
    // runtime of its own (the test's runtime blocks on processes).
    let followed = Arc::new(Mutex::new((Seen::default(), 0u64)));
    let (subscribed_tx, subscribed) = std::sync::mpsc::channel();
    let follow_task = {
        let (followed, socket) = (followed.clone(), socket.clone());
        on_own_thread(async move {
            {
                let mut c = client::connect_unix(&socket).await.expect("connect");
                let mut follower = c
                    .stream_events(pb::StreamEventsRequest {
                        kinds: vec![
                            pb::EventKind::Exec as i32,
                            pb::EventKind::NetListen as i32,
                            pb::EventKind::AccountChange as i32,
                        ],
                        follow: true,
                        ..Default::default()
                    })
                    .await
                    .expect("StreamEvents")
                    .into_inner();
                subscribed_tx.send(()).unwrap();
                while let Ok(Some(m)) = follower.message().await {
                    let mut f = followed.lock().unwrap();
                    match m.item {
                        Some(pb::stream_events_response::Item::Event(e)) => f.0.add(&e),
                        Some(pb::stream_events_response::Item::Lost(l)) => f.1 += l.count,
                        None => {}
                    }
                }
            }
        })
    };
    subscribed
        .recv_timeout(Duration::from_secs(30))
        .expect("subscribed");
    // Settle, then the idle RSS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_bytes(agent_pid).expect("agent RSS");

    // GetStats latency and RSS, sampled throughout.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rss_max = Arc::new(std::sync::atomic::AtomicU64::new(idle_rss));
    let rss_thread = {
        let (stop, rss_max) = (stop.clone(), rss_max.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(r) = rss_bytes(agent_pid) {
                    rss_max.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let begun = Instant::now();
    // On threads of their own: the test's runtime blocks on processes.
    let stats_task = {
        let (stop, socket) = (stop.clone(), socket.clone());
        on_own_thread(async move {
            {
                let mut c = client::connect_unix(&socket).await.expect("connect");
                let mut lat = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    let st = c
                        .get_stats(pb::GetStatsRequest {})
                        .await
                        .expect("GetStats")
                        .into_inner();
                    lat.push(t.elapsed());
                    if t.elapsed() > Duration::from_millis(500) {
                        eprintln!(
                            "slow GetStats: {:?} at t={:?}",
                            t.elapsed(),
                            t.duration_since(begun)
                        );
                    }
                    if lat.len() % 200 == 1 {
                        let seen: u64 = st.kinds.iter().map(|k| k.seen).sum();
                        let drops: u64 = st.kinds.iter().map(|k| k.kernel_drops).sum();
                        eprintln!(
                            "t={:?} rss={} MiB seen={seen} drops={drops} buffered={} B open \
                             snapshots={} B processes={} models/items={}/{} step max={} µs \
                             blocked max={} µs",
                            t.duration_since(begun),
                            rss_bytes(agent_pid).unwrap_or(0) >> 20,
                            st.buffers.as_ref().map_or(0, |b| b.bytes),
                            st.open_snapshot_bytes,
                            st.processes_tracked,
                            st.analysis.as_ref().map_or(0, |a| a.models),
                            st.analysis.as_ref().map_or(0, |a| a.items),
                            st.pipeline_max_step_us,
                            st.pipeline_max_blocked_us,
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                lat
            }
        })
    };

    // The flood.
    let flood_dir = TempDir::new("holds-up-flood");
    let writers: Vec<std::process::Child> = (0..WRITERS)
        .map(|i| {
            let d = flood_dir.path().join(format!("w{i}"));
            std::fs::create_dir_all(&d).unwrap();
            Command::new("python3")
                .args(["-c", WRITER])
                .arg(&d)
                .arg(FLOOD.as_secs().to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a writer")
        })
        .collect();
    let writer_pids: HashSet<u32> = writers.iter().map(|w| w.id()).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Early in the flood: a host snapshot, and an incident (a deny rule:
    // a miner's name) whose snapshot is frozen by the agent.
    let host_snap = c
        .create_snapshot(pb::CreateSnapshotRequest {
            scope: "host".into(),
            reason: "flood test".into(),
        })
        .await
        .expect("CreateSnapshot")
        .into_inner();
    let miner = flood_dir.path().join("xmrig");
    std::fs::copy("/bin/true", &miner).unwrap();
    assert!(Command::new(&miner).status().unwrap().success());

    // Markers for the flood's duration.
    let tag = unique("holds");
    let etc = copy_etc(dir.path());
    let mut execs = Vec::new();
    let mut ports = Vec::new();
    let mut users = Vec::new();
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < FLOOD - Duration::from_secs(2) {
        let marker = format!("{tag}-{i}");
        assert!(Command::new("/bin/true")
            .arg(&marker)
            .status()
            .unwrap()
            .success());
        execs.push(marker);
        if i.is_multiple_of(5) {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            ports.push(u32::from(l.local_addr().unwrap().port()));
        }
        if i % 70 == 35 && users.len() < 3 {
            let user = format!("fdrh{}{}", std::process::id() % 10_000, users.len());
            useradd_in_private_etc(&etc, &user);
            users.push(user);
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rounds = 0u64;
    for mut w in writers {
        let mut out = String::new();
        w.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert!(w.wait().unwrap().success(), "writer failed");
        rounds += out.trim().parse::<u64>().expect("writer's count");
    }
    eprintln!(
        "flood: {rounds} create+write+unlink rounds by {WRITERS} writers in {FLOOD:?} ({:.0}/s); \
         {} exec, {} listen, {} account markers",
        rounds as f64 / FLOOD.as_secs_f64(),
        execs.len(),
        ports.len(),
        users.len()
    );

    // The incident and both snapshots.
    let deadline = Instant::now() + Duration::from_secs(30);
    let incident = loop {
        let list = c
            .list_incidents(pb::ListIncidentsRequest {
                after_serial: 0,
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("ListIncidents")
            .into_inner();
        if let Some(i) = list
            .incidents
            .into_iter()
            .find(|i| i.r#type == "crypto-miner" && i.snapshot_id != 0)
        {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no crypto-miner incident with a snapshot"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Committed: both listed closed, nothing left to write.
    let within = Duration::from_secs(90);
    let deadline = Instant::now() + within;
    loop {
        let list = c
            .list_snapshots(pb::ListSnapshotsRequest::default())
            .await
            .expect("ListSnapshots")
            .into_inner();
        let closed = |id| list.snapshots.iter().any(|i| i.id == id && !i.open);
        let pending = c
            .get_stats(pb::GetStatsRequest {})
            .await
            .expect("GetStats")
            .into_inner()
            .storage
            .map_or(0, |s| s.pending_commits);
        if closed(host_snap.id) && closed(incident.snapshot_id) && pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "snapshots never committed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Capture, freezing and committing: the recorder's own memory.
    let capture_rss = rss_max.load(std::sync::atomic::Ordering::Relaxed);
    let host = wait_committed(&mut c, host_snap.id, within).await;
    let inc = wait_committed(&mut c, incident.snapshot_id, within).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rss_thread.join().unwrap();
    let mut lat = stats_task.join().unwrap();
    let stats = c
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();

    // Memory.
    let max_rss = rss_max.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "RSS: idle {} MiB, max {} MiB through the flood and the commits, {} MiB once both \
         snapshots were read back (budget {} MiB, allowance {} MiB)",
        idle_rss >> 20,
        capture_rss >> 20,
        max_rss >> 20,
        BUDGET >> 20,
        ALLOWANCE >> 20
    );
    // Stalls and GetStats latency.
    lat.sort();
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    let kernel_drops: u64 = stats.kinds.iter().map(|k| k.kernel_drops).sum();
    eprintln!(
        "longest pipeline step {} µs, longest blocked {} µs ({} blocked over 100 ms); GetStats p99 {:?} over {} calls, max {:?}; \
         kernel drops {kernel_drops}; buffers {:?}",
        stats.pipeline_max_step_us,
        stats.pipeline_max_blocked_us,
        stats.pipeline_slow_steps,
        p99,
        lat.len(),
        lat.last(),
        stats.buffers
    );
    assert!(
        capture_rss <= idle_rss + BUDGET + ALLOWANCE,
        "RSS {} MiB over idle {} + budget {} + allowance {} MiB",
        capture_rss >> 20,
        idle_rss >> 20,
        BUDGET >> 20,
        ALLOWANCE >> 20
    );
    assert!(
        stats.pipeline_max_blocked_us < 100_000,
        "a pipeline step was blocked for {} µs",
        stats.pipeline_max_blocked_us
    );
    assert!(p99 < Duration::from_millis(100), "GetStats p99 {p99:?}");

    // Every marker, in both snapshots (the incident's from its moment on)
    // and in the filtered stream.
    let inc_at = incident.first.as_ref().map_or(0, |t| t.seconds);
    for (name, s) in [("host snapshot", &host), ("incident snapshot", &inc)] {
        let mut seen = Seen::default();
        for e in &s.events {
            seen.add(e);
        }
        let missing: Vec<&String> = execs.iter().filter(|m| !seen.execs.contains(*m)).collect();
        if !missing.is_empty() {
            let execs_in: Vec<&pb::Event> = s
                .events
                .iter()
                .filter(|e| e.kind == pb::EventKind::Exec as i32)
                .collect();
            let sample: Vec<_> = execs_in
                .iter()
                .rev()
                .take(3)
                .map(|e| (e.seq, e.time, e.process.as_ref().map(|p| p.argv.clone())))
                .collect();
            for g in &s.gaps {
                eprintln!("{name}: gap {g:?}");
            }
            let q = c
                .query_events(pb::QueryEventsRequest {
                    scope: "host".into(),
                    kinds: vec![pb::EventKind::Exec as i32],
                    text: missing[0].clone(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().events);
            eprintln!(
                "{name}: the first missing marker as recorded: {:?}",
                q.map(|v| v
                    .iter()
                    .map(|e| (e.seq, e.time, e.scope.clone()))
                    .collect::<Vec<_>>())
            );
            eprintln!(
                "{name}: {} exec events, newest {sample:?}; window {:?} .. {:?}",
                execs_in.len(),
                s.info.window_start,
                s.info.window_end
            );
        }
        assert!(
            missing.is_empty(),
            "{name}: {} of {} exec markers missing: {:?}",
            missing.len(),
            execs.len(),
            &missing[..missing.len().min(5)]
        );
        let missing: Vec<&u32> = ports.iter().filter(|p| !seen.ports.contains(p)).collect();
        assert!(missing.is_empty(), "{name}: listens missing: {missing:?}");
        let missing: Vec<&String> = users.iter().filter(|u| !seen.made(u)).collect();
        assert!(
            missing.is_empty(),
            "{name}: account changes missing: {missing:?} (recorded: {:?})",
            seen.accounts
        );
        assert!(
            !s.info.open && s.info.window_start.is_some(),
            "{name}: committed with its window"
        );
        eprintln!(
            "{name}: {} events, {} gaps, completeness {:.3}, window from {:?} (incident at {inc_at})",
            s.events.len(),
            s.gaps.len(),
            s.info.completeness,
            s.info.window_start
        );
    }
    // The flood started before both freezes and ended within both
    // windows, so all of it falls in the host snapshot's window.
    assert_gaps_account("host snapshot", &host, &writer_pids, rounds);
    assert_gaps_account("incident snapshot", &inc, &writer_pids, rounds);
    let follow = followed.lock().unwrap();
    let missing: Vec<&String> = execs
        .iter()
        .filter(|m| !follow.0.execs.contains(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "filtered stream: {} exec markers missing (lost notices: {})",
        missing.len(),
        follow.1
    );
    assert!(
        ports.iter().all(|p| follow.0.ports.contains(p)),
        "filtered stream: listens missing"
    );
    assert!(
        users.iter().all(|u| follow.0.made(u)),
        "filtered stream: account changes missing"
    );
    assert_eq!(follow.1, 0, "the filtered stream lost nothing");
    drop(follow);
    // Per kind: the gaps name their kinds.
    let by_kind: HashMap<i32, u64> = host.gaps.iter().fold(HashMap::new(), |mut m, g| {
        *m.entry(g.kind).or_default() += g.lost;
        m
    });
    eprintln!("host snapshot gaps by kind: {by_kind:?}");
    drop(agent);
    let _ = follow_task.join();
}
